"""The daemon's own protection: no core dumps, not dumpable, values only in
locked memory within a budget, and running as an unprivileged user once
mounted."""
import errno
import os
import resource
import signal
import stat

import pytest

from conftest import (VAULTFS_BIN, bg_mount, oserror, read_file, read_text, stop_process,
                      wait_for, write_file)


def _sanitized():
    with open(VAULTFS_BIN, "rb") as f:
        return b"__asan_init" in f.read()


# ASan's mlock() does nothing and reports success: nothing to see in VmLck,
# and no limit to run into.
needs_real_mlock = pytest.mark.skipif(_sanitized(), reason="ASan build: mlock() is a no-op")


def status(pid):
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            fields[k] = v.split()
    return fields


def vmlck_kb(pid):
    return int(status(pid)["VmLck"][0])


def core_limit(pid):
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max core file size"):
                return line.split()[4:6]
    raise AssertionError("no core limit line")


def mount_options(mnt):
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == mnt:
                return fields[-1].split(",")
    raise AssertionError(f"{mnt} not in mountinfo")


def test_no_core_dumps(vault):
    assert core_limit(vault.proc.pid) == ["0", "0"], "RLIMIT_CORE soft and hard are 0"


def own_db(v, user):
    for p in v.db_files():
        if os.path.exists(p):
            os.chown(p, user, -1)


@pytest.fixture
def dropped(users, vault_factory):
    v = vault_factory(config=f"[vault]\nuser = {users.name['alice']}\n"
                             "[instance app]\nmode = 0755\nsecret_mode = 0644\n", mount=False)
    own_db(v, users.uid["alice"])
    v.mount()
    return v


def test_runs_as_user_without_capabilities(users, dropped):
    v = dropped
    # The serving process: the holder that keeps the connection never
    # loads a key and stays root to unmount.
    pid = v.worker_pid()
    st = status(pid)
    uid, gid = str(users.uid["alice"]), str(users.gid["alice"])
    assert st["Uid"] == [uid] * 4, "real, effective, saved and fs uid are the user's"
    assert st["Gid"] == [gid] * 4
    assert st["Groups"] == [], "no supplementary groups kept"
    assert st["CapEff"] == ["0000000000000000"] and st["CapPrm"] == ["0000000000000000"]
    # Every thread, the audit writer started before the change included.
    tasks = os.listdir(f"/proc/{pid}/task")
    assert len(tasks) > 1
    for tid in tasks:
        assert status(f"{pid}/task/{tid}")["Uid"] == [uid] * 4, tid
    # Not dumpable: /proc/PID files of a non-dumpable process belong to root,
    # even though this one runs as the user. (The kernel also resets the flag
    # when uids change; tests/unit/test_harden.c covers cli_harden() itself.)
    assert os.stat(f"/proc/{pid}/status").st_uid == 0
    assert os.stat(f"/proc/{pid}/environ").st_uid == 0
    r = users.run("alice", ["cat", f"/proc/{pid}/environ"])
    assert r.returncode != 0, "the user itself can't read the daemon's memory maps or environ"
    assert core_limit(pid) == ["0", "0"]
    # Mounted by the holder, as root: root owns the mount.
    opts = mount_options(v.mnt)
    assert "default_permissions" in opts and "allow_other" in opts
    assert "user_id=0" in opts
    # And it serves: writes land in the user's database.
    write_file(v.path("app", "K"), b"v")
    assert read_file(v.path("app", "K")) == b"v"
    assert users.try_open("bob", v.path("app", "K")) == "OK:v"
    assert os.stat(v.db).st_uid == users.uid["alice"]


def test_sigterm_unmounts_as_user(dropped):
    v = dropped
    proc, v.proc = v.proc, None
    assert stop_process(proc, signal.SIGTERM) == 0, read_text(v.log_path)
    assert wait_for(lambda: not os.path.ismount(v.mnt), 5.0), \
        "SIGTERM to the holder unmounted the mount of a daemon running as the user"
    v.check_log(read_text(v.log_path))


def test_service_user_cannot_unmount(users, dropped):
    """The mount root started is root's: the `user =` account that serves
    it can't take it away from every reader with fusermount3 -u."""
    v = dropped
    write_file(v.path("app", "K"), b"kept")
    r = users.run("alice", ["fusermount3", "-u", v.mnt])
    assert r.returncode != 0, "the service account unmounted root's mount"
    assert os.path.ismount(v.mnt)
    assert read_file(v.path("app", "K")) == b"kept"


def test_refuses_database_of_another_owner(users, vault_factory):
    v = vault_factory(config=f"[vault]\nuser = {users.name['alice']}\n", mount=False)
    r = bg_mount([VAULTFS_BIN, "mount", "--config", v.config, "--db", v.db, "--key-file",
                  v.key, v.mnt])
    assert r.returncode != 0 and not os.path.ismount(v.mnt)
    err = r.stderr.decode()
    assert f"vaultfs: {v.db} is owned by uid 0; with user = {users.name['alice']} it must " \
           f"belong to that user (chown {users.name['alice']} {v.db}*)" in err, err


@needs_real_mlock
def test_locked_memory_while_open(vault):
    v = vault
    os.mkdir(v.path("app"))
    pid = v.worker_pid()
    write_file(v.path("app", "BIG"), os.urandom(256 * 1024))
    # Only keys stay locked between opens: a few pages. (release reaches the
    # daemon just after close() returns.)
    assert wait_for(lambda: vmlck_kb(pid) < 128, 5.0), vmlck_kb(pid)
    before = vmlck_kb(pid)
    with open(v.path("app", "BIG"), "rb") as f:
        during = vmlck_kb(pid)
        assert len(f.read()) == 256 * 1024
    assert during >= before + 256, f"VmLck {before} kB -> {during} kB while open"
    assert wait_for(lambda: vmlck_kb(pid) <= before, 5.0), (before, vmlck_kb(pid))


BUDGET_CONFIG = "[vault]\nmemlock_budget = 96K\n"


def test_budget_too_small_fails_cleanly(vault_factory):
    v = vault_factory(mount=False)
    v.set("app", "BIG", os.urandom(200 * 1024))
    v.set("app", "SMALL", b"small")
    v.config = v.write_config(BUDGET_CONFIG)
    v.mount()
    for _ in range(20):
        assert oserror(read_file, v.path("app", "BIG")) == errno.ENOMEM
    # The daemon keeps serving, and refused opens gave back what they took.
    for _ in range(20):
        assert read_file(v.path("app", "SMALL")) == b"small"
    log = read_text(v.log_path)
    assert "app/BIG: cannot lock memory for the value" in log and "open refused" in log
    # Writing a value too big for the budget fails too, and keeps the old one.
    assert oserror(write_file, v.path("app", "SMALL"), os.urandom(200 * 1024)) == errno.ENOMEM
    assert read_file(v.path("app", "SMALL")) == b"small"


@needs_real_mlock
def test_mlock_failure_after_drop(users, vault_factory):
    v = vault_factory(config=f"[vault]\nuser = {users.name['alice']}\n", mount=False)
    v.set("app", "BIG", os.urandom(512 * 1024))
    v.set("app", "SMALL", b"small")
    own_db(v, users.uid["alice"])
    # The daemon inherits a small RLIMIT_MEMLOCK; as root it is not bound by
    # it, as the user it is: mlock itself fails, not our budget.
    old = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    resource.setrlimit(resource.RLIMIT_MEMLOCK, (256 * 1024, old[1]))
    try:
        v.mount()
    finally:
        resource.setrlimit(resource.RLIMIT_MEMLOCK, old)
    assert oserror(read_file, v.path("app", "BIG")) == errno.ENOMEM
    assert read_file(v.path("app", "SMALL")) == b"small"
    assert "app/BIG: cannot lock memory" in read_text(v.log_path)


def test_upgrade_and_crash_keep_the_user(users, dropped):
    """A worker started by the holder after a crash or an upgrade drops to
    the user = account too, and the mount stays root's."""
    from conftest import run, serving_pid_changed
    v = dropped
    write_file(v.path("app", "K"), b"kept")
    old = v.worker_pid()
    os.kill(old, signal.SIGKILL)
    new = serving_pid_changed(v, old)
    r = run([VAULTFS_BIN, "reload", "--upgrade", v.mnt])
    assert r.returncode == 0, r.stderr.decode()
    newer = serving_pid_changed(v, new)
    assert status(newer)["Uid"] == [str(users.uid["alice"])] * 4
    assert users.try_open("bob", v.path("app", "K")) == "OK:kept"
    assert "user_id=0" in mount_options(v.mnt)
