#!/bin/sh
# Cost of the audit log on reads: N opens+reads+closes of one secret through
# a mount with audit = yes, against the same on a mount with audit = no, in
# the same run, interleaved in rounds so both see the same machine. Prints
# microseconds per read for each and the ratio. Then checks that every read
# was recorded and the chain verifies.
#
#   bench/audit_reads.sh [N]        (default 10000; needs root and ./vaultfs)
set -eu

N=${1:-10000}
ROUNDS=10
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

python3 - "$DIR/on/mnt/app/KEY" "$DIR/off/mnt/app/KEY" "$N" "$ROUNDS" <<'PY'
import os, sys, time
on, off, n, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
per = n // rounds

def reads(path, count):
    t = time.perf_counter()
    for _ in range(count):
        fd = os.open(path, os.O_RDONLY)
        os.read(fd, 4096)
        os.close(fd)
    return time.perf_counter() - t

reads(on, 100); reads(off, 100)          # warm up both
t_on = t_off = 0.0
for r in range(rounds):                  # alternate which goes first
    if r % 2:
        t_on += reads(on, per); t_off += reads(off, per)
    else:
        t_off += reads(off, per); t_on += reads(on, per)
done = per * rounds
print(f"{done} reads each, {rounds} interleaved rounds")
print(f"audit off: {t_off / done * 1e6:8.1f} us/read")
print(f"audit on:  {t_on / done * 1e6:8.1f} us/read")
print(f"ratio on/off: {t_on / t_off:.3f}")
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
