#!/usr/bin/python3
"""vaultfs benchmark: every figure next to a baseline measured in the same run.

    make bench          (as root: it mounts FUSE filesystems and a tmpfs)
    bench/run.py --vaultfs ./vaultfs --tools build/bench [--quick]

Baselines:
  - tmpfs: the same files in a tmpfs mounted for the run (the kernel alone);
  - minifs (bench/minifs.c): a minimal low-level FUSE filesystem, direct_io,
    the same bytes from memory, the same session loop and cache timeouts as
    vaultfs, no crypto, no database: the limit FUSE itself sets;
  - a temporary file written, fsync()ed and renamed on the disk that holds
    the vault, for durable writes: one of its writes next to each of
    vaultfs's (bench/vbench.c, paired), once the vault's WAL has grown to
    the length it keeps (the first writes, which grow it, have a row);
  - for the PostgreSQL store (part "pg"): the same vault in SQLite, and for
    coherence between two daemons, two daemons on one SQLite file. The
    server (tests/integration/pgserver.py) runs on the same disk, fsync on,
    unix socket: what PostgreSQL itself costs, without a network.

Runs of vaultfs and of its baseline alternate, each measurement is repeated,
and the table shows medians; "spread" is the range of the per-round ratios,
which says how noisy the machine was. The run fails (exit 1) if any read
returns wrong bytes or any operation fails; it never fails on speed.
"""
import argparse
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

VALUE = "sk-bench-0123456789abcdef0123456789abcde"
assert len(VALUE) == 40
SIZES = (1000, 10000, 100000)
INSTANCE = "bench"
PARTS = ("read", "render", "ls", "write", "flood", "cli", "mount", "memory", "lookup", "hooks", "pg")
FLOOD_THREADS = 48
NOBODY = 65534


class BenchError(Exception):
    pass


def key_name(i):
    return "K%06d" % i


def run(argv, **kw):
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)
    if r.returncode != 0:
        raise BenchError("%s failed (%d): %s" % (" ".join(argv), r.returncode,
                                                r.stderr.decode(errors="replace").strip()))
    return r.stdout.decode()


def timed(argv, stdin_data=None, env=None):
    """Wall time of one process, from spawn to exit; checks its exit status."""
    t0 = time.perf_counter()
    r = subprocess.run(argv, input=stdin_data, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, env=env)
    t = time.perf_counter() - t0
    if r.returncode != 0:
        raise BenchError("%s failed (%d): %s" % (" ".join(argv), r.returncode,
                                                r.stderr.decode(errors="replace").strip()))
    return t, r.stdout


def wait_for(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.005)
    return pred()


def cpu_ns(pids):
    """CPU time of all the threads of the processes, in nanoseconds."""
    total = 0
    for pid in pids:
        for tid in os.listdir("/proc/%d/task" % pid):
            try:
                with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                    total += int(f.read().split()[0])
            except FileNotFoundError:
                pass
    return total


def proc_status(pids):
    """VmRSS and VmLck of the processes together, in KiB."""
    out = {"VmRSS": 0, "VmLck": 0}
    for pid in pids:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in out:
                    out[k] += int(v.split()[0])
    return out


class Daemon:
    """A filesystem served in the foreground by a child process."""

    def __init__(self, argv, mnt, log):
        self.mnt = mnt
        self.log = log
        with open(log, "ab") as f:
            self.proc = subprocess.Popen(argv, stdout=f, stderr=f)
        if not wait_for(lambda: os.path.ismount(mnt) or self.proc.poll() is not None):
            self.stop()
            raise BenchError("%s did not mount" % mnt)
        if not os.path.ismount(mnt):
            raise BenchError("%s exited without mounting; see %s" % (argv[0], log))

    @property
    def pids(self):
        """The process started and its children: `vaultfs mount` is a holder
        that keeps /dev/fuse and a worker that serves; both are the daemon's
        cost (minifs is one process)."""
        r = subprocess.run(["pgrep", "-P", str(self.proc.pid)], stdout=subprocess.PIPE,
                           text=True)
        return [self.proc.pid] + [int(p) for p in r.stdout.split()]

    def stop(self):
        if os.path.ismount(self.mnt):
            subprocess.run(["fusermount3", "-u", self.mnt], stderr=subprocess.DEVNULL)
        try:
            rc = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        if rc != 0:
            raise BenchError("daemon for %s exited with %d; see %s" % (self.mnt, rc, self.log))


class Row:
    def __init__(self, what, value, unit, base_name=None, base=None, ratio=None,
                 spread=None, target=None, ok=None):
        self.what, self.value, self.unit = what, value, unit
        self.base_name, self.base = base_name, base
        self.ratio, self.spread, self.target, self.ok = ratio, spread, target, ok


def fmt_num(v, unit):
    if v is None:
        return ""
    if unit in ("ops/s",):
        return "{:,.0f} {}".format(v, unit)
    if unit == "ms":
        return "{:.1f} ms".format(v) if v < 100 else "{:,.0f} ms".format(v)
    if unit == "us":
        return "{:,.1f} µs".format(v) if v < 100 else "{:,.0f} µs".format(v)
    if unit == "MiB":
        return "{:.1f} MiB".format(v)
    if unit == "KiB":
        return "{:,.0f} KiB".format(v)
    return "{} {}".format(v, unit)


def paired(rounds, fn_a, fn_b):
    """Alternates fn_a and fn_b (the order flips every round); returns the two
    lists of results."""
    a, b = [], []
    for i in range(rounds):
        if i % 2 == 0:
            a.append(fn_a())
            b.append(fn_b())
        else:
            b.append(fn_b())
            a.append(fn_a())
    return a, b


def ratio_stats(a, b):
    ratios = [x / y for x, y in zip(a, b)]
    return statistics.median(ratios), (min(ratios), max(ratios))


class Bench:
    def __init__(self, args):
        self.args = args
        self.vaultfs = os.path.abspath(args.vaultfs)
        self.tools = os.path.abspath(args.tools)
        self.vbench = os.path.join(self.tools, "vbench")
        self.minifs = os.path.join(self.tools, "minifs")
        self.loadvault = os.path.join(self.tools, "loadvault")
        self.dir = tempfile.mkdtemp(prefix="vaultfs-bench-", dir=args.dir)
        self.key = os.path.join(self.dir, "master.key")
        self.config = os.path.join(self.dir, "bench.ini")
        self.tmpfs = os.path.join(self.dir, "tmpfs")
        self.disk = os.path.join(self.dir, "disk")
        self.daemons = []
        self.rows = []
        self.quick = args.quick
        self.attr_timeout = args.attr_timeout

    # -- set-up --------------------------------------------------------------
    def db(self, n):
        return os.path.join(self.dir, "vault-%d.db" % n)

    def mnt(self, name):
        p = os.path.join(self.dir, "mnt-" + name)
        os.makedirs(p, exist_ok=True)
        return p

    def vault_opts(self, n, config=None):
        return ["--config", config or self.config, "--db", self.db(n), "--key-file", self.key]

    def setup(self):
        # The same settings without the audit log, to show what it costs.
        self.config_noaudit = self.config.replace(".ini", "-noaudit.ini")
        with open(self.config_noaudit, "w") as f:
            f.write("[vault]\naudit = no\n")
            for setting in self.args.set or ():
                f.write(setting + "\n")
            if self.attr_timeout is not None:
                f.write("attr_timeout = %g\n" % self.attr_timeout)
        with open(self.config, "w") as f:
            f.write("[vault]\n")
            for setting in self.args.set or ():
                f.write(setting + "\n")
            if self.attr_timeout is not None:
                f.write("attr_timeout = %g\n" % self.attr_timeout)
            else:
                self.attr_timeout = 1.0		# the shipped default

        # mkdtemp made it 0700: the flood's user must reach the mount.
        os.chmod(self.dir, 0o711)
        # The 1,000-key vault's daemon also has a secret everyone can reach
        # and only root may read: nobody's denied opens are the flood. Its
        # own config, as modes in a config are applied at every mount.
        self.config_flood = self.config.replace(".ini", "-flood.ini")
        with open(self.config) as src, open(self.config_flood, "w") as f:
            f.write(src.read())
            f.write("[instance flood]\nmode = 0755\nsecret_mode = 0644\nread_users = root\n")
        run([self.vaultfs, "keygen", "--out", self.key])
        for n in SIZES:
            run([self.vaultfs, "init"] + self.vault_opts(n)[2:])
            t0 = time.perf_counter()
            run([self.loadvault, self.db(n), self.key, INSTANCE, str(n), VALUE])
            self.note("loaded %d keys in %.1f s" % (n, time.perf_counter() - t0))
        os.makedirs(self.tmpfs)
        run(["mount", "-t", "tmpfs", "-o", "size=1g,mode=0755", "vbench", self.tmpfs])
        for n in SIZES:
            d = os.path.join(self.tmpfs, "k%d" % n)
            os.mkdir(d)
            for i in range(n):
                fd = os.open(os.path.join(d, key_name(i)), os.O_WRONLY | os.O_CREAT, 0o600)
                os.write(fd, VALUE.encode())
                os.close(fd)
        os.makedirs(self.disk)

    def mount_vault(self, n, name=None, config=None):
        mnt = self.mnt(name or "v%d" % n)
        d = Daemon([self.vaultfs, "mount", "-f"] + self.vault_opts(n, config) + [mnt], mnt,
                   os.path.join(self.dir, "vaultfs.log"))
        self.daemons.append(d)
        return d

    def mount_minifs(self, name="mini"):
        mnt = self.mnt(name)
        d = Daemon([self.minifs, "-f", "-n", str(max(SIZES)), "-t", str(self.attr_timeout),
                    "-v", VALUE, mnt], mnt, os.path.join(self.dir, "minifs.log"))
        self.daemons.append(d)
        return d

    def stop(self, d):
        self.daemons.remove(d)
        d.stop()

    def cleanup(self):
        for d in list(self.daemons):
            try:
                self.stop(d)
            except BenchError as e:
                print("cleanup: %s" % e, file=sys.stderr)
        for name in os.listdir(self.dir):
            p = os.path.join(self.dir, name)
            if os.path.ismount(p):
                subprocess.run(["umount", "-l", p])
        if not self.args.keep:
            shutil.rmtree(self.dir, ignore_errors=True)

    def note(self, msg):
        print("  " + msg, file=sys.stderr, flush=True)

    def rounds(self, n):
        return max(3, n // 3) if self.quick else n

    # -- measurements --------------------------------------------------------
    def read_ops(self, path, threads, daemon=None):
        """Operations per second, and the daemon's CPU time per operation
        in microseconds (None without a daemon)."""
        pids = daemon.pids if daemon else []
        before = cpu_ns(pids)
        out = run([self.vbench, "read", path, VALUE, str(threads), str(self.args.seconds)])
        ops = float(out)
        if not daemon:
            return ops, None
        return ops, (cpu_ns(pids) - before) / 1000.0 / (ops * self.args.seconds)

    def bench_read(self, vault, mini, quiet):
        vfile = os.path.join(vault.mnt, INSTANCE, key_name(0))
        qfile = os.path.join(quiet.mnt, INSTANCE, key_name(0))
        mfile = os.path.join(mini.mnt, key_name(0))
        tfile = os.path.join(self.tmpfs, "k1000", key_name(0))
        for threads in (1, 4):
            v, q, m, t = [], [], [], []
            for i in range(self.rounds(11)):
                order = [(v, vfile, vault), (m, mfile, mini), (t, tfile, None),
                         (q, qfile, quiet)]
                for lst, path, d in (order if i % 2 == 0 else order[::-1]):
                    lst.append(self.read_ops(path, threads, d))
            what = "open+read+close 40 B, %d thread%s" % (threads, "s" if threads > 1 else "")
            vo, mo, to = [x[0] for x in v], [x[0] for x in m], [x[0] for x in t]
            r, spread = ratio_stats(vo, mo)
            self.rows.append(Row(what, statistics.median(vo), "ops/s", "minifs",
                                 statistics.median(mo), r, spread, "≥ 0.85×", r >= 0.85))
            r, spread = ratio_stats(vo, to)
            self.rows.append(Row("  same, against tmpfs", statistics.median(vo), "ops/s", "tmpfs",
                                 statistics.median(to), r, spread))
            vc, mc = [x[1] for x in v], [x[1] for x in m]
            r, spread = ratio_stats(vc, mc)
            self.rows.append(Row("  daemon CPU time per open+read+close", statistics.median(vc),
                                 "us", "minifs", statistics.median(mc), r, spread))
            qo, qc = [x[0] for x in q], [x[1] for x in q]
            r, spread = ratio_stats(qo, mo)
            self.rows.append(Row("  same, audit = no", statistics.median(qo), "ops/s", "minifs",
                                 statistics.median(mo), r, spread))
            r, spread = ratio_stats(qc, mc)
            self.rows.append(Row("  daemon CPU time, audit = no", statistics.median(qc), "us",
                                 "minifs", statistics.median(mc), r, spread))
            self.note("read %d thread(s) done" % threads)

    def bench_render(self, vault):
        """Opens of a template (rendered at each open from the keys it names)
        against opens of one of those keys, on the same mount."""
        keyfile = os.path.join(vault.mnt, INSTANCE, key_name(0))
        one = "{{ %s }}" % key_name(0)
        env = "".join("V%d={{ %s | env }}\n" % (i, key_name(i)) for i in range(4))
        cases = (("1 key", "tpl-one", one, VALUE),
                 ("4 keys | env", "tpl-env", env,
                  "".join("V%d=%s\n" % (i, VALUE) for i in range(4))))
        for _, name, src, _ in cases:
            run([self.vaultfs, "template", "set"] + self.vault_opts(1000) + [INSTANCE, name],
                input=src.encode())
        for threads in (1, 4):
            for label, name, _, want in cases:
                tfile = os.path.join(vault.mnt, INSTANCE, name)
                t, k = [], []

                def render():
                    return float(run([self.vbench, "read", tfile, want, str(threads),
                                      str(self.args.seconds)]))

                def plain():
                    return float(run([self.vbench, "read", keyfile, VALUE, str(threads),
                                      str(self.args.seconds)]))
                for i in range(self.rounds(7)):
                    pair = ((t, render), (k, plain))
                    for lst, fn in (pair if i % 2 == 0 else pair[::-1]):
                        lst.append(fn())
                r, spread = ratio_stats(t, k)
                self.rows.append(Row("open+read+close of a template (%s), %d thread%s"
                                     % (label, threads, "s" if threads > 1 else ""),
                                     statistics.median(t), "ops/s", "one key",
                                     statistics.median(k), r, spread))
        # The listings measured next count the instance's keys exactly.
        for _, name, _, _ in cases:
            run([self.vaultfs, "rm"] + self.vault_opts(1000) + [INSTANCE, name])
        self.note("render done")

    def ls_time(self, path, n):
        t, out = timed(["ls", "-l", path], env={"LC_ALL": "C", "PATH": os.environ["PATH"]})
        lines = out.count(b"\n")
        if lines != n + 1:
            raise BenchError("ls -l %s listed %d lines, expected %d" % (path, lines, n + 1))
        return t * 1000

    def bench_ls(self, mounts):
        for n in SIZES:
            vdir = os.path.join(mounts[n].mnt, INSTANCE)
            tdir = os.path.join(self.tmpfs, "k%d" % n)
            reps = {1000: 9, 10000: 7, 100000: 3}[n]
            self.ls_time(vdir, n)		# the first listing brings the rows into memory
            v, t = paired(self.rounds(reps), lambda: self.ls_time(vdir, n),
                          lambda: self.ls_time(tdir, n))
            r, spread = ratio_stats(v, t)
            target, ok = ("≤ 3×", r <= 3) if n == 10000 else (None, None)
            self.rows.append(Row("ls -l, {:,} keys".format(n), statistics.median(v), "ms",
                                 "tmpfs", statistics.median(t), r, spread, target, ok))
            self.note("ls %d done" % n)

    def write_pairs(self, mode, target, count):
        """`vbench paired`: each vaultfs write next to a baseline one, so that
        both see the disk as it is then; (vaultfs µs, baseline µs)."""
        value = VALUE if mode == "create" else VALUE[:30]
        out = run([self.vbench, "paired", mode, target, self.disk, value, str(count)]).split()
        return float(out[0]), float(out[1])

    def write_rounds(self, mode, target, count):
        v, b = [], []
        for _ in range(self.rounds(11)):
            x, y = self.write_pairs(mode, target(), count)
            v.append(x)
            b.append(y)
        return v, b

    def bench_write(self, vault, quiet):
        # Writes go to the 10,000-key vault: the 1,000-key one stays as loaded.
        vfile = os.path.join(vault.mnt, INSTANCE, key_name(9999))
        qfile = os.path.join(quiet.mnt, INSTANCE, key_name(9997))
        count = 50 if self.quick else 100
        # A new vault's first writes grow its WAL to the length it keeps
        # (4 MiB, about 250 writes), each commit extending the file: shown
        # on a row of their own. The rounds then run at that length, as in a
        # vault that has been written to, the baseline's directory warmed
        # alike.
        warm = 150 if self.quick else 300
        first_v, first_b = self.write_pairs("write", vfile, warm)
        self.write_pairs("write", qfile, warm)
        v, b = self.write_rounds("write", lambda: vfile, count)
        r, spread = ratio_stats(v, b)
        self.rows.append(Row("durable write 40 B (open+write+close)", statistics.median(v), "us",
                             "tmp+fsync+rename", statistics.median(b), r, spread, "≤ 1.3×",
                             r <= 1.3))
        v, b = self.write_rounds("write", lambda: qfile, count)
        r, spread = ratio_stats(v, b)
        self.rows.append(Row("  same, audit = no", statistics.median(v), "us",
                             "tmp+fsync+rename", statistics.median(b), r, spread))
        self.rows.append(Row("  the first %d writes to the vault (its WAL growing)" % warm,
                             first_v, "us", "tmp+fsync+rename", first_b, first_v / first_b))
        # A new key each time: created, written, closed; each round in a new
        # instance so the names are fresh.
        rounds = {"n": 0}

        def new_dir():
            rounds["n"] += 1
            d = os.path.join(vault.mnt, "new%d" % rounds["n"])
            os.mkdir(d)
            return d

        v, b = self.write_rounds("create", new_dir, count)
        r, spread = ratio_stats(v, b)
        self.rows.append(Row("  same, a new key each time (create+write+close)",
                             statistics.median(v), "us", "tmp+fsync+rename", statistics.median(b),
                             r, spread, "≤ 1.6×", r <= 1.6))
        self.note("durable write done")

    def bench_flood(self, vault):
        """Another user's reads and writes while nobody floods the log with
        denied opens from FLOOD_THREADS threads, against the same with no
        flood, alternating."""
        target = os.path.join(vault.mnt, "flood", "K")
        with open(target, "w") as f:
            f.write(VALUE)
        rfile = os.path.join(vault.mnt, INSTANCE, key_name(1))
        # Written in the flood's instance: the 1,000-key one stays as loaded.
        wfile = os.path.join(vault.mnt, "flood", "W")
        with open(wfile, "w") as f:
            f.write(VALUE)
        count = "20" if self.quick else "40"

        def read_us():
            return 1e6 / self.read_ops(rfile, 1)[0]

        def write_us():
            return float(run([self.vbench, "write", wfile, VALUE[:30], count]))

        idle, flood, tries = {"r": [], "w": []}, {"r": [], "w": []}, 0
        for i in range(self.rounds(5)):
            idle["r"].append(read_us())
            idle["w"].append(write_us())
            p = subprocess.Popen(["setpriv", "--reuid=%d" % NOBODY, "--regid=%d" % NOBODY,
                                  "--clear-groups", self.vbench, "deny", target,
                                  str(FLOOD_THREADS)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            try:
                if p.stdout.readline().strip() != "started":
                    raise BenchError("vbench deny did not start")
                time.sleep(0.3)
                flood["r"].append(read_us())
                flood["w"].append(write_us())
            finally:
                p.stdin.close()
                out = p.stdout.read()
                if p.wait() != 0:
                    raise BenchError("vbench deny failed: a denied open was not refused")
            tries += int(out)
        for k, what in (("r", "open+read+close 40 B by root during a denial flood"),
                        ("w", "  durable write by root during the flood")):
            r, spread = ratio_stats(flood[k], idle[k])
            self.rows.append(Row(what, statistics.median(flood[k]), "us", "no flood",
                                 statistics.median(idle[k]), r, spread, "≤ 2×", r <= 2))
        wal = self.db(1000) + "-wal"
        self.note("flood: %d denied opens by %d threads; WAL %d KiB right after" % (
            tries, FLOOD_THREADS, os.path.getsize(wal) // 1024 if os.path.exists(wal) else 0))
        self.note("flood done")

    def bench_cli(self):
        get = [self.vaultfs, "get"] + self.vault_opts(1000) + [INSTANCE, key_name(0)]
        put = [self.vaultfs, "set"] + self.vault_opts(10000) + [INSTANCE, key_name(9998)]
        tfile = os.path.join(self.tmpfs, "k1000", key_name(0))

        def vget():
            t, out = timed(get)
            if out != VALUE.encode():
                raise BenchError("vaultfs get returned %r" % out)
            return t * 1000

        def cat():
            t, out = timed(["cat", tfile])
            if out != VALUE.encode():
                raise BenchError("cat returned %r" % out)
            return t * 1000

        v, b = paired(self.rounds(41), vget, cat)
        r, spread = ratio_stats(v, b)
        self.rows.append(Row("vaultfs get (a process, vault mounted)", statistics.median(v), "ms",
                             "cat of tmpfs", statistics.median(b), r, spread, "≤ 2×", r <= 2))
        v, b = paired(self.rounds(41),
                      lambda: timed(put, VALUE.encode())[0] * 1000,
                      lambda: timed([self.vbench, "put", os.path.join(self.disk, "put")],
                                    VALUE.encode())[0] * 1000)
        r, spread = ratio_stats(v, b)
        self.rows.append(Row("vaultfs set (a process, vault mounted)", statistics.median(v), "ms",
                             "process: tmp+fsync+rename", statistics.median(b), r, spread))
        check = [self.vaultfs, "get"] + self.vault_opts(10000) + [INSTANCE, key_name(9998)]
        if run(check) != VALUE:
            raise BenchError("vaultfs get after set returned the wrong value")
        self.note("cli done")

    def mount_time(self, argv, mnt):
        t0 = time.perf_counter()
        run(argv)
        t = time.perf_counter() - t0
        if not os.path.ismount(mnt):
            raise BenchError("%s returned but %s is not mounted" % (argv[0], mnt))
        run(["fusermount3", "-u", mnt])
        if not wait_for(lambda: not os.path.ismount(mnt)):
            raise BenchError("%s stayed mounted" % mnt)
        return t * 1000

    def bench_mount(self):
        mnt = self.mnt("mount-time")
        for n in (1000, 100000):
            vault = [self.vaultfs, "mount"] + self.vault_opts(n) + [mnt]
            mini = [self.minifs, "-n", str(n), "-v", VALUE, mnt]
            v, b = paired(self.rounds(7), lambda: self.mount_time(vault, mnt),
                          lambda: self.mount_time(mini, mnt))
            # Let the daemons of the last round finish exiting.
            time.sleep(0.2)
            r, spread = ratio_stats(v, b)
            target, ok = ("< 200 ms", statistics.median(v) < 200) if n == 100000 else (None, None)
            self.rows.append(Row("mount, {:,} keys (until usable)".format(n),
                                 statistics.median(v), "ms", "minifs", statistics.median(b), r,
                                 spread, target, ok))
        self.note("mount done")

    def bench_memory(self):
        vault = self.mount_vault(1000, "mem")
        mini = self.mount_minifs("mem-mini")
        try:
            # One open of each first, so both are warm and steady.
            for d, p in ((vault, os.path.join(vault.mnt, INSTANCE, key_name(0))),
                         (mini, os.path.join(mini.mnt, key_name(0)))):
                with open(p) as f:
                    if f.read() != VALUE:
                        raise BenchError("%s: wrong value" % p)
            time.sleep(0.3)
            idle = proc_status(vault.pids)
            mini_idle = proc_status(mini.pids)
            hold = subprocess.Popen([self.vbench, "hold", os.path.join(vault.mnt, INSTANCE),
                                     "1000", VALUE], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, text=True)
            if hold.stdout.readline().strip() != "open":
                raise BenchError("vbench hold failed")
            time.sleep(0.3)
            held = proc_status(vault.pids)
            hold.stdin.write("\n")
            hold.stdin.flush()
            if hold.stdout.readline().strip() != "closed":
                raise BenchError("vbench hold failed to close")
            # RELEASE is asynchronous: give the daemon a moment to get them all.
            time.sleep(0.5)
            after = proc_status(vault.pids)
            hold.stdin.close()
            if hold.wait() != 0:
                raise BenchError("vbench hold failed")
        finally:
            self.stop(vault)
            self.stop(mini)
        kib = 1024.0
        self.rows.append(Row("daemon RSS, idle", idle["VmRSS"] / kib, "MiB", "minifs",
                             mini_idle["VmRSS"] / kib, idle["VmRSS"] / mini_idle["VmRSS"], None,
                             "< 10 MiB", idle["VmRSS"] < 10 * 1024))
        self.rows.append(Row("daemon RSS, 1,000 open handles", held["VmRSS"] / kib, "MiB",
                             "idle", idle["VmRSS"] / kib, held["VmRSS"] / idle["VmRSS"]))
        per_handle = (held["VmLck"] - idle["VmLck"]) / 1000.0
        self.rows.append(Row("locked memory, idle", idle["VmLck"], "KiB"))
        self.rows.append(Row("locked memory, 1,000 open handles", held["VmLck"], "KiB", "idle",
                             idle["VmLck"], None, None,
                             "∝ open: %.1f KiB each" % per_handle, 3.5 <= per_handle <= 8.5))
        self.rows.append(Row("locked memory, after closing them", after["VmLck"], "KiB", "idle",
                             idle["VmLck"], None, None, "back to idle",
                             after["VmLck"] <= idle["VmLck"] + 64))
        self.note("memory done")

    def lookup_pass(self, d, first, stride):
        return float(run([self.vbench, "lookup", d, str(first), "1000", str(stride)]))

    def bench_lookup(self):
        """stat() of 1,000 names, each once per pass. The first pass after
        mounting finds the daemon's caches cold; later passes come after the
        entries expired (attr_timeout), so each stat is again a LOOKUP, with
        the daemon warm: the steady state."""
        cold = {"v1k": [], "v100k": [], "mini": []}
        warm = {"v1k": [], "v100k": [], "mini": []}
        remount = self.attr_timeout > 2
        passes = 1 if remount else self.rounds(7)
        for i in range(self.rounds(5) if remount else 1):
            v1 = self.mount_vault(1000, "lk1")
            v100 = self.mount_vault(100000, "lk100")
            mini = self.mount_minifs("lk-mini")
            try:
                jobs = [("v1k", os.path.join(v1.mnt, INSTANCE), 0, 1),
                        ("v100k", os.path.join(v100.mnt, INSTANCE), i, 100),
                        ("mini", mini.mnt, i, 100)]
                for p in range(passes + (0 if remount else 1)):
                    into = cold if p == 0 else warm
                    if remount:
                        into = warm
                    for name, d, first, stride in (jobs if p % 2 == 0 else jobs[::-1]):
                        into[name].append(self.lookup_pass(d, first, stride))
                    if not remount:
                        time.sleep(self.attr_timeout + 0.2)
            finally:
                for d in (v1, v100, mini):
                    self.stop(d)
        for name, n in (("v1k", 1000), ("v100k", 100000)):
            r, spread = ratio_stats(warm[name], warm["mini"])
            self.rows.append(Row("lookup (stat after the entry expired), {:,} keys".format(n),
                                 statistics.median(warm[name]) / 1000, "us", "minifs",
                                 statistics.median(warm["mini"]) / 1000, r, spread))
        r, spread = ratio_stats(warm["v100k"], warm["v1k"])
        self.rows.append(Row("  lookup at 100,000 keys against 1,000", None, None,
                             "1,000 keys", None, r, spread, "flat (< 1.3×)", r < 1.3))
        if cold["v100k"]:
            self.rows.append(Row("  first lookups after mounting, 100,000 keys",
                                 cold["v100k"][0] / 1000, "us", "minifs",
                                 cold["mini"][0] / 1000, cold["v100k"][0] / cold["mini"][0]))
        self.note("lookup done")

    # -- PostgreSQL ----------------------------------------------------------
    def pg_setup(self, n):
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                        "tests", "integration"))
        import pgserver
        if not pgserver.available():
            raise BenchError("PostgreSQL 15 is not installed (make test-deps)")
        self.pg = pgserver.PgCluster(parent=self.dir)
        os.environ["PGPASSFILE"] = self.pg.passfile
        uri = self.pg.uri()
        run([self.vaultfs, "init", "--db", uri, "--key-file", self.key])
        t0 = time.perf_counter()
        run([self.loadvault, uri, self.key, INSTANCE, str(n), VALUE])
        self.note("loaded %d keys into PostgreSQL in %.1f s" % (n, time.perf_counter() - t0))
        return uri

    def mount_uri(self, uri, name, config=None):
        mnt = self.mnt(name)
        d = Daemon([self.vaultfs, "mount", "-f", "--config", config or self.config, "--db", uri,
                    "--key-file", self.key, mnt], mnt, os.path.join(self.dir, "vaultfs.log"))
        self.daemons.append(d)
        return d

    def coherence_ms(self, writer, reader, i):
        """From the close of a write through one daemon to its new size
        showing through the other, which had the old one cached."""
        wfile = os.path.join(writer.mnt, INSTANCE, key_name(1))
        rfile = os.path.join(reader.mnt, INSTANCE, key_name(1))
        value = ("x" * (10 + i % 2)).encode()
        os.stat(rfile)
        fd = os.open(wfile, os.O_WRONLY | os.O_TRUNC)
        os.write(fd, value)
        os.close(fd)
        t0 = time.perf_counter()
        while os.stat(rfile).st_size != len(value):
            if time.perf_counter() - t0 > 5:
                raise BenchError("a write through one daemon never showed through the other")
        return (time.perf_counter() - t0) * 1000

    def bench_pg(self):
        n = 1000
        uri = self.pg_setup(n)
        coherent = self.config.replace(".ini", "-coherent.ini")
        with open(self.config) as src, open(coherent, "w") as f:
            f.write(src.read() + "attr_timeout = 60\n")
        pg1 = self.mount_uri(uri, "pg1")
        pg2 = self.mount_uri(uri, "pg2", coherent)
        sq = self.mount_vault(n, "sq-pg")
        sq2 = self.mount_vault(n, "sq-pg2", coherent)
        try:
            pfile = os.path.join(pg1.mnt, INSTANCE, key_name(0))
            sfile = os.path.join(sq.mnt, INSTANCE, key_name(0))
            for threads in (1, 4):
                p, q = paired(self.rounds(7), lambda: self.read_ops(pfile, threads, pg1),
                              lambda: self.read_ops(sfile, threads, sq))
                po, so = [x[0] for x in p], [x[0] for x in q]
                r, spread = ratio_stats(po, so)
                self.rows.append(Row("PostgreSQL: open+read+close 40 B, %d thread%s" % (
                    threads, "s" if threads > 1 else ""), statistics.median(po), "ops/s",
                    "SQLite", statistics.median(so), r, spread))
            count = "30" if self.quick else "60"
            wp = os.path.join(pg1.mnt, INSTANCE, key_name(n - 1))
            ws = os.path.join(sq.mnt, INSTANCE, key_name(n - 1))
            p, q = paired(self.rounds(7),
                          lambda: float(run([self.vbench, "write", wp, VALUE[:30], count])),
                          lambda: float(run([self.vbench, "write", ws, VALUE[:30], count])))
            r, spread = ratio_stats(p, q)
            self.rows.append(Row("PostgreSQL: durable write 40 B (open+write+close)",
                                 statistics.median(p), "us", "SQLite", statistics.median(q), r,
                                 spread))
            seq = iter(range(1000))
            p, q = paired(self.rounds(15), lambda: self.coherence_ms(pg1, pg2, next(seq)),
                          lambda: self.coherence_ms(sq, sq2, next(seq)))
            r, spread = ratio_stats(p, q)
            self.rows.append(Row("PostgreSQL: a write seen through another daemon "
                                 "(attr_timeout 60)", statistics.median(p), "ms",
                                 "SQLite, 2 daemons", statistics.median(q), r, spread,
                                 "≤ 100 ms", statistics.median(p) <= 100))
        finally:
            for d in (pg1, pg2, sq, sq2):
                self.stop(d)
            self.pg.cleanup()
        self.note("PostgreSQL done")
    def bench_hooks(self):
        """From a write's commit (its close returned) to its on_change hook's
        start: the 200 ms debounce window plus the store's follower (20 ms
        polls) and the fork. One write at a time, apart by more than the
        window, on the 1,000-key vault."""
        stamps = os.path.join(self.dir, "hook-stamps")
        config = self.config.replace(".ini", "-hooks.ini")
        with open(self.config) as src, open(config, "w") as f:
            f.write(src.read())
            f.write("[instance %s]\non_change = date +%%s%%N >> %s\non_change_user = root\n"
                    % (INSTANCE, stamps))
        d = self.mount_vault(1000, "hooks", config)
        lat = []
        try:
            path = os.path.join(d.mnt, INSTANCE, key_name(1))
            for i in range(self.rounds(20)):
                n = len(open(stamps).read().split()) if os.path.exists(stamps) else 0
                with open(path, "w") as f:
                    f.write(VALUE)
                t = time.time_ns()
                assert wait_for(lambda: os.path.exists(stamps) and
                                len(open(stamps).read().split()) > n, 10), "no hook ran"
                lat.append((int(open(stamps).read().split()[-1]) - t) / 1e6)
                time.sleep(0.3)
        finally:
            self.stop(d)
        self.rows.append(Row("on_change hook: commit to hook start (200 ms debounce)",
                             statistics.median(lat), "ms", "the window", 200.0,
                             statistics.median(lat) / 200.0, (min(lat) / 200, max(lat) / 200)))
        self.note("hooks done")

    # -- report --------------------------------------------------------------
    def machine(self):
        model = "?"
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
        fstype = subprocess.run(["findmnt", "-no", "FSTYPE", "-T", self.dir],
                                stdout=subprocess.PIPE, text=True).stdout.strip()
        return "%s, %d cores, %.1f GiB RAM, Linux %s, vault on %s (%s)" % (
            model, os.cpu_count(), os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30,
            platform.release(), self.dir, fstype)

    def report(self, load_before, load_after, seconds):
        print()
        print("vaultfs benchmark: %s" % self.machine())
        print("load average %.1f before, %.1f after; %.0f s; attr_timeout %g s%s" % (
            load_before, load_after, seconds, self.attr_timeout,
            "".join("; " + x for x in self.args.set or ())))
        print()
        print("| measurement | vaultfs | baseline | ratio | spread | target |")
        print("|---|---:|---|---:|---|---|")
        for r in self.rows:
            base = ""
            if r.base_name:
                base = r.base_name + (" " + fmt_num(r.base, r.unit) if r.base is not None else "")
            ratio = "%.2f×" % r.ratio if r.ratio is not None else ""
            spread = "%.2f–%.2f" % r.spread if r.spread else ""
            target = ""
            if r.target:
                target = "%s %s" % (r.target, "✓" if r.ok else "✗ missed")
            print("| %s | %s | %s | %s | %s | %s |" % (r.what, fmt_num(r.value, r.unit), base,
                                                      ratio, spread, target))

    def main(self):
        t0 = time.monotonic()
        load_before = os.getloadavg()[0]
        parts = self.args.only.split(",") if self.args.only else PARTS
        self.setup()
        vault = {n: self.mount_vault(n, config=self.config_flood if n == 1000 else None)
                 for n in SIZES}
        mini = self.mount_minifs()
        quiet = {n: self.mount_vault(n, "v%d-noaudit" % n, self.config_noaudit)
                 for n in (1000, 10000)}
        if "read" in parts:
            self.bench_read(vault[1000], mini, quiet[1000])
        if "render" in parts:
            self.bench_render(vault[1000])
        if "ls" in parts:
            self.bench_ls(vault)
        if "write" in parts:
            self.bench_write(vault[10000], quiet[10000])
        if "flood" in parts:
            self.bench_flood(vault[1000])
        # While mounted, as people use it: the CLI is then never the last
        # connection, which would checkpoint the WAL on exit.
        if "cli" in parts:
            self.bench_cli()
        for n in SIZES:
            self.stop(vault[n])
        for d in quiet.values():
            self.stop(d)
        self.stop(mini)
        for name in ("mount", "memory", "lookup", "hooks", "pg"):
            if name in parts:
                getattr(self, "bench_" + name)()
        self.report(load_before, os.getloadavg()[0], time.monotonic() - t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vaultfs", default="./vaultfs")
    ap.add_argument("--tools", default="build/bench")
    ap.add_argument("--dir", default="/var/tmp", help="where the vaults live (a real disk)")
    ap.add_argument("--seconds", type=float, default=0.7, help="length of each read run")
    ap.add_argument("--quick", action="store_true", help="fewer rounds")
    ap.add_argument("--attr-timeout", type=float, default=None,
                    help="attr_timeout for vaultfs and minifs (default: the shipped one)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--only", help="comma-separated parts: " + ",".join(PARTS))
    ap.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="a [vault] setting for vaultfs, e.g. --set 'audit = no'")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/run.py mounts FUSE filesystems and a tmpfs: run it as root", file=sys.stderr)
        return 2
    b = Bench(args)
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(1))
    try:
        b.main()
    except BenchError as e:
        print("bench: FAILED: %s" % e, file=sys.stderr)
        return 1
    finally:
        b.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
