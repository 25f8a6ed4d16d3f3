"""Concurrency: many writers and readers, through the mount and through the
CLI at once, on the same few keys, for a bounded time.

What a user relies on: a read returns one whole value that somebody wrote,
never a mix; nobody is told "busy" because another writer held the
database; every acknowledged write becomes exactly one new version (none
lost, none doubled) and versions only grow; nothing deadlocks.
"""
import os
import random
import sqlite3
import subprocess
import threading
import time

import pytest

from conftest import read_file
from torture import (audit_verify, daemon_stacks, integrity_check, join_all, make_value,
                     parse_value, report, versions, SANITIZED)

KEYS = ["K0", "K1", "K2", "K3"]
MOUNT_WRITERS = 8
MOUNT_READERS = 8
CLI_WRITERS = 8
CLI_READERS = 8
DURATION = 15.0 * max(1.0, float(os.environ.get("VAULTFS_TORTURE_SCALE", "1") or "1"))
MAX_LEN = 32 * 1024
CHUNK = 4096
# Beyond the run itself: time for the last operations to finish. A worker
# still busy after this is stuck, and the test says so instead of hanging.
GRACE = 90.0


class Run:
    def __init__(self, v):
        self.v = v
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.errors = []
        self.attempted = {}                 # writer tag -> highest seq started
        self.acked = {k: 0 for k in KEYS}   # key -> acknowledged writes
        self.ops = {"mount_write": 0, "mount_read": 0, "cli_set": 0, "cli_get": 0,
                    "version_samples": 0}

    def error(self, who, what):
        with self.lock:
            if len(self.errors) < 50:
                self.errors.append(f"{who}: {what}")

    def count(self, op):
        with self.lock:
            self.ops[op] += 1

    def check_read(self, who, key, data):
        try:
            tag, seq = parse_value(data, MAX_LEN)
        except ValueError as e:
            self.error(who, f"read of {key}: {e}")
            return
        with self.lock:
            top = self.attempted.get(tag)
        if top is None or seq > top:
            self.error(who, f"read of {key} returned value {tag}:{seq}, which no writer wrote")


def guarded(fn):
    """A worker whose unexpected exception (a CLI that hangs past its
    timeout, say) is an error of the run, not a thread that quietly dies."""
    def worker(run, tag, seed):
        try:
            fn(run, tag, seed)
        except Exception as e:
            run.error(tag, f"worker died: {e!r}")
    return worker


@guarded
def mount_writer(run, tag, seed):
    rng = random.Random(seed)
    seq = 0
    while not run.stop.is_set():
        key = rng.choice(KEYS)
        seq += 1
        with run.lock:
            run.attempted[tag] = seq
        data = make_value(tag, seq, MAX_LEN)
        try:
            fd = os.open(run.v.path("app", key), os.O_WRONLY | os.O_TRUNC)
            try:
                for i in range(0, len(data), CHUNK):
                    os.write(fd, data[i:i + CHUNK])
            finally:
                os.close(fd)
        except OSError as e:
            run.error(tag, f"writing {key}: {os.strerror(e.errno)} (errno {e.errno})")
            continue
        with run.lock:
            run.acked[key] += 1
        run.count("mount_write")


@guarded
def mount_reader(run, tag, seed):
    rng = random.Random(seed)
    while not run.stop.is_set():
        key = rng.choice(KEYS)
        try:
            data = read_file(run.v.path("app", key))
        except OSError as e:
            run.error(tag, f"reading {key}: {os.strerror(e.errno)} (errno {e.errno})")
            continue
        run.check_read(tag, key, data)
        run.count("mount_read")


@guarded
def cli_writer(run, tag, seed):
    rng = random.Random(seed)
    seq = 0
    while not run.stop.is_set():
        key = rng.choice(KEYS)
        seq += 1
        with run.lock:
            run.attempted[tag] = seq
        r = run.v.cli("set", "app", key, input=make_value(tag, seq, MAX_LEN))
        if r.returncode != 0:
            run.error(tag, f"vaultfs set {key}: exit {r.returncode}: "
                           f"{r.stderr.decode(errors='replace').strip()}")
            continue
        with run.lock:
            run.acked[key] += 1
        run.count("cli_set")


@guarded
def cli_reader(run, tag, seed):
    rng = random.Random(seed)
    while not run.stop.is_set():
        key = rng.choice(KEYS)
        r = run.v.cli("get", "app", key)
        if r.returncode != 0:
            run.error(tag, f"vaultfs get {key}: exit {r.returncode}: "
                           f"{r.stderr.decode(errors='replace').strip()}")
            continue
        run.check_read(tag, key, r.stdout)
        run.count("cli_get")


def version_monitor(run, con, start):
    """Samples every key's version straight from the database: none may go
    back, whatever the interleaving."""
    last = dict(start)
    while not run.stop.is_set():
        try:
            now = versions(con)
        except sqlite3.Error as e:
            run.error("monitor", f"sqlite3: {e}")
            time.sleep(0.05)
            continue
        for k, ver in now.items():
            if ver < last.get(k, 0):
                run.error("monitor", f"{k}: version went back from {last[k]} to {ver}")
            last[k] = ver
        run.count("version_samples")
        time.sleep(0.01)


def test_writers_and_readers_through_mount_and_cli(vault):
    v = vault
    os.mkdir(v.path("app"))
    for k in KEYS:
        with open(v.path("app", k), "wb") as f:
            f.write(make_value("init", 0, MAX_LEN))
    run = Run(v)
    run.attempted["init"] = 0
    con = sqlite3.connect(v.db, timeout=30, check_same_thread=False)
    start = versions(con)
    assert sorted(start) == KEYS
    threads = []
    for kind, n, fn in (("mw", MOUNT_WRITERS, mount_writer), ("mr", MOUNT_READERS, mount_reader),
                        ("cw", CLI_WRITERS, cli_writer), ("cr", CLI_READERS, cli_reader)):
        for i in range(n):
            threads.append(threading.Thread(target=fn, args=(run, f"{kind}{i}", f"{kind}{i}"),
                                            name=f"{kind}{i}", daemon=True))
    threads.append(threading.Thread(target=version_monitor, args=(run, con, start),
                                    name="monitor", daemon=True))
    for t in threads:
        t.start()
    try:
        time.sleep(DURATION)
    finally:
        run.stop.set()
    stuck = join_all(threads, GRACE)
    if stuck:
        stacks = daemon_stacks(v.worker_pid())
        # Unblock the workers: with the daemon gone their calls fail at once.
        v.proc.kill()
        v.proc.wait()
        pytest.fail(f"deadlock: {[t.name for t in stuck]} still busy {GRACE}s after the "
                    f"run ended; daemon threads:\n{stacks}")
    final = versions(con)
    con.close()
    report("concurrency", seconds=DURATION, writers=MOUNT_WRITERS + CLI_WRITERS,
           readers=MOUNT_READERS + CLI_READERS, sanitized=int(SANITIZED), errors=len(run.errors),
           **run.ops)
    busy = [e for e in run.errors if "busy" in e.lower() or "locked" in e.lower()]
    assert not busy, "a user was told the database was busy:\n" + "\n".join(busy)
    assert not run.errors, "errors reached users:\n" + "\n".join(run.errors)
    for k in KEYS:
        assert final[k] == start[k] + run.acked[k], (
            f"{k}: {run.acked[k]} acknowledged writes, but its version went from "
            f"{start[k]} to {final[k]}: an update was lost or doubled")
        # the mount and the CLI agree on the last value, and it is whole
        via_mount = read_file(v.path("app", k))
        assert via_mount == v.get("app", k)
        parse_value(via_mount, MAX_LEN)
    assert run.ops["mount_write"] > 0 and run.ops["cli_set"] > 0
    assert run.ops["mount_read"] > 0 and run.ops["cli_get"] > 0
    assert integrity_check(v.db) == ["ok"]
    audit = audit_verify(v)
    assert audit.returncode == 0, audit.stdout.decode(errors="replace")


def test_child_closing_an_inherited_descriptor_does_not_commit(vault):
    """A thread writes a value in pieces while another forks and runs a
    program: the child gets a copy of the descriptor and closes it (at exec,
    or at exit). Readers must not see the half-written value, and only the
    writer's own close() commits."""
    v = vault
    os.mkdir(v.path("app"))
    k = v.path("app", "K")
    with open(k, "wb") as f:
        f.write(b"old")
    fd = os.open(k, os.O_WRONLY | os.O_TRUNC)
    try:
        subprocess.run(["/bin/true"], check=True)        # before the first write
        assert read_file(k) == b"old", "a child's close committed the truncation"
        os.write(fd, b"first-half-")
        subprocess.run(["/bin/true"], check=True)                # closed at exec
        os.set_inheritable(fd, True)
        subprocess.run(["/bin/true"], check=True, pass_fds=(fd,))  # closed at exit
        assert read_file(k) == b"old", "a half-written value became visible"
        assert v.get("app", "K") == b"old"
        os.write(fd, b"second-half")
    finally:
        os.close(fd)
    assert read_file(k) == b"first-half-second-half"
    assert v.get("app", "K") == b"first-half-second-half"


VERIFY_LOOPS = 200


def test_audit_verify_never_cries_wolf_on_a_live_vault(vault):
    """`vaultfs audit --verify` run over and over while shells rotate keys
    and readers read them (each read and write adds entries): every run
    says the chain is intact, since anchor, entries and head come from one
    snapshot. A real break made afterwards is still reported."""
    v = vault
    os.mkdir(v.path("app"))
    for k in KEYS:
        with open(v.path("app", k), "wb") as f:
            f.write(make_value("init", 0, MAX_LEN))
    run = Run(v)
    run.attempted["init"] = 0

    @guarded
    def shell_writer(run, tag, seed):
        rng = random.Random(seed)
        seq = 0
        while not run.stop.is_set():
            key, seq = rng.choice(KEYS), seq + 1
            with run.lock:
                run.attempted[tag] = seq
            r = subprocess.run(["sh", "-c", 'v=$(cat); printf %s "$v" > "$1"', "sh",
                                v.path("app", key)], input=make_value(tag, seq, MAX_LEN),
                               stderr=subprocess.PIPE, timeout=30)
            if r.returncode != 0:
                run.error(tag, f"sh > {key}: {r.stderr.decode(errors='replace')}")
            run.count("mount_write")

    threads = [threading.Thread(target=shell_writer, args=(run, f"sw{i}", i), daemon=True)
               for i in range(2)]
    threads += [threading.Thread(target=mount_reader, args=(run, f"mr{i}", i), daemon=True)
                for i in range(2)]
    for t in threads:
        t.start()
    verdicts = []
    try:
        for _ in range(VERIFY_LOOPS):
            r = audit_verify(v)
            verdicts.append((r.returncode, r.stdout.decode(errors="replace").strip(),
                             r.stderr.decode(errors="replace").strip()))
    finally:
        run.stop.set()
    assert not join_all(threads, GRACE)
    assert not run.errors, "\n".join(run.errors)
    assert run.ops["mount_write"] > 0 and run.ops["mount_read"] > 0, run.ops
    false_alarms = [vd for vd in verdicts if vd[0] != 0 or not vd[1].startswith("audit log intact")]
    assert len(verdicts) == VERIFY_LOOPS
    assert not false_alarms, f"{len(false_alarms)} of {VERIFY_LOOPS} runs: {false_alarms[:3]}"
    # the entries did grow while it ran: the runs saw different chains
    assert len({vd[1] for vd in verdicts}) > 10, verdicts[-1]
    # and a real cut is still found
    v.unmount()
    con = sqlite3.connect(v.db)
    with con:
        mid = con.execute("SELECT seq FROM audit ORDER BY seq LIMIT 1 OFFSET 5").fetchone()[0]
        con.execute("DELETE FROM audit WHERE seq = ?", (mid,))
    con.close()
    r = audit_verify(v)
    assert r.returncode == 1 and f"BROKEN at entry {mid}" in r.stdout.decode(), r.stdout
