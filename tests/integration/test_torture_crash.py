"""Crash durability: SIGKILL the daemon at random moments while values are
being written, many times over, and check after each kill that nothing a
caller was told is stored has been lost or damaged.

What a user relies on: once close() (or fsync(), or rename()) on the mount
returned 0, or `vaultfs set` exited 0, the value is there after any crash,
whole, and so is its audit entry; a key never holds half of one value and
half of another; a new key whose creator was not told it is stored is
either absent or whole, never empty; the database passes integrity_check
and the audit log's hash chain verifies.
"""
import json
import os
import random
import signal
import threading
import time


from conftest import force_unmount, read_file, wait_for
from torture import (Gate, audit_verify, integrity_check, make_value, parse_value,
                     report, scaled, SANITIZED)

KILLS = scaled(50, minimum=50)
CHUNK = 8192
IDLE_TIMEOUT = 30.0
PROGRESS_TIMEOUT = 20.0


class Key:
    """What the writers of one key were told, and so what it may hold."""

    def __init__(self, name):
        self.name = name
        self.acked = None          # last seq whose write was acknowledged
        self.unacked = set()       # attempts after it: each may or may not be in

    def ack(self, seq):
        self.acked = seq
        self.unacked.clear()

    def fail(self, seq):
        self.unacked.add(seq)

    def allowed(self):
        return ({self.acked} if self.acked is not None else set()) | self.unacked


class Writer(threading.Thread):
    """Writes numbered values to its key, one after another."""

    def __init__(self, v, gate, stats, key, how, tag):
        super().__init__(daemon=True)
        self.v, self.gate, self.stats = v, gate, stats
        self.key, self.how, self.tag = key, how, tag
        self.seq = 0
        self.acks = 0
        self.errors = {}
        self.fatal = None
        self.new_acked, self.new_failed = set(), set()   # how == "new": by seq

    def run(self):
        while self.gate.wait_turn():
            self.seq += 1
            try:
                ok = self.attempt(self.seq)
            except OSError as e:
                self.errors[e.errno] = self.errors.get(e.errno, 0) + 1
                ok = False
            except Exception as e:      # a hung CLI, say: the test fails on it
                self.fatal = self.fatal or e
                ok = False
            with self.stats["lock"]:
                self.stats["attempts"] += 1
                if ok:
                    self.stats["acks"] += 1
            if self.how == "new":
                (self.new_acked if ok else self.new_failed).add(self.seq)
                self.acks += ok
            elif ok:
                self.acks += 1
                self.key.ack(self.seq)
            else:
                self.key.fail(self.seq)

    def write_fd(self, path, data, fsync=False):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            for i in range(0, len(data), CHUNK):
                os.write(fd, data[i:i + CHUNK])
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)

    def attempt(self, seq):
        data = make_value(self.tag, seq)
        path = self.v.path("app", self.key.name)
        if self.how == "write":        # echo v > key: acknowledged by close()
            self.write_fd(path, data)
        elif self.how == "fsync":      # acknowledged by fsync(), then close()
            self.write_fd(path, data, fsync=True)
        elif self.how == "new":        # printf v > newkey: a new key each time
            self.write_fd(self.v.path("app", new_name(self.key.name, seq)), data)
        elif self.how == "rename":     # an editor: write a temporary, rename it over
            self.write_fd(path + ".tmp", data)
            os.rename(path + ".tmp", path)
        elif self.how == "cli":        # vaultfs set, beside the mount
            r = self.v.cli("set", "app", self.key.name, input=data)
            if r.returncode != 0:
                err = r.stderr.decode(errors="replace").strip()
                self.errors[err] = self.errors.get(err, 0) + 1
                return False
        return True


def new_name(tag, seq):
    return f"{tag}-{seq}"


def check_new_keys(v, w, since=0):
    """A new key whose close returned 0 holds its value; one whose close did
    not (a kill came first) is absent, or holds its whole value. Those
    numbered since `since` (values are up to 256 KiB: the rest at the end)."""
    for seq in sorted(s for s in w.new_acked | w.new_failed if s >= since):
        path = v.path("app", new_name(w.key.name, seq))
        if seq in w.new_failed and not os.path.exists(path):
            continue
        data = read_file(path)
        assert parse_value(data) == (w.key.name, seq), \
            f"{new_name(w.key.name, seq)} holds {data[:40]!r}"


def check_key(v, key, via):
    data = read_file(v.path("app", key.name)) if via == "mount" else v.get("app", key.name)
    tag, seq = parse_value(data)
    assert tag == key.name, f"{key.name} holds a value written for {tag}"
    assert seq in key.allowed(), (
        f"{key.name} holds value #{seq}, but the last acknowledged write was "
        f"#{key.acked} and only #{sorted(key.unacked)} were in flight since "
        f"(read through the {via})")
    return seq


def audited_writes_cover_acks(v, writers, when):
    """A kill may lose queued reads from the audit log, never a write that
    was acknowledged: each one's entry is committed with the value, so
    every acknowledged write (and the first value #0) has its entry."""
    r = v.cli("audit", "--instance", "app", "--json")
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    entries = [json.loads(line) for line in r.stdout.decode().splitlines() if line.strip()]
    for w in writers:
        if w.how == "rename":
            continue
        if w.how == "new":
            for seq in w.new_acked:
                name = new_name(w.key.name, seq)
                ops = {e.get("op") for e in entries
                       if e.get("key") == name and e.get("result") == "ok"}
                assert {"create", "write"} <= ops, \
                    f"{when}: {name} was acknowledged, but the audit log has only {ops}"
            continue
        logged = sum(e.get("count", 1) for e in entries if e.get("key") == w.key.name and
                     e.get("op") == "write" and e.get("result") == "ok")
        assert logged >= w.acks + 1, (f"{when}: {w.key.name}: {w.acks} acknowledged writes "
                                      f"(and value #0) but only {logged} in the audit log")


def test_sigkill_during_writes_loses_nothing_acknowledged(vault_factory):
    v = vault_factory()
    os.mkdir(v.path("app"))
    keys = [Key(n) for n in ("W1", "W2", "F1", "R1", "C1", "N1")]
    how = {"W1": "write", "W2": "write", "F1": "fsync", "R1": "rename", "C1": "cli",
           "N1": "new"}
    # Every key starts with an acknowledged value #0.
    for k in keys:
        with open(v.path("app", k.name), "wb") as f:
            f.write(make_value(k.name, 0))
        k.ack(0)
    stats = {"lock": threading.Lock(), "attempts": 0, "acks": 0}
    gate = Gate(len(keys))
    writers = [Writer(v, gate, stats, k, how[k.name], k.name) for k in keys]
    for w in writers:
        w.start()
    rng = random.Random(os.environ.get("VAULTFS_TORTURE_SEED") or None)
    recovered = 0
    checked_new = 0
    try:
        for kill in range(KILLS):
            gate.wait_idle(IDLE_TIMEOUT)
            fatal = [w.fatal for w in writers if w.fatal]
            assert not fatal, f"a writer failed: {fatal[0]!r}"
            for k in keys:
                check_key(v, k, "mount")
            for w in writers:
                if w.how == "new":
                    check_new_keys(v, w, since=checked_new)
                    checked_new = w.seq + 1
            if kill % 10 == 0:
                for k in keys:
                    check_key(v, k, "cli")
            before = stats["acks"]
            gate.set_open(True)
            # Most kills land in the middle of writes; some while the daemon
            # is still starting up or idle between requests.
            if rng.random() < 0.85:
                assert wait_for(lambda: stats["acks"] > before, PROGRESS_TIMEOUT), \
                    f"no write was acknowledged within {PROGRESS_TIMEOUT}s of mounting"
                time.sleep(rng.uniform(0, 0.04))
            # The whole daemon dies: the worker that writes, then the holder
            # that would have started another one.
            worker = v.worker_pid()
            proc, v.proc = v.proc, None
            os.kill(worker, signal.SIGKILL)
            proc.kill()
            gate.set_open(False)   # writers finish what they were doing, and rest
            proc.wait()
            assert wait_for(lambda: not os.path.exists(f"/proc/{worker}"), IDLE_TIMEOUT)
            gate.wait_idle(IDLE_TIMEOUT)
            force_unmount(v.mnt)
            assert not os.path.ismount(v.mnt)
            report_lines = integrity_check(v.db)
            assert report_lines == ["ok"], \
                f"after kill {kill + 1}: integrity_check says {report_lines[:5]}"
            audit = audit_verify(v)
            assert audit.returncode == 0, (
                f"after kill {kill + 1}: vaultfs audit --verify failed: "
                f"{audit.stdout.decode(errors='replace')}"
                f"{audit.stderr.decode(errors='replace')}")
            audited_writes_cover_acks(v, writers, f"after kill {kill + 1}")
            v.mount()
            recovered += 1
        gate.wait_idle(IDLE_TIMEOUT)
        for k in keys:
            check_key(v, k, "mount")
            check_key(v, k, "cli")
        for w in writers:
            if w.how == "new":
                check_new_keys(v, w)
        # The temporary file of the rename writer may be left over by a kill:
        # empty (created, nothing written yet) or one whole value of that writer.
        tmp = v.path("app", "R1.tmp")
        if os.path.exists(tmp) and read_file(tmp) != b"":
            tag, _ = parse_value(read_file(tmp))
            assert tag == "R1"
        made = {new_name(w.key.name, s) for w in writers if w.how == "new"
                for s in w.new_acked | w.new_failed}
        names = sorted(os.listdir(v.path("app")))
        assert set(names) <= {k.name for k in keys} | {"R1.tmp"} | made, names
        assert {new_name(w.key.name, s) for w in writers if w.how == "new"
                for s in w.new_acked} <= set(names)
        audited_writes_cover_acks(v, writers, "at the end")
    finally:
        gate.stop()
        for w in writers:
            w.join(IDLE_TIMEOUT)
    failed = {w.key.name: w.errors for w in writers if w.errors}
    new_keys = sum(len(w.new_acked) for w in writers if w.how == "new")
    report("crash", kills=recovered, attempts=stats["attempts"], acknowledged=stats["acks"],
           new_keys=new_keys, sanitized=int(SANITIZED), failed_attempts=failed)
    assert recovered == KILLS
    assert new_keys >= KILLS // 2, "too few new keys were made to test their creation"
    assert stats["acks"] >= KILLS, "the writers made too little progress to test anything"
    v.check_log(v.log())
