"""Atomic rotation: while a key is rewritten, every other reader sees the
previous value whole, then the new one whole; never an empty or partial one.

What a user relies on: `cmd > key` is how secrets are rotated, and an
application that rereads its credential at that moment must get either the
old token or the new one. A shell's redirection opens with O_TRUNC, dup2()s
the descriptor and closes the first copy before `cmd` writes anything; other
writers (tee, cp, install, dd, openssl, Python, editors that rename over)
each open and close in their own way. Each writer program below rotates a
key of its own, so the report says which program, if any, showed a reader
an empty or torn value.

Readers are `cat` (a new process per read, as a shell script would) and
Python. The test runs until at least MIN_READS reads were made, within a
bound, and prints a table of reads, empty, torn and failed per writer.
"""
import base64
import os
import random
import shutil
import subprocess
import threading
import time

import pytest

from conftest import read_file, run
from torture import join_all, make_value, parse_value, report

MAX_LEN = 2048          # short values, like tokens: more rotations per second
MIN_READS = 20000
MIN_SECONDS = 6.0
MAX_SECONDS = 300.0		# a bound for a stuck run (ASan at load 20: 110 reads/s)
APPEND_ROUND = 12       # `>>` records before the append key starts over
# Failures a writer's way of working causes on any filesystem, counted apart
# (never an empty or torn value):
# - coreutils' install removes the destination, then creates it (O_EXCL): a
#   reader in between finds no file. vaultfs keeps the new key from others
#   until its value is committed, so they never see it empty.
# - a key renamed over (install's new file, sed -i's temporary) after the
#   reader's lookup makes its open answer ESTALE and the kernel look the name
#   up again, once; in a tight loop of replacements the retry can meet the
#   next one.
GAP = {"install": {os.strerror(2), os.strerror(116)}, "sed-i": {os.strerror(116)}}


def _sh(shell):
    # the value comes on stdin, never in argv; printf is the shell's builtin
    return lambda path, src: ([*shell, "-c", 'v=$(cat); printf %s "$v" > "$1"', "sh", path],
                              "stdin")


def _heredoc(path, src):
    return (["bash", "-c", 'v=$(cat); cat > "$1" <<EOF\n$v\nEOF', "sh", path], "stdin")


def _tee(path, src):
    return (["tee", path], "stdin")


def _cp(path, src):
    return (["cp", src, path], None)


def _install(path, src):
    return (["install", "-m", "600", src, path], None)


def _dd(path, src):
    return (["dd", f"of={path}", "status=none"], "stdin")


def _openssl(path, src):
    return (["openssl", "base64", "-d", "-A", "-out", path], "base64")


def _sed(path, src):
    # GNU sed -i writes a temporary file beside the key and renames it over
    return (["sed", "-i", "-e", f"1r {src}", "-e", "1d", path], None)


def _vim(path, src):
    return (["vi", "-u", "NONE", "-i", "NONE", "-N", "-n", "-es",
             "-c", "%d", "-c", f"0r {src}", "-c", "x", path], None)


# name -> argv maker; "python" is written in-process
WRITERS = {
    "sh": _sh(["sh"]),
    "dash": _sh(["dash"]),
    "bash": _sh(["bash"]),
    "busybox-sh": _sh(["busybox", "sh"]),
    "bash-heredoc": _heredoc,
    "tee": _tee,
    "cp": _cp,
    "install": _install,
    "dd": _dd,
    "openssl": _openssl,
    "sed-i": _sed,
    "vim": _vim,
    "python": None,
    "sh-append": None,      # `>` then `>>` records, in one shell
}


def _program_missing(name):
    argv0 = {"busybox-sh": "busybox", "bash-heredoc": "bash", "sed-i": "sed",
             "vim": "vi", "sh-append": "sh", "python": None}.get(name, name)
    return argv0 is not None and shutil.which(argv0) is None


class Storm:
    def __init__(self, v, inst):
        self.v = v
        self.inst = inst
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.errors = []
        self.attempted = {}            # writer -> highest seq started
        self.writes = {n: 0 for n in WRITERS}
        self.reads = {n: {"reads": 0, "empty": 0, "torn": 0, "failed": 0, "gap": 0}
                      for n in WRITERS}
        self.by = {"cat": 0, "python": 0}

    def path(self, name):
        return self.v.path(self.inst, name)

    def error(self, who, what):
        with self.lock:
            if len(self.errors) < 40:
                self.errors.append(f"{who}: {what}")

    def total_reads(self):
        with self.lock:
            return sum(r["reads"] for r in self.reads.values())

    def check(self, reader, key, data, failed=None):
        with self.lock:
            st = self.reads[key]
            st["reads"] += 1
            self.by[reader] += 1
            if failed is not None and failed in GAP.get(key, ()):
                st["gap"] += 1          # see GAP
                what = None
            elif failed is not None:
                st["failed"] += 1
                what = f"reading {key}: {failed}"
            elif not data:
                st["empty"] += 1
                what = f"{key} read as an empty value"
            else:
                what = self._whole(key, data)
                if what:
                    st["torn"] += 1
            if what and len(self.errors) < 40:
                self.errors.append(f"{reader}: {what}")

    def _whole(self, key, data):
        if data.endswith(b"\n"):       # one kept newline (newline = keep) is still whole
            data = data[:-1]
        parts = data.split(b"|") if key == "sh-append" else [data]
        for part in parts:
            try:
                tag, seq = parse_value(part, MAX_LEN)
            except ValueError as e:
                return f"{key}: {e}"
            if tag != key or seq > self.attempted.get(key, 0):
                return f"{key}: read {tag}:{seq}, which its writer never wrote"
        return None


def _write_once(storm, name, seq, scratch):
    value = make_value(name, seq, MAX_LEN)
    path = storm.path(name)
    if name == "python":
        with open(path, "w") as f:
            f.write(value.decode())
        return
    argv, feed = WRITERS[name](path, scratch)
    with open(scratch, "wb") as f:
        f.write(value)
    data = {"stdin": value, "base64": base64.b64encode(value), None: None}[feed]
    r = run(argv, input=data, timeout=30)
    if r.returncode != 0:
        raise OSError(f"exit {r.returncode}: {r.stderr.decode(errors='replace').strip()}")


def _append_round(storm, seqs):
    """One shell: a record with `>`, then the others with `>>`."""
    values = [make_value("sh-append", s, MAX_LEN) for s in seqs]
    script = ('IFS= read -r v; printf %s "$v" > "$1"\n'
              'while IFS= read -r v; do printf "|%s" "$v" >> "$1"; done')
    r = run(["sh", "-c", script, "sh", storm.path("sh-append")],
            input=b"\n".join(values) + b"\n", timeout=30)
    if r.returncode != 0:
        raise OSError(f"exit {r.returncode}: {r.stderr.decode(errors='replace').strip()}")


def writer(storm, name, scratch):
    seq = storm.attempted[name]
    try:
        while not storm.stop.is_set():
            if name == "sh-append":
                seqs = list(range(seq + 1, seq + 1 + APPEND_ROUND))
                with storm.lock:
                    storm.attempted[name] = seqs[-1]
                _append_round(storm, seqs)
                seq = seqs[-1]
            else:
                seq += 1
                with storm.lock:
                    storm.attempted[name] = seq
                _write_once(storm, name, seq, scratch)
            with storm.lock:
                storm.writes[name] += 1
    except Exception as e:  # a writer that fails is an error of the run
        storm.error(f"writer {name}", repr(e))


def python_reader(storm, seed):
    rng = random.Random(seed)
    names = list(WRITERS)
    while not storm.stop.is_set():
        key = rng.choice(names)
        try:
            data = read_file(storm.path(key))
        except OSError as e:
            storm.check("python", key, b"", failed=os.strerror(e.errno))
            continue
        storm.check("python", key, data)


def cat_reader(storm, stopfile):
    """A shell loop of `cat`, one process per read. Values hold no tab or
    newline of their own, so each read is one line: key, value, exit code,
    and what cat said on failure."""
    errfile = stopfile + f".err{threading.get_ident()}"
    script = ('cd "$1" || exit 1\n'
              'while [ ! -e "$2" ]; do for k in ' + " ".join(WRITERS) + '; do\n'
              '  printf "%s\\t" "$k"; cat "$k" 2>"$3"; rc=$?; printf "\\t%d\\t" $rc\n'
              '  [ $rc -eq 0 ] || tr -d "\\n" < "$3"; printf "\\n"\n'
              'done; done')
    p = subprocess.Popen(["sh", "-c", script, "sh", storm.path(""), stopfile, errfile],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    for line in p.stdout:
        fields = line.rstrip(b"\n").split(b"\t")
        if len(fields) != 4 or fields[0].decode() not in WRITERS:
            storm.error("cat", f"unparsable output line {line[:80]!r}")
            continue
        key, data, rc, said = fields[0].decode(), fields[1], fields[2], fields[3]
        if rc != b"0":
            # "cat: KEY: Stale file handle": the reason, as strerror says it
            storm.check("cat", key, b"", failed=said.decode(errors="replace").split(": ")[-1])
        else:
            storm.check("cat", key, data)
    p.wait()
    err = p.stderr.read().decode(errors="replace").strip()
    if err:
        storm.error("cat", err[:500])


def _table(storm):
    lines = [f"{'writer':<14}{'writes':>8}{'reads':>8}{'empty':>7}{'torn':>6}{'failed':>8}"
             f"{'gap':>8}"]
    for n in WRITERS:
        r = storm.reads[n]
        lines.append(f"{n:<14}{storm.writes[n]:>8}{r['reads']:>8}{r['empty']:>7}"
                     f"{r['torn']:>6}{r['failed']:>8}{r['gap']:>8}")
    return "\n".join(lines)


def test_readers_never_see_an_empty_or_torn_value_during_rotations(vault):
    v = vault
    missing = [n for n in WRITERS if _program_missing(n)]
    assert not missing, f"writer programs missing on this machine (make deps): {missing}"
    os.mkdir(v.path("app"))
    storm = Storm(v, "app")
    for n in WRITERS:
        storm.attempted[n] = 1
        with open(v.path("app", n), "wb") as f:
            f.write(make_value(n, 1, MAX_LEN))
    scratch = os.path.join(v.dir, "scratch")
    os.mkdir(scratch)
    stopfile = os.path.join(v.dir, "stop-readers")
    threads = [threading.Thread(target=writer, args=(storm, n, os.path.join(scratch, n)),
                                name=f"w-{n}", daemon=True) for n in WRITERS]
    threads += [threading.Thread(target=python_reader, args=(storm, i), name=f"py{i}",
                                 daemon=True) for i in range(2)]
    threads += [threading.Thread(target=cat_reader, args=(storm, stopfile), name=f"cat{i}",
                                 daemon=True) for i in range(2)]
    started = time.monotonic()
    for t in threads:
        t.start()
    try:
        while True:
            elapsed = time.monotonic() - started
            if elapsed >= MAX_SECONDS or (elapsed >= MIN_SECONDS
                                          and storm.total_reads() >= MIN_READS + 2000):
                break
            with storm.lock:
                if len(storm.errors) >= 40:
                    break
            time.sleep(0.1)
    finally:
        storm.stop.set()
        open(stopfile, "w").close()
    stuck = join_all(threads, 90)
    assert not stuck, f"still busy after the run: {[t.name for t in stuck]}"
    elapsed = time.monotonic() - started
    report("rotation-atomic", seconds=round(elapsed, 1), reads=storm.total_reads(),
           cat_reads=storm.by["cat"], python_reads=storm.by["python"],
           writes=sum(storm.writes.values()),
           empty=sum(r["empty"] for r in storm.reads.values()),
           torn=sum(r["torn"] for r in storm.reads.values()))
    print("\n" + _table(storm))
    assert not storm.errors, ("what readers and writers saw:\n" + "\n".join(storm.errors)
                              + "\n\n" + _table(storm))
    assert storm.total_reads() >= MIN_READS, _table(storm)
    assert storm.by["cat"] > 500 and storm.by["python"] > 500, storm.by
    for n in WRITERS:
        assert storm.writes[n] >= 3, f"{n} rotated only {storm.writes[n]} times\n" + _table(storm)
        assert storm.reads[n]["reads"] >= 100, _table(storm)
    # and each key ends at its writer's last value, whole
    for n in WRITERS:
        data = read_file(v.path("app", n))
        assert storm._whole(n, data) is None, (n, data[:80])
