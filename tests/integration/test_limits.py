"""Names that must be refused and values that are too large."""
import errno
import os
import shutil
import subprocess

import pytest

from conftest import errname, oserror, read_file, write_file

MIB = 1024 * 1024

BAD_NAMES = ["a b", "x:y", "\u00fc", "tab\there", "semi;colon", "star*", "new\nline",
             "quote'", "back\\slash", "dollar$"]


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_bad_key_name_einval(vault, name):
    os.mkdir(vault.path("app"))
    e = oserror(write_file, vault.path("app", name), b"v")
    assert e == errno.EINVAL, f"creating key {name!r}: expected EINVAL, got {errname(e)}"
    assert os.listdir(vault.path("app")) == []


@pytest.mark.parametrize("name", ["a b", "x:y", "\u00fc"], ids=repr)
def test_bad_instance_name_einval(vault, name):
    e = oserror(os.mkdir, vault.path(name))
    assert e == errno.EINVAL, f"mkdir {name!r}: expected EINVAL, got {errname(e)}"
    assert os.listdir(vault.mnt) == []


def test_rename_to_bad_name_einval(vault):
    os.mkdir(vault.path("app"))
    write_file(vault.path("app", "K"), b"v")
    e = oserror(os.rename, vault.path("app", "K"), vault.path("app", "bad name"))
    assert e == errno.EINVAL, errname(e)
    assert os.listdir(vault.path("app")) == ["K"]
    assert read_file(vault.path("app", "K")) == b"v"


def test_name_length_limits(vault):
    os.mkdir(vault.path("app"))
    n255 = "k" * 255
    write_file(vault.path("app", n255), b"long-name-value")
    assert os.listdir(vault.path("app")) == [n255]
    assert read_file(vault.path("app", n255)) == b"long-name-value"
    assert vault.get("app", n255) == b"long-name-value"
    # 256 bytes: "File name too long", as on any other filesystem (FUSE
    # passes names up to 1024 bytes to the daemon, which must say so).
    e = oserror(write_file, vault.path("app", "k" * 256), b"v")
    assert e == errno.ENAMETOOLONG, errname(e)
    assert os.listdir(vault.path("app")) == [n255]
    e = oserror(os.mkdir, vault.path("i" * 256))
    assert e == errno.ENAMETOOLONG, errname(e)
    e = oserror(os.rename, vault.path("app", n255), vault.path("app", "r" * 256))
    assert e == errno.ENAMETOOLONG, errname(e)
    r = vault.cli("set", "app", "k" * 256, input=b"v")
    assert r.returncode != 0, "the CLI refuses a 256-byte name too"
    i255 = "i" * 255
    os.mkdir(vault.path(i255))
    assert sorted(os.listdir(vault.mnt)) == sorted(["app", i255])


def test_allowed_alphabet(vault):
    os.mkdir(vault.path("my-app_1.prod"))
    names = ["A", "z", "0", "a.b", "A_B-c.9", "..x", ".hidden", "-dash"]
    for n in names:
        write_file(vault.path("my-app_1.prod", n), n)
    assert sorted(os.listdir(vault.path("my-app_1.prod"))) == sorted(names)
    for n in names:
        assert read_file(vault.path("my-app_1.prod", n)) == n.encode()


@pytest.mark.parametrize("args", [("app", "a b"), ("app", "x:y"), ("bad inst", "K"),
                                  ("app", "x/y"), ("app", ".."), ("app", "")], ids=repr)
def test_cli_set_bad_names_refused(vault_unmounted, args):
    v = vault_unmounted
    r = v.cli("set", *args, input=b"v")
    assert r.returncode != 0, f"vaultfs set {args!r} must be refused"
    assert r.stderr.decode().startswith("vaultfs: ")
    assert "bad inst" not in v.cli("ls").stdout.decode(), "no instance was created"


def write_all(path, data, flags=os.O_WRONLY | os.O_CREAT | os.O_TRUNC):
    """Writes data in one handle; returns (errno of the first failing write or
    None, errno of close or None)."""
    fd = os.open(path, flags, 0o600)
    werr = None
    try:
        off = 0
        while off < len(data):
            off += os.write(fd, data[off:])
    except OSError as e:
        werr = e.errno
    cerr = None
    try:
        os.close(fd)
    except OSError as e:
        cerr = e.errno
    return werr, cerr


def test_oversized_value_efbig_keeps_old(vault):
    os.mkdir(vault.path("app"))
    p = vault.path("app", "BIG")
    write_file(p, b"old-value")
    werr, cerr = write_all(p, b"x" * (MIB + 1))
    assert werr == errno.EFBIG, f"writing 1 MiB + 1 byte: expected EFBIG, got {errname(werr)}"
    assert read_file(p) == b"old-value", \
        "the failing handle must not commit a partial or truncated value"
    assert vault.get("app", "BIG") == b"old-value"
    assert os.stat(p).st_size == len(b"old-value")


def test_value_at_limit_accepted(vault):
    os.mkdir(vault.path("app"))
    p = vault.path("app", "MAX")
    data = bytes(range(256)) * (MIB // 256)
    werr, cerr = write_all(p, data)
    assert (werr, cerr) == (None, None), (errname(werr), errname(cerr))
    assert os.stat(p).st_size == MIB
    assert read_file(p) == data


def test_shell_redirect_oversized_fails(vault):
    os.mkdir(vault.path("app"))
    p = vault.path("app", "BIG")
    write_file(p, b"keep-me")
    r = subprocess.run(["/bin/sh", "-c", f"head -c {2 * MIB} /dev/zero > {p}"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert r.returncode != 0, "the user must see the write fail"
    assert b"too large" in r.stderr.lower() or b"file too large" in r.stderr.lower(), r.stderr
    # `>` opened with O_TRUNC, but the failed handle must not commit anything.
    assert read_file(p) == b"keep-me"


def test_append_past_limit_efbig(vault):
    os.mkdir(vault.path("app"))
    p = vault.path("app", "GROW")
    write_file(p, b"a" * (MIB - 10))
    werr, _ = write_all(p, b"b" * 20, flags=os.O_WRONLY | os.O_APPEND)
    assert werr == errno.EFBIG, errname(werr)
    assert read_file(p) == b"a" * (MIB - 10)


def test_truncate_past_limit_efbig(vault):
    os.mkdir(vault.path("app"))
    p = vault.path("app", "T")
    write_file(p, b"small")
    e = oserror(os.truncate, p, 2 * MIB)
    assert e == errno.EFBIG, f"truncate -s 2M: expected EFBIG, got {errname(e)}"
    assert read_file(p) == b"small"


def test_cli_set_oversized_refused(vault_unmounted):
    v = vault_unmounted
    v.set("app", "K", b"old")
    r = v.cli("set", "app", "K", input=b"x" * (MIB + 1))
    assert r.returncode != 0, "vaultfs set with a value over the limit must fail"
    assert r.stderr.decode().startswith("vaultfs: ")
    assert v.get("app", "K") == b"old"


CONFIG_1K = """\
[vault]
max_value_size = 1K
"""


def test_max_value_size_from_config(vault_factory):
    v = vault_factory(config=CONFIG_1K)
    os.mkdir(v.path("app"))
    p = v.path("app", "K")
    assert write_all(p, b"y" * 1024) == (None, None)
    assert read_file(p) == b"y" * 1024
    werr, _ = write_all(p, b"z" * 1025)
    assert werr == errno.EFBIG, errname(werr)
    assert read_file(p) == b"y" * 1024
    r = v.cli("set", "app", "K", input=b"z" * 1025)
    assert r.returncode != 0, "the CLI honours the configured limit too"


def test_max_value_size_plain_bytes(vault_factory):
    v = vault_factory(config="[vault]\nmax_value_size = 100\n")
    os.mkdir(v.path("app"))
    p = v.path("app", "K")
    assert write_all(p, b"y" * 100) == (None, None)
    werr, _ = write_all(p, b"z" * 101)
    assert werr == errno.EFBIG, errname(werr)
    assert read_file(p) == b"y" * 100


def fill_up(path):
    """Writes a file until the filesystem is full."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError as e:
        assert e.errno == errno.ENOSPC, errname(e.errno)
    finally:
        os.close(fd)


def test_disk_full_commit_fails_at_close(vault_factory):
    """A commit that fails (disk full) is reported by close(); the old value stays."""
    v = vault_factory(mount=False)
    v.set("app", "K", b"old-value")
    small = os.path.join(v.dir, "small")
    os.mkdir(small, 0o700)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4M,mode=0700", "tmpfs", small],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stdout.decode()}")
    try:
        db = os.path.join(small, "vault.db")
        shutil.copy2(v.db, db)
        v.db = db
        v.mount()
        assert read_file(v.path("app", "K")) == b"old-value"
        fill_up(os.path.join(small, "filler"))

        fd = os.open(v.path("app", "K"), os.O_WRONLY | os.O_TRUNC)
        os.write(fd, b"N" * 20000)
        e = oserror(os.close, fd)
        assert e == errno.ENOSPC, f"close() must report the failed commit: {errname(e)}"
        assert read_file(v.path("app", "K")) == b"old-value"
        r = v.cli("set", "app", "K", input=b"M" * 20000)
        assert r.returncode != 0, "vaultfs set on a full disk must fail"
        assert v.get("app", "K") == b"old-value"

        os.unlink(os.path.join(small, "filler"))
        write_file(v.path("app", "K"), b"after-space-freed")
        assert read_file(v.path("app", "K")) == b"after-space-freed"
    finally:
        try:
            if v.proc is not None:
                v.unmount()
        finally:
            subprocess.run(["umount", "-l", small])
