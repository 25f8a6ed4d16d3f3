"""Pieces the torture tests share: values that check themselves, the scale
knob, database checks, and reading a live process's memory.

VAULTFS_TORTURE_SCALE multiplies kills, durations and storm sizes (1 in
`make check`, more in `make soak`). VAULTFS_TORTURE_REPORT names a file
that gets one line of figures per torture test.
"""
import hashlib
import os
import shutil
import sqlite3
import subprocess
import tempfile
import threading
import time

import pytest

SCALE = float(os.environ.get("VAULTFS_TORTURE_SCALE", "1") or "1")
# Set by `make check-sanitize`: the daemon is an ASan build, slower and with
# a heap that keeps freed memory in quarantine.
SANITIZED = os.environ.get("VAULTFS_SANITIZE") == "1"


def scaled(n, minimum=1):
    return max(minimum, int(n * SCALE))


def report(test, **figures):
    """One line of figures for the closing summary of a run."""
    line = f"{test}: " + ", ".join(f"{k}={v}" for k, v in figures.items())
    print(line)
    path = os.environ.get("VAULTFS_TORTURE_REPORT")
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")


# -- values that name themselves ----------------------------------------------
#
#   <tag>:<seq>:<body>:<seq>:END
#
# The body is derived from (tag, seq) and its length too, so a value that is
# torn, truncated, or mixed from two writes never checks out.

def _body_len(tag, seq, max_len):
    h = hashlib.sha256(f"len:{tag}:{seq}".encode()).digest()
    pick = h[0]
    n = int.from_bytes(h[1:5], "big")
    if pick < 180:                      # mostly short, like API keys
        size = 8 + n % 300
    elif pick < 245:                    # certificates and bundles
        size = 1024 + n % (16 * 1024)
    else:                               # a few large ones, many FUSE writes
        size = 64 * 1024 + n % (192 * 1024)
    return min(size, max_len)


def make_value(tag, seq, max_len=256 * 1024):
    n = _body_len(tag, seq, max_len)
    body = hashlib.shake_256(f"body:{tag}:{seq}".encode()).hexdigest((n + 1) // 2)[:n]
    return f"{tag}:{seq}:{body}:{seq}:END".encode()


def parse_value(data, max_len=256 * 1024):
    """(tag, seq) of a whole value made by make_value; ValueError otherwise."""
    try:
        tag, seq, _ = data.split(b":", 2)
        seq = int(seq)
        tag = tag.decode()
    except (ValueError, UnicodeDecodeError):
        raise ValueError(f"not a torture value: {data[:60]!r}... ({len(data)} bytes)")
    if make_value(tag, seq, max_len) != data:
        raise ValueError(f"torn or mixed value: starts as {tag}:{seq} but is not that "
                         f"value ({len(data)} bytes, tail {data[-40:]!r})")
    return tag, seq


# -- the database, checked from outside ---------------------------------------

def integrity_check(db_path):
    """PRAGMA integrity_check on a copy of the database and its -wal, so the
    check's own recovery and checkpoint leave the files under test alone.
    Returns SQLite's report lines (["ok"] when sound)."""
    scratch = tempfile.mkdtemp(prefix="vaultfs-ic-", dir="/tmp")
    try:
        copy = os.path.join(scratch, "copy.db")
        shutil.copyfile(db_path, copy)
        if os.path.exists(db_path + "-wal"):
            shutil.copyfile(db_path + "-wal", copy + "-wal")
        con = sqlite3.connect(copy, timeout=30)
        try:
            return [r[0] for r in con.execute("PRAGMA integrity_check").fetchall()]
        finally:
            con.close()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def versions(con):
    """{name: version} of every secret, read with an open sqlite3 connection."""
    return {name: ver for name, ver in con.execute("SELECT name, version FROM secrets")}


def audit_verify(v):
    """Runs `vaultfs audit --verify` (the hash chain of the audit log)."""
    return v.cli("audit", "--verify")


# -- the daemon's process ------------------------------------------------------

def proc_status(pid):
    """VmRSS and VmLck of a process, in bytes."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmLck", "VmHWM", "Threads"):
                parts = rest.split()
                out[key] = int(parts[0]) * (1024 if key != "Threads" else 1)
    return out


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


# Regions too large to read whole: ASan's shadow memory and reserved heap
# space. They are address space, not copies of anything the process handled.
SCAN_REGION_MAX = 1 << 30


def memory_regions(pid):
    regions = []
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            parts = line.split(maxsplit=5)
            start, end = (int(x, 16) for x in parts[0].split("-"))
            perms = parts[1]
            name = parts[5].strip() if len(parts) > 5 else ""
            if "r" not in perms or name in ("[vvar]", "[vsyscall]", "[vvar_vclock]"):
                continue
            regions.append((start, end, perms, name))
    return regions


def scan_memory(pid, needles, chunk=8 << 20):
    """Every place in pid's readable memory where one of needles occurs, as
    (needle index, address, region name). Root reads /proc/PID/mem even of a
    non-dumpable process (CAP_SYS_PTRACE)."""
    found = []
    longest = max(len(n) for n in needles)
    fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY)
    try:
        for start, end, _perms, name in memory_regions(pid):
            if end - start > SCAN_REGION_MAX:
                continue
            pos = start
            tail = b""
            while pos < end:
                n = min(chunk, end - pos)
                try:
                    data = os.pread(fd, n, pos)
                except OSError:
                    data = b""
                if not data:
                    tail = b""
                    pos += n
                    continue
                buf = tail + data
                base = pos - len(tail)
                for i, needle in enumerate(needles):
                    at = buf.find(needle)
                    while at >= 0:
                        found.append((i, base + at, name or "[anon]"))
                        at = buf.find(needle, at + 1)
                tail = buf[-(longest - 1):] if longest > 1 else b""
                pos += len(data)
    finally:
        os.close(fd)
    # a needle found in the overlap of two chunks is reported once
    return sorted(set(found))


def fragments(value, size=16):
    """The value itself and pieces of it spread over its length: a partial
    copy (one block of a cipher, say) is still a leak."""
    if len(value) <= size:
        return [value]
    step = max(1, (len(value) - size) // 6)
    return [value] + [value[i:i + size] for i in range(0, len(value) - size + 1, step)]


# -- a watchdog for threads that must end --------------------------------------

def join_all(threads, timeout):
    """Joins threads within timeout seconds in all; returns the ones still alive."""
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    return [t for t in threads if t.is_alive()]


def daemon_stacks(pid):
    """Every thread's stack of a hung daemon, for the failure message (gdb when
    present, otherwise the kernel's view of each thread)."""
    if shutil.which("gdb"):
        r = subprocess.run(["gdb", "-p", str(pid), "-batch", "-ex", "thread apply all bt"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        return r.stdout.decode(errors="replace")[-20000:]
    out = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stack") as f:
                out.append(f"thread {tid}:\n{f.read()}")
        except OSError:
            pass
    return "\n".join(out)


class Gate:
    """Lets worker threads run or holds them at a known idle point."""

    def __init__(self, workers):
        self.cond = threading.Condition()
        self.open = False
        self.stopped = False
        self.idle = 0
        self.workers = workers

    def wait_turn(self):
        """Called by a worker between operations; False when it must stop."""
        with self.cond:
            self.idle += 1
            self.cond.notify_all()
            while not self.open and not self.stopped:
                self.cond.wait()
            self.idle -= 1
            return not self.stopped

    def set_open(self, value):
        with self.cond:
            self.open = value
            self.cond.notify_all()

    def stop(self):
        with self.cond:
            self.stopped = True
            self.cond.notify_all()

    def wait_idle(self, timeout):
        """Closes the gate and waits until every worker is parked at it."""
        with self.cond:
            self.open = False
            ok = self.cond.wait_for(lambda: self.idle == self.workers, timeout)
        if not ok:
            pytest.fail(f"workers did not come to rest within {timeout}s "
                        f"({self.idle}/{self.workers} idle): a syscall on the mount hangs")
