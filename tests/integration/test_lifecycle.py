"""Mounting and unmounting: foreground, background, signals, mount options."""
import errno
import os
import signal
import time

import pytest

from conftest import (VAULTFS_BIN, bg_mount, oserror, read_file, run, stop_process,
                      wait_for, worker_pids, write_file)


def daemon_pids(mnt):
    r = run(["pgrep", "-f", mnt])
    return [int(p) for p in r.stdout.split()]


def holder_pids(mnt):
    """`vaultfs mount` processes for mnt that are not workers: the holders."""
    return [p for p in daemon_pids(mnt)
            if b"--worker=" not in open(f"/proc/{p}/cmdline", "rb").read()]


def mount_options(mnt):
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == mnt:
                sep = fields.index("-")
                return set(fields[5].split(",")) | set(fields[sep + 3].split(",")), \
                    fields[sep + 1]
    return None, None


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_signal_unmounts_and_exits_0(vault, sig):
    v = vault
    os.mkdir(v.path("app"))
    write_file(v.path("app", "K"), b"v")
    proc, v.proc = v.proc, None
    rc = stop_process(proc, sig)
    assert rc == 0, f"daemon exit status after {sig.name}: {rc}; log:\n{v.log()}"
    assert not os.path.ismount(v.mnt), f"{sig.name} must unmount"
    v.check_log(v.log())
    assert v.get("app", "K") == b"v"


def test_foreground_mount_options(vault):
    opts, fstype = mount_options(vault.mnt)
    assert opts is not None
    assert fstype.startswith("fuse"), fstype
    assert "allow_other" in opts and "default_permissions" in opts, \
        f"as root the default is allow_other,default_permissions: {opts}"


def test_background_mount_returns_once_mounted(vault_unmounted):
    v = vault_unmounted
    v.set("app", "K", b"bg-value")
    u = None
    try:
        r = bg_mount([VAULTFS_BIN, "mount", "--db", v.db, "--key-file", v.key, v.mnt])
        mounted = os.path.ismount(v.mnt)
        assert r.returncode == 0, r.stderr
        assert mounted, "vaultfs mount must return only once the mount is in place"
        assert read_file(v.path("app", "K")) == b"bg-value"
        pids = daemon_pids(v.mnt)
        holders = holder_pids(v.mnt)
        assert len(holders) == 1, f"one holder keeps the mount: {pids}"
        assert worker_pids(holders[0]) == [p for p in pids if p != holders[0]], \
            f"and one worker, its child, serves it: {pids}"
    finally:
        if os.path.ismount(v.mnt):
            u = run(["fusermount3", "-u", v.mnt])
    assert u is not None and u.returncode == 0, u and u.stderr
    assert wait_for(lambda: not daemon_pids(v.mnt), 10), \
        "the background daemon must exit after fusermount3 -u"
    assert not os.path.ismount(v.mnt)


def test_background_daemon_sigterm(vault_unmounted):
    v = vault_unmounted
    try:
        r = bg_mount([VAULTFS_BIN, "mount", "--db", v.db, "--key-file", v.key, v.mnt])
        assert r.returncode == 0, r.stderr
        pids = holder_pids(v.mnt)
        assert len(pids) == 1, pids
        os.kill(pids[0], signal.SIGTERM)
        assert wait_for(lambda: not os.path.ismount(v.mnt) and not daemon_pids(v.mnt), 10), \
            "SIGTERM must unmount and end the background daemon"
    finally:
        if os.path.ismount(v.mnt):
            run(["fusermount3", "-u", v.mnt])


def test_background_mount_errors_reach_the_caller(vault_unmounted):
    v = vault_unmounted
    missing = os.path.join(v.dir, "no-such-dir")
    r = bg_mount([VAULTFS_BIN, "mount", "--db", v.db, "--key-file", v.key, missing])
    assert r.returncode != 0, "a mount that cannot happen must fail in the caller"
    assert r.stderr.decode().startswith("vaultfs: ")
    assert not daemon_pids(missing)


def test_mount_missing_db_refused_and_not_created(vault_unmounted):
    v = vault_unmounted
    db = os.path.join(v.dir, "missing.db")
    try:
        r = bg_mount([VAULTFS_BIN, "mount", "--db", db, "--key-file", v.key, v.mnt])
        mounted = os.path.ismount(v.mnt)
    finally:
        if os.path.ismount(v.mnt):
            run(["fusermount3", "-u", v.mnt])
    assert not mounted
    assert r.returncode != 0
    assert r.stderr.decode().startswith("vaultfs: ")
    assert not os.path.exists(db), "mount must not create an empty vault"


def test_mount_ro_option(vault_factory):
    v = vault_factory(mount=False, mount_args=["-o", "ro"])
    v.set("app", "K", b"v")
    v.mount()
    assert read_file(v.path("app", "K")) == b"v"
    assert oserror(write_file, v.path("app", "K"), b"x") == errno.EROFS
    assert oserror(os.unlink, v.path("app", "K")) == errno.EROFS
    assert v.get("app", "K") == b"v"


def test_committed_value_survives_kill_9(vault):
    v = vault
    os.mkdir(v.path("app"))
    write_file(v.path("app", "K"), b"durable-after-close")
    proc, v.proc = v.proc, None
    proc.kill()
    proc.wait(timeout=10)
    r = run(["fusermount3", "-u", "-z", v.mnt])
    assert r.returncode == 0, r.stderr
    v.check_log(v.log())
    assert v.get("app", "K") == b"durable-after-close", \
        "a close() that returned 0 must survive kill -9 of the daemon"
    v.mount()
    assert read_file(v.path("app", "K")) == b"durable-after-close"


def test_unmount_with_idle_mount_exits_quickly(vault):
    t0 = time.monotonic()
    vault.unmount()
    assert time.monotonic() - t0 < 5


def test_cli_debug_log_has_no_values(vault_factory):
    """The daemon log, even in foreground mode, never holds a value."""
    v = vault_factory()
    os.mkdir(v.path("app"))
    write_file(v.path("app", "K"), b"LOGCHECK-7f3a9c")
    read_file(v.path("app", "K"))
    v.unmount()
    assert "LOGCHECK-7f3a9c" not in v.log()
