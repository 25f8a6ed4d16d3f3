#!/bin/sh
# Cost of the audit log on reads: N opens+reads+closes of one secret through
# a mount with audit = yes, against the same on a mount with audit = no, in
# the same run, interleaved in rounds so both see the same machine. Prints
# microseconds per read for each, the overall ratio, the median of the
# per-round ratios, the ratio of the fastest rounds (the least disturbed by
# other load), and the CPU time each daemon spent per read (the audit writer
# thread included). Then checks that every read was recorded and the chain verifies.
#
#   bench/audit_reads.sh [N]        (default 10000; needs root and ./vaultfs)
set -eu

N=${1:-10000}
ROUNDS=50
HERE=$(cd "$(dirname "$0")/.." && pwd)
BIN=${VAULTFS_BIN:-$HERE/vaultfs}
DIR=$(mktemp -d /tmp/vaultfs-bench-audit-XXXXXX)
PIDS=""

cleanup() {
	for m in "$DIR/on/mnt" "$DIR/off/mnt"; do
		mountpoint -q "$m" 2>/dev/null && fusermount3 -u "$m"
	done
	for p in $PIDS; do wait "$p" 2>/dev/null || true; done
	rm -rf "$DIR"
}
trap cleanup EXIT INT TERM

setup() {	# setup NAME yes|no
	d=$DIR/$1
	mkdir -p "$d/mnt"
	printf '[vault]\naudit = %s\naudit_syslog = no\n' "$2" > "$d/vaultfs.ini"
	chmod 600 "$d/vaultfs.ini"
	"$BIN" keygen --out "$d/key" >/dev/null
	"$BIN" init --db "$d/vault.db" --key-file "$d/key" 2>/dev/null
	printf 'sk-bench-0123456789abcdef' | "$BIN" set --config "$d/vaultfs.ini" \
		--db "$d/vault.db" --key-file "$d/key" app KEY 2>/dev/null
	"$BIN" mount -f --config "$d/vaultfs.ini" --db "$d/vault.db" --key-file "$d/key" \
		"$d/mnt" >"$d/log" 2>&1 &
	PIDS="$PIDS $!"
	i=0
	until mountpoint -q "$d/mnt"; do
		i=$((i + 1)); [ $i -lt 200 ] || { cat "$d/log"; exit 1; }
		sleep 0.05
	done
}

setup on yes
setup off no

set -- $PIDS
python3 - "$DIR/on/mnt/app/KEY" "$DIR/off/mnt/app/KEY" "$N" "$ROUNDS" "$1" "$2" <<'PY'
import os, sys, time
on, off, n, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
pid_on, pid_off = sys.argv[5], sys.argv[6]
per = n // rounds
tick = os.sysconf("SC_CLK_TCK")

def cpu(pid):
    """Seconds of CPU the daemon (all its threads) has used."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / tick

def reads(path, count):
    t = time.perf_counter()
    for _ in range(count):
        fd = os.open(path, os.O_RDONLY)
        os.read(fd, 4096)
        os.close(fd)
    return time.perf_counter() - t

reads(on, 100); reads(off, 100)          # warm up both
c_on, c_off = cpu(pid_on), cpu(pid_off)
t_on = t_off = 0.0
ratios = []
best_on = best_off = float("inf")
for r in range(rounds):                  # alternate which goes first
    if r % 2:
        a = reads(on, per); b = reads(off, per)
    else:
        b = reads(off, per); a = reads(on, per)
    t_on += a; t_off += b
    ratios.append(a / b)
    best_on = min(best_on, a); best_off = min(best_off, b)
ratios.sort()
done = per * rounds
time.sleep(0.2)                          # the last batch of entries is stored
c_on, c_off = cpu(pid_on) - c_on, cpu(pid_off) - c_off
print(f"{done} reads each, {rounds} interleaved rounds of {per}")
print(f"audit off: {t_off / done * 1e6:8.1f} us/read")
print(f"audit on:  {t_on / done * 1e6:8.1f} us/read")
print(f"ratio on/off: {t_on / t_off:.3f} overall, {ratios[len(ratios) // 2]:.3f} median "
      f"of rounds ({ratios[len(ratios) // 10]:.3f} to {ratios[-1 - len(ratios) // 10]:.3f}, "
      f"10th to 90th percentile)")
print(f"fastest round: off {best_off / per * 1e6:.1f} us/read, on {best_on / per * 1e6:.1f} "
      f"us/read, ratio {best_on / best_off:.3f} (the least disturbed by other load)")
print(f"daemon CPU: off {c_off / done * 1e6:.1f} us/read, on {c_on / done * 1e6:.1f} us/read, "
      f"ratio {c_on / c_off:.3f} (a busy machine skews wall time more than CPU time)")
PY

fusermount3 -u "$DIR/on/mnt"
fusermount3 -u "$DIR/off/mnt"
for p in $PIDS; do wait "$p"; done
PIDS=""
d=$DIR/on
reads=$("$BIN" audit --config "$d/vaultfs.ini" --db "$d/vault.db" --key-file "$d/key" \
	--key KEY --json | grep -c '"op":"read"')
echo "audit entries for reads: $reads (expected $((N / ROUNDS * ROUNDS + 100)))"
"$BIN" audit --config "$d/vaultfs.ini" --db "$d/vault.db" --key-file "$d/key" --verify
