"""The newline policy, and the mount and the CLI seeing each other's changes."""
import errno
import os

from conftest import oserror, read_file, sh, write_file


# -- newline policy ---------------------------------------------------------------

def test_strip_single_trailing_newline_by_default(vault):
    os.mkdir(vault.path("app"))
    p = vault.path("app", "K")
    r = sh(f"echo v > {p}")
    assert r.returncode == 0, r.stderr
    assert read_file(p) == b"v", "echo's newline must not end up in an API key"
    assert os.stat(p).st_size == 1
    assert vault.get("app", "K") == b"v", "vaultfs get adds nothing"
    r = sh(f"printf 'tok\\n' > {p}")
    assert read_file(p) == b"tok"


def test_multiline_kept_byte_for_byte(vault):
    os.mkdir(vault.path("app"))
    p = vault.path("app", "K")
    for value in (b"a\nb\n", b"a\nb", b"two\nlines\n\n", b"\nleading\n"):
        write_file(p, value)
        got = read_file(p)
        assert got == value, f"multi-line {value!r} must be stored as written, got {got!r}"
        assert os.stat(p).st_size == len(value)


def test_no_newline_value_unchanged(vault):
    os.mkdir(vault.path("app"))
    write_file(vault.path("app", "K"), b"no-newline")
    assert read_file(vault.path("app", "K")) == b"no-newline"


def test_cli_set_strips_like_the_mount(vault_unmounted):
    v = vault_unmounted
    v.set("app", "K", b"from-echo\n")
    assert v.get("app", "K") == b"from-echo"
    v.set("app", "PEM", b"l1\nl2\n")
    assert v.get("app", "PEM") == b"l1\nl2\n"


def test_newline_keep_per_instance(vault_factory):
    v = vault_factory(config="[instance raw]\nnewline = keep\n")
    os.mkdir(v.path("other"))
    r = sh(f"echo v > {v.path('raw', 'K')} && echo v > {v.path('other', 'K')}")
    assert r.returncode == 0, r.stderr
    assert read_file(v.path("raw", "K")) == b"v\n", "newline = keep stores every byte"
    assert os.stat(v.path("raw", "K")).st_size == 2
    assert read_file(v.path("other", "K")) == b"v", "other instances keep the default"


def test_newline_keep_for_vault(vault_factory):
    v = vault_factory(config="[vault]\nnewline = keep\n[instance s]\nnewline = strip\n")
    os.mkdir(v.path("app"))
    r = sh(f"echo v > {v.path('app', 'K')} && echo v > {v.path('s', 'K')}")
    assert r.returncode == 0, r.stderr
    assert read_file(v.path("app", "K")) == b"v\n"
    assert read_file(v.path("s", "K")) == b"v", "the instance setting wins"


# -- coherence between the mount and the CLI ----------------------------------------

def test_cli_set_seen_by_next_open(vault):
    os.mkdir(vault.path("app"))
    p = vault.path("app", "K")
    write_file(p, b"v1")
    assert read_file(p) == b"v1"
    os.stat(p)  # the kernel now has the old attributes cached
    vault.set("app", "K", b"v2-longer-than-before")
    assert read_file(p) == b"v2-longer-than-before"
    vault.set("app", "K", b"v3")
    assert read_file(p) == b"v3", "a shorter value must not show a stale tail"


def test_cli_set_new_key_and_instance_appear(vault):
    os.mkdir(vault.path("app"))
    assert os.listdir(vault.path("app")) == []
    vault.set("app", "NEW", b"n")
    assert os.listdir(vault.path("app")) == ["NEW"]
    assert read_file(vault.path("app", "NEW")) == b"n"
    vault.set("created-by-cli", "K", b"c")
    assert "created-by-cli" in os.listdir(vault.mnt), "set creates the instance"
    assert read_file(vault.path("created-by-cli", "K")) == b"c"


def test_mount_write_seen_by_cli(vault):
    os.mkdir(vault.path("app"))
    write_file(vault.path("app", "K"), b"from-mount")
    assert vault.get("app", "K") == b"from-mount"
    write_file(vault.path("app", "K"), b"second")
    assert vault.get("app", "K") == b"second"
    r = vault.cli("ls", "app")
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().split() == ["K"]


def test_cli_rm_seen_by_mount(vault):
    os.mkdir(vault.path("app"))
    p = vault.path("app", "K")
    write_file(p, b"v")
    assert read_file(p) == b"v"
    r = vault.cli("rm", "app", "K")
    assert r.returncode == 0, r.stderr
    assert oserror(read_file, p) == errno.ENOENT
    assert os.listdir(vault.path("app")) == []


def test_mount_rm_seen_by_cli(vault):
    os.mkdir(vault.path("app"))
    write_file(vault.path("app", "K"), b"v")
    os.unlink(vault.path("app", "K"))
    r = vault.cli("get", "app", "K")
    assert r.returncode != 0 and r.stdout == b""


def test_open_handle_keeps_reading_its_snapshot(vault):
    """A reader sees the old value or the new one, never a mix."""
    os.mkdir(vault.path("app"))
    p = vault.path("app", "K")
    write_file(p, b"A" * 4000)
    with open(p, "rb", buffering=0) as f:
        first = f.read(1000)
        vault.set("app", "K", b"B" * 4000)
        rest = f.read()
    whole = first + rest
    assert whole in (b"A" * 4000, b"B" * 4000), "a read must never mix two versions"
    assert read_file(p) == b"B" * 4000


def test_failed_rewrite_keeps_newline_behaviour(vault_factory):
    """A value put back after a failed `cmd > key` still continues as a
    line: appending to it afterwards gives two lines, as before."""
    v = vault_factory(config="[vault]\nmax_value_size = 16\n")
    os.mkdir(v.path("app"))
    k = v.path("app", "K")
    r = sh(f"echo v > {k}; head -c 20 /dev/zero > {k}")
    assert r.returncode != 0 and b"too large" in r.stderr.lower(), r.stderr
    assert read_file(k) == b"v", "the old value is back"
    assert sh(f"echo b >> {k}").returncode == 0
    assert read_file(k) == b"v\nb\n"

