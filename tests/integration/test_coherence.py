"""Seeing changes: stat after a write through the mount, and after a change
made with the CLI while mounted."""
import os
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
