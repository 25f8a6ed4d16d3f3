"""The mount point after a daemon dies, and mounting twice."""
import os
import signal
import subprocess

from conftest import VAULTFS_BIN, clean_env, read_file, wait_for, write_file


def test_mount_over_a_live_vault_is_refused(vault):
    os.mkdir(vault.path("app"))
    write_file(vault.path("app", "K"), b"still-here")
    r = vault.cli("mount", vault.mnt)
    assert r.returncode != 0, "a second mount on a live vault must be refused"
    assert b"already a FUSE mount" in r.stderr, r.stderr
    # The first mount keeps serving.
    assert read_file(vault.path("app", "K")) == b"still-here"


def test_restart_after_kill9_detaches_the_dead_mount(vault):
    os.mkdir(vault.path("app"))
    write_file(vault.path("app", "K"), b"acknowledged")
    proc, vault.proc = vault.proc, None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # kill -9 of the holder, which keeps the connection: its worker sees
    # it gone and exits. What a user sees on the dead mount then: ENOTCONN
    # ("Transport endpoint is not connected"); stat may still answer from
    # the attribute cache.
    def dead():
        try:
            os.listdir(vault.mnt)
            return False
        except OSError as e:
            return e.errno == 107  # ENOTCONN
    assert wait_for(dead, 10), "after kill -9 the mount point should answer ENOTCONN"
    # A restart (as systemd's Restart= would do) recovers by itself. The
    # harness's mount() refuses a path that still looks mounted, so start it
    # here and hand the daemon back to the harness for the clean unmount.
    vault.log_path = os.path.join(vault.dir, "daemon-restart.log")
    vault.logs.append(vault.log_path)
    with open(vault.log_path, "wb") as log:
        vault.proc = subprocess.Popen(
            [VAULTFS_BIN, "mount"] + vault.base_opts() + ["-f", vault.mnt],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=clean_env())

    def serving():
        try:
            return "app" in os.listdir(vault.mnt)
        except OSError:
            return False
    assert wait_for(serving, 10), vault.log()
    assert "detached the dead mount" in vault.log(), vault.log()
    assert read_file(vault.path("app", "K")) == b"acknowledged"
