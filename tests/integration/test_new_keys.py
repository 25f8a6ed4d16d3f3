"""A key created through the mount (`cmd > newkey`, cp, an editor's new
file) is stored at its creator's first close, in one transaction with its
first value and the audit entries of both the creation and the write. Until
then it is its creator's alone: the command line and other hosts don't see
it, other readers find no such key, and whatever needs its row first (a
listing, a lookup, chmod) finds it as an empty key that others still can't
read."""
import errno
import json
import os
import stat

from conftest import errname, oserror, read_file, sh


def mkinst(v, name="app"):
    os.mkdir(v.path(name))
    return v.path(name)


def audit_ops(v, key):
    r = v.cli("audit", "--instance", "app", "--json")
    assert r.returncode == 0, r.stderr
    return [(e["op"], e["result"]) for e in map(json.loads, r.stdout.decode().splitlines())
            if e["key"] == key and e["op"] != "read"]


def test_stored_with_its_value_at_the_first_close(vault):
    d = mkinst(vault)
    fd = os.open(f"{d}/NEW", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, b"first-value")
        # What the database holds: no key yet, never an empty one.
        r = vault.cli("get", "app", "NEW")
        assert r.returncode == 1 and b"no such key: app/NEW" in r.stderr, r
        assert b"NEW" not in vault.cli("ls", "app").stdout
    finally:
        os.close(fd)
    assert vault.get("app", "NEW") == b"first-value"
    assert read_file(f"{d}/NEW") == b"first-value"
    # One version, the value; the creation and the write, both audited.
    hist = vault.cli("history", "app", "NEW").stdout.decode().splitlines()
    assert len(hist) == 2 and hist[1].split()[0] == "1", hist
    assert audit_ops(vault, "NEW") == [("create", "ok"), ("write", "ok")]


def test_shell_redirect_and_cp_make_new_keys(vault, tmp_path):
    d = mkinst(vault)
    src = tmp_path / "pem"
    src.write_bytes(b"-----BEGIN KEY-----\nabc\n-----END KEY-----\n")
    r = sh(f"printf 'sk-123' > {d}/A && cp {src} {d}/B && echo x | tee {d}/C >/dev/null "
           f"&& touch {d}/EMPTY && cat {d}/A {d}/B {d}/C {d}/EMPTY")
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"sk-123" + src.read_bytes() + b"x"
    assert sorted(os.listdir(d)) == ["A", "B", "C", "EMPTY"]
    assert os.stat(f"{d}/EMPTY").st_size == 0
    assert vault.get("app", "EMPTY") == b""


def test_listing_and_stat_while_being_created(vault):
    """ls and stat by another process see the key while its creator writes
    it (as on any filesystem); cat by another process still finds none, and
    the value arrives whole at the creator's close."""
    d = mkinst(vault)
    fd = os.open(f"{d}/NEW", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, b"half")
        r = sh(f"ls {d} && stat -c '%s %a %U' {d}/NEW")
        assert r.returncode == 0 and r.stdout == b"NEW\n0 600 root\n", r
        r = sh(f"cat {d}/NEW")
        assert r.returncode == 1 and b"No such file or directory" in r.stderr, r
        os.write(fd, b"-and-half")
    finally:
        os.close(fd)
    assert read_file(f"{d}/NEW") == b"half-and-half"
    assert vault.get("app", "NEW") == b"half-and-half"
    assert os.stat(f"{d}/NEW").st_size == 13


def test_fchmod_before_the_first_close(vault):
    """cp -p and install change the mode of the file they are still
    writing: the mode sticks and the value follows."""
    d = mkinst(vault)
    fd = os.open(f"{d}/NEW", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, b"v")
        os.fchmod(fd, 0o640)
        assert stat.S_IMODE(os.fstat(fd).st_mode) == 0o640
    finally:
        os.close(fd)
    assert stat.S_IMODE(os.stat(f"{d}/NEW").st_mode) == 0o640
    assert read_file(f"{d}/NEW") == b"v"


def test_name_taken_meanwhile_fails_the_close(vault):
    """The command line stores the same name while a creator still writes
    it: the creator's close says "File exists" and the stored value stays,
    instead of one silently replacing the other."""
    d = mkinst(vault)
    fd = os.open(f"{d}/NEW", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, b"from-the-mount")
        r = vault.cli("set", "app", "NEW", input=b"from-the-cli")
        assert r.returncode == 0, r.stderr
    finally:
        e = oserror(os.close, fd)
    assert e == errno.EEXIST, errname(e)
    assert vault.get("app", "NEW") == b"from-the-cli"
    assert read_file(f"{d}/NEW") == b"from-the-cli"
    # The command line's write, then the creation that failed.
    assert audit_ops(vault, "NEW") == [("write", "ok"), ("create", "EEXIST")]


def test_create_over_a_name_made_elsewhere_says_file_exists(vault):
    """The kernel may still hold "no such file" for a name the command line
    has made since: O_CREAT|O_EXCL then fails at once, as it should."""
    d = mkinst(vault)
    assert oserror(os.stat, f"{d}/K") == errno.ENOENT     # cached as absent
    r = vault.cli("set", "app", "K", input=b"v")
    assert r.returncode == 0, r.stderr
    e = oserror(os.open, f"{d}/K", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    assert e == errno.EEXIST, errname(e)
    assert vault.get("app", "K") == b"v"


def test_removed_before_the_first_close(vault):
    """rm of a key its creator is still writing: it is gone, and the
    creator's close doesn't bring it back."""
    d = mkinst(vault)
    fd = os.open(f"{d}/NEW", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, b"v")
        os.unlink(f"{d}/NEW")
    finally:
        try:
            os.close(fd)
        except OSError:
            pass
    assert os.listdir(d) == []
    assert vault.cli("get", "app", "NEW").returncode == 1


def test_new_key_too_large_is_not_made(vault):
    """`cmd > newkey` whose output is over max_value_size: the shell says
    "File too large", and there is no key, rather than an empty one."""
    d = mkinst(vault)
    r = sh(f"head -c {2 << 20} /dev/zero > {d}/BIG")
    assert r.returncode != 0 and b"file too large" in r.stderr.lower(), r
    assert os.listdir(d) == []
    assert vault.cli("get", "app", "BIG").returncode == 1
    assert audit_ops(vault, "BIG") == [("create", "EFBIG")]
    r = sh(f"printf small > {d}/BIG && cat {d}/BIG")     # the name is free
    assert (r.returncode, r.stdout) == (0, b"small"), r
