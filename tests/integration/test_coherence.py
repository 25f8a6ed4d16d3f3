"""Seeing changes: stat after a write through the mount, and after a change
made with the CLI while mounted."""
import os
import subprocess
import time

from conftest import write_file


def test_stat_right_after_close_sees_the_write(vault):
    os.mkdir(vault.path("app"))
    p = vault.path("app", "K")
    write_file(p, "abc")
    assert os.stat(p).st_size == 3
    fd = os.open(p, os.O_WRONLY | os.O_TRUNC)
    os.write(fd, b"0123456789")
    # The kernel asks now and caches what is stored: the old size.
    os.fstat(fd)
    os.close(fd)
    st = os.stat(p)
    assert st.st_size == 10, "the size cached before the commit must not be shown"
    assert os.getxattr(p, "user.vaultfs.version") == b"2"
    # The same when the stored value is shorter than what was written.
    fd = os.open(p, os.O_WRONLY | os.O_TRUNC)
    os.write(fd, b"xy\n")
    os.fstat(fd)
    os.close(fd)
    assert os.stat(p).st_size == 2, "one trailing newline is not stored"
    assert os.stat(p).st_mtime_ns >= st.st_mtime_ns


def test_cli_change_shows_within_attr_timeout(vault_factory):
    v = vault_factory(config="[vault]\nattr_timeout = 0.3\n")
    os.mkdir(v.path("app"))
    p = v.path("app", "K")
    write_file(p, "short")
    before = os.stat(p)
    assert before.st_size == 5
    v.set("app", "K", "a much longer value")
    time.sleep(0.6)     # twice the configured timeout
    after = os.stat(p)
    assert after.st_size == 19
    assert after.st_mtime_ns > before.st_mtime_ns


def test_cli_change_shows_at_once_with_no_attr_timeout(vault_factory):
    v = vault_factory(config="[vault]\nattr_timeout = 0\n")
    os.mkdir(v.path("app"))
    p = v.path("app", "K")
    write_file(p, "short")
    assert os.stat(p).st_size == 5
    v.set("app", "K", "longer value")
    assert os.stat(p).st_size == 12
    assert v.cli("rm", "app", "K").returncode == 0
    assert not os.path.exists(p)


def test_stat_right_after_a_shell_writes_sees_the_commit(vault):
    """`cmd > key; stat key` shows the value just stored: its size and a
    newer mtime, for a rotation, a truncation, a new key, and a writer
    whose key was chmodded while it wrote."""
    os.mkdir(vault.path("app"))
    p = vault.path("app", "K")

    def sh(cmd):
        subprocess.run(["sh", "-c", cmd], check=True)

    sh("printf 'first value' > %s" % p)
    first = os.stat(p)
    assert first.st_size == 11
    sh("printf 'xy\\n' > %s" % p)
    second = os.stat(p)
    assert second.st_size == 2, "one trailing newline is not stored"
    assert second.st_mtime_ns > first.st_mtime_ns
    sh(": > %s" % p)
    third = os.stat(p)
    assert third.st_size == 0
    assert third.st_mtime_ns > second.st_mtime_ns
    sh("printf new > %s" % vault.path("app", "N"))
    assert os.stat(vault.path("app", "N")).st_size == 3
    # Attributes sent while the value is being written (the chmod's reply)
    # are older than the commit: stat after the close sees the commit.
    fd = os.open(p, os.O_WRONLY | os.O_TRUNC)
    os.write(fd, b"abcd")
    os.chmod(p, 0o640)
    os.close(fd)
    fourth = os.stat(p)
    assert (fourth.st_size, fourth.st_mode & 0o777) == (4, 0o640)
    assert fourth.st_mtime_ns > third.st_mtime_ns
    with open(p) as f:
        assert f.read() == "abcd"


def test_an_open_right_after_a_change_elsewhere_reads_the_change(vault):
    """The daemon keeps the rows its opens read while the database has not
    moved; a change made by another process moves it, so the very next
    open reads the new value, and a removed key is gone, with no wait."""
    os.mkdir(vault.path("app"))
    p = vault.path("app", "K")
    write_file(p, "one")
    for _ in range(3):
        with open(p) as f:
            assert f.read() == "one"
    for value in ("two", "three", "four"):
        vault.set("app", "K", value)
        with open(p) as f:
            assert f.read() == value, "an open after the change read the old value"
    assert vault.cli("rm", "app", "K").returncode == 0
    try:
        with open(p) as f:
            got = f.read()
    except FileNotFoundError:
        got = None
    assert got is None, f"a removed key still read {got!r}"
