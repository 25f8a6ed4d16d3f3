"""Metadata as extended attributes: user.description and user.type set by the
secret's owner, read-only user.vaultfs.*, and the CLI showing the same."""
import errno
import json
import os
import re

import pytest

from conftest import oserror, read_file, run, write_file

RO_NAMES = ["user.vaultfs.version", "user.vaultfs.created", "user.vaultfs.updated",
            "user.vaultfs.updated_by"]
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")

CONFIG = """\
[instance team]
owner = {alice}
group = {team}
mode = 0775
secret_mode = 0660
"""


def getfattr_dump(path):
    r = run(["getfattr", "-d", "--absolute-names", path])
    assert r.returncode == 0, r.stderr.decode()
    out = {}
    for line in r.stdout.decode().splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            out[k] = v.strip('"')
    return out


def test_setfattr_getfattr_round_trip(vault):
    os.mkdir(vault.path("app"))
    p = vault.path("app", "OPENAI_API_KEY")
    write_file(p, "sk-one\n")
    write_file(p, "sk-two\n")
    r = run(["setfattr", "-n", "user.description", "-v", "prod key, owner: ops", p])
    assert r.returncode == 0, r.stderr.decode()
    r = run(["setfattr", "-n", "user.type", "-v", "api-key", p])
    assert r.returncode == 0, r.stderr.decode()

    attrs = getfattr_dump(p)
    assert attrs["user.description"] == "prod key, owner: ops"
    assert attrs["user.type"] == "api-key"
    assert attrs["user.vaultfs.version"] == "2", "two writes: version 2"
    assert attrs["user.vaultfs.updated_by"] == "0"
    assert ISO.match(attrs["user.vaultfs.created"]), attrs
    assert ISO.match(attrs["user.vaultfs.updated"]), attrs
    assert sorted(os.listxattr(p)) == sorted(["user.description", "user.type"] + RO_NAMES)
    # Unicode is fine; the description is metadata, never the value.
    os.setxattr(p, "user.description", "clé de prod ✓".encode())
    assert os.getxattr(p, "user.description").decode() == "clé de prod ✓"
    assert read_file(p) == b"sk-two", "metadata never touches the value"

    # The CLI shows the same.
    out = vault.cli("ls", "-l", "app").stdout.decode()
    line = [x for x in out.splitlines() if "OPENAI_API_KEY" in x][0]
    assert "api-key" in line and "clé de prod ✓" in line and " 2 " in line, out
    r = vault.cli("describe", "app", "OPENAI_API_KEY")
    assert r.stdout.decode() == "description: clé de prod ✓\ntype: api-key\n"


def test_describe_cli_shows_in_mount(vault):
    os.mkdir(vault.path("app"))
    write_file(vault.path("app", "K"), "v")
    r = vault.cli("describe", "--type", "password", "app", "K", "from the CLI")
    assert r.returncode == 0, r.stderr.decode()
    assert os.getxattr(vault.path("app", "K"), "user.description") == b"from the CLI"
    assert os.getxattr(vault.path("app", "K"), "user.type") == b"password"
    # "" removes it.
    assert vault.cli("describe", "app", "K", "").returncode == 0
    assert oserror(os.getxattr, vault.path("app", "K"), "user.description") == errno.ENODATA
    assert "user.description" not in os.listxattr(vault.path("app", "K"))


def test_version_and_updated_follow_writes(vault):
    os.mkdir(vault.path("app"))
    p = vault.path("app", "K")
    write_file(p, "a")
    assert os.getxattr(p, "user.vaultfs.version") == b"1"
    vault.set("app", "K", "b")
    assert os.getxattr(p, "user.vaultfs.version") == b"2", \
        "xattrs are not cached by the kernel: a CLI write shows at once"
    write_file(p, "c")
    assert os.getxattr(p, "user.vaultfs.version") == b"3"


@pytest.mark.parametrize("name", RO_NAMES)
def test_read_only_names_refused(vault, name):
    os.mkdir(vault.path("app"))
    p = vault.path("app", "K")
    write_file(p, "v")
    before = os.getxattr(p, name)
    # setfattr says "Operation not permitted".
    assert oserror(os.setxattr, p, name, b"7") == errno.EPERM
    assert oserror(os.removexattr, p, name) == errno.EPERM
    assert os.getxattr(p, name) == before


def test_unknown_and_bad_values_refused(vault):
    os.mkdir(vault.path("app"))
    p = vault.path("app", "K")
    write_file(p, "v")
    # Names we don't keep: "Operation not supported".
    assert oserror(os.setxattr, p, "user.color", b"red") == errno.ENOTSUP
    assert oserror(os.setxattr, p, "user.vaultfs.other", b"x") == errno.ENOTSUP
    assert oserror(os.getxattr, p, "user.color") == errno.ENODATA
    # Oversized: "Argument list too long"; nothing stored.
    assert oserror(os.setxattr, p, "user.description", b"d" * 1025) == errno.E2BIG
    assert oserror(os.setxattr, p, "user.type", b"t" * 65) == errno.E2BIG
    os.setxattr(p, "user.description", b"d" * 1024)
    assert os.getxattr(p, "user.description") == b"d" * 1024
    # Control characters and broken UTF-8 in a description, spaces in a type:
    # "Invalid argument", and the old value stays.
    for bad in (b"two\nlines", b"bell\x07", b"\xff\xfe", b"nul\x00byte", b"\xc0\xaf"):
        assert oserror(os.setxattr, p, "user.description", bad) == errno.EINVAL, bad
    assert os.getxattr(p, "user.description") == b"d" * 1024
    assert oserror(os.setxattr, p, "user.type", b"api key") == errno.EINVAL
    r = run(["setfattr", "-n", "user.type", "-v", "api key", p])
    assert r.returncode != 0 and b"Invalid argument" in r.stderr
    # The CLI refuses the same, with the reason.
    r = vault.cli("describe", "--type", "a b", "app", "K")
    assert r.returncode == 1 and b"bad type 'a b'" in r.stderr


def test_create_replace_flags_and_remove(vault):
    os.mkdir(vault.path("app"))
    p = vault.path("app", "K")
    write_file(p, "v")
    assert oserror(os.setxattr, p, "user.type", b"x", os.XATTR_REPLACE) == errno.ENODATA
    os.setxattr(p, "user.type", b"x", os.XATTR_CREATE)
    assert oserror(os.setxattr, p, "user.type", b"y", os.XATTR_CREATE) == errno.EEXIST
    os.setxattr(p, "user.type", b"y", os.XATTR_REPLACE)
    assert os.getxattr(p, "user.type") == b"y"
    os.removexattr(p, "user.type")
    assert oserror(os.removexattr, p, "user.type") == errno.ENODATA
    assert "user.type" not in os.listxattr(p)


def test_directories_have_no_metadata(vault):
    os.mkdir(vault.path("app"))
    assert os.listxattr(vault.path("app")) == []
    assert oserror(os.getxattr, vault.path("app"), "user.description") == errno.ENODATA
    assert oserror(os.setxattr, vault.path("app"), "user.description", b"x") == errno.ENOTSUP


def test_metadata_survives_remount_and_is_not_sealed(vault):
    import sqlite3
    os.mkdir(vault.path("app"))
    p = vault.path("app", "K")
    write_file(p, "the-value")
    os.setxattr(p, "user.description", b"plain metadata")
    vault.remount()
    assert os.getxattr(p, "user.description") == b"plain metadata"
    with sqlite3.connect(vault.db) as c:
        rows = c.execute("SELECT value FROM secret_attrs").fetchall()
    assert rows == [(b"plain metadata",)], "metadata is stored as is, never sealed"


def test_owner_sets_others_may_not(users, vault_factory):
    v = vault_factory(config=CONFIG.format(alice=users.name["alice"], team=users.team))
    p = v.path("team", "K")
    r = users.sh("alice", f"printf v > {p} && chmod 0664 {p}")
    assert r.returncode == 0, r.stderr
    r = users.run("alice", ["setfattr", "-n", "user.description", "-v", "alice's", p])
    assert r.returncode == 0, r.stderr.decode()
    # Carol may write the value (group write) but not its metadata:
    # "Operation not permitted".
    r = users.run("carol", ["setfattr", "-n", "user.description", "-v", "carol's", p])
    assert r.returncode != 0 and b"Operation not permitted" in r.stderr, r.stderr
    r = users.run("carol", ["setfattr", "-x", "user.description", p])
    assert r.returncode != 0 and b"Operation not permitted" in r.stderr, r.stderr
    # Bob has no write permission: the kernel refuses first.
    r = users.run("bob", ["setfattr", "-n", "user.type", "-v", "x", p])
    assert r.returncode != 0 and b"Permission denied" in r.stderr, r.stderr
    # Anyone who may read the file reads its metadata.
    for role in ("carol", "bob"):
        r = users.run(role, ["getfattr", "-n", "user.description", "--only-values", p])
        assert r.returncode == 0 and r.stdout == b"alice's", (role, r.stderr)
    # Root may set it.
    os.setxattr(p, "user.type", b"root-set")
    assert os.getxattr(p, "user.type") == b"root-set"


def test_unreadable_secret_metadata_needs_read_permission(users, vault_factory):
    """The kernel checks read permission for user.* attributes before asking
    us: on a 0600 secret, others get "Permission denied" (documented)."""
    v = vault_factory(config=CONFIG.format(alice=users.name["alice"], team=users.team))
    p = v.path("team", "K")
    assert users.sh("alice", f"printf v > {p} && chmod 0600 {p}").returncode == 0
    os.setxattr(p, "user.description", b"d")
    r = users.run("bob", ["getfattr", "-n", "user.description", p])
    assert r.returncode != 0 and b"Permission denied" in r.stderr
    # ...while the CLI (root, with the key) shows it.
    assert b"d" in v.cli("describe", "team", "K").stdout


def test_export_carries_metadata(vault):
    os.mkdir(vault.path("app"))
    write_file(vault.path("app", "K"), "v")
    os.setxattr(vault.path("app", "K"), "user.description", b'quote " and \\ back')
    data = json.loads(vault.cli("export", "--json").stdout)
    key = data["instances"][0]["keys"][0]
    assert key["description"] == 'quote " and \\ back'
