"""The vaultfs command line: keygen, init, ls, get, set, rm, master key sources."""
import os
import re
import stat

import pytest

from conftest import VAULTFS_BIN, bg_mount, clean_env, run, sha256_or_none

HEX64 = re.compile(rb"^[0-9a-fA-F]{64}\n$")
SUBCOMMANDS = ["keygen", "init", "mount", "ls", "get", "set", "rm"]


def one_error_line(r):
    err = r.stderr.decode(errors="replace")
    assert r.returncode != 0
    assert err.startswith("vaultfs: ") and err.count("\n") == 1, \
        f"an error is one line starting with 'vaultfs: ': {err!r}"
    return err


def test_version():
    r = run([VAULTFS_BIN, "--version"])
    assert r.returncode == 0
    assert r.stdout.decode().strip() == "vaultfs 0.1.0"


@pytest.mark.parametrize("sub", SUBCOMMANDS)
def test_subcommand_help(sub):
    r = run([VAULTFS_BIN, sub, "--help"])
    out = (r.stdout + r.stderr).decode()
    assert r.returncode == 0, out
    assert "usage" in out.lower() and sub in out, f"vaultfs {sub} --help: {out!r}"


def test_unknown_subcommand():
    r = run([VAULTFS_BIN, "frobnicate"])
    assert r.returncode != 0
    assert r.stderr.decode().startswith("vaultfs: ")


def test_unknown_option():
    r = run([VAULTFS_BIN, "ls", "--no-such-option"])
    assert r.returncode != 0
    assert r.stdout == b""


def test_keygen_prints_64_hex():
    r1 = run([VAULTFS_BIN, "keygen"])
    r2 = run([VAULTFS_BIN, "keygen"])
    assert r1.returncode == 0 and r2.returncode == 0
    assert HEX64.match(r1.stdout), r1.stdout
    assert HEX64.match(r2.stdout), r2.stdout
    assert r1.stdout != r2.stdout, "two keys must differ"


def test_keygen_out_0600_and_no_overwrite(tmp_path):
    p = tmp_path / "k"
    r = run([VAULTFS_BIN, "keygen", "--out", str(p)])
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o600
    content = p.read_bytes()
    assert re.match(rb"^[0-9a-fA-F]{64}\n?$", content), content
    r = run([VAULTFS_BIN, "keygen", "--out", str(p)])
    assert r.returncode != 0, "keygen must refuse to overwrite a key file"
    assert r.stderr.decode().startswith("vaultfs: ")
    assert p.read_bytes() == content
    # Not through a symlink either.
    link = tmp_path / "link"
    target = tmp_path / "target"
    os.symlink(target, link)
    r = run([VAULTFS_BIN, "keygen", "--out", str(link)])
    assert r.returncode != 0
    assert not target.exists()


def test_init_refuses_existing(tmp_path):
    key = tmp_path / "k"
    assert run([VAULTFS_BIN, "keygen", "--out", str(key)]).returncode == 0
    db = tmp_path / "v.db"
    r = run([VAULTFS_BIN, "init", "--db", str(db), "--key-file", str(key)])
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(os.stat(db).st_mode) == 0o600
    before = sha256_or_none(db)
    r = run([VAULTFS_BIN, "init", "--db", str(db), "--key-file", str(key)])
    one_error_line(r)
    assert sha256_or_none(db) == before, "init must not touch an existing vault"
    other = tmp_path / "notes.txt"
    other.write_bytes(b"precious")
    r = run([VAULTFS_BIN, "init", "--db", str(other), "--key-file", str(key)])
    assert r.returncode != 0
    assert other.read_bytes() == b"precious"


def test_init_without_key_refused(tmp_path):
    db = tmp_path / "v.db"
    r = run([VAULTFS_BIN, "init", "--db", str(db)])
    one_error_line(r)
    assert not db.exists()


def test_set_get_ls_rm(vault_unmounted):
    v = vault_unmounted
    r = v.cli("set", "app", "API_KEY", input=b"sk-123")
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"", "set prints nothing, least of all the value"
    v.set("app", "OTHER", b"o")
    v.set("web", "X", b"x")
    r = v.cli("get", "app", "API_KEY")
    assert (r.returncode, r.stdout) == (0, b"sk-123")
    r = v.cli("ls")
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().split() == ["app", "web"]
    r = v.cli("ls", "app")
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().split() == ["API_KEY", "OTHER"]
    assert b"sk-123" not in r.stdout, "ls never shows values"
    r = v.cli("rm", "app", "API_KEY")
    assert r.returncode == 0, r.stderr
    assert v.cli("ls", "app").stdout.decode().split() == ["OTHER"]
    one_error_line(v.cli("get", "app", "API_KEY"))
    one_error_line(v.cli("rm", "app", "API_KEY"))
    one_error_line(v.cli("get", "nope", "K"))
    assert v.cli("ls", "nope").returncode != 0


def test_ls_empty(vault_unmounted):
    v = vault_unmounted
    r = v.cli("ls")
    assert (r.returncode, r.stdout) == (0, b""), f"ls of a new vault: {r.stderr!r}"
    v.set("app", "K", b"v")
    assert v.cli("rm", "app", "K").returncode == 0
    r = v.cli("ls", "app")
    assert (r.returncode, r.stdout) == (0, b""), f"ls of an empty instance: {r.stderr!r}"


def test_set_overwrites(vault_unmounted):
    v = vault_unmounted
    v.set("app", "K", b"first-and-long")
    v.set("app", "K", b"2nd")
    assert v.get("app", "K") == b"2nd"


def test_set_binary_value(vault_unmounted):
    v = vault_unmounted
    value = bytes(range(256)) + b"\0\0trailing"
    v.set("app", "BIN", value)
    assert v.get("app", "BIN") == value
    v.set("app", "EMPTY", b"")
    assert v.get("app", "EMPTY") == b""


def test_set_reads_stdin_not_argv(vault_unmounted):
    v = vault_unmounted
    v.set("app", "K", b"from-stdin")
    assert v.get("app", "K") == b"from-stdin"
    # A value on the command line would show in ps and shell history.
    r = v.cli("set", "app", "K", "from-argv", input=b"")
    assert r.returncode != 0, "set must not accept the value as an argument"
    assert v.get("app", "K") == b"from-stdin"


def test_get_output_is_raw(vault_unmounted):
    v = vault_unmounted
    v.set("app", "K", b"a\nb\n")
    assert v.get("app", "K") == b"a\nb\n"
    v.set("app", "K", b"no-nl")
    assert v.get("app", "K") == b"no-nl"


def test_missing_db_is_not_created(tmp_path, vault_unmounted):
    db = tmp_path / "missing.db"
    r = run([VAULTFS_BIN, "ls", "--db", str(db), "--key-file", vault_unmounted.key])
    one_error_line(r)
    assert not db.exists(), "ls must not create a database"
    r = run([VAULTFS_BIN, "set", "--db", str(db), "--key-file", vault_unmounted.key,
             "app", "K"], input=b"v")
    assert r.returncode != 0
    assert not db.exists(), "set must not create a database"


def test_not_a_vault_refused(tmp_path, vault_unmounted):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database" * 100)
    before = sha256_or_none(junk)
    r = run([VAULTFS_BIN, "ls", "--db", str(junk), "--key-file", vault_unmounted.key])
    one_error_line(r)
    assert sha256_or_none(junk) == before


# -- master key sources ----------------------------------------------------------

def test_key_from_env(vault_unmounted):
    v = vault_unmounted
    v.set("app", "K", b"v")
    r = v.cli("get", "app", "K", key=False, env={"VAULTFS_KEY": v.key_hex()})
    assert (r.returncode, r.stdout) == (0, b"v"), r.stderr
    r = v.cli("set", "app", "K2", key=False, env={"VAULTFS_KEY": v.key_hex()}, input=b"w")
    assert r.returncode == 0, r.stderr
    assert v.get("app", "K2") == b"w"


def test_key_from_credentials_directory(vault_unmounted, tmp_path):
    v = vault_unmounted
    v.set("app", "K", b"v")
    creds = tmp_path / "creds"
    creds.mkdir(mode=0o700)
    (creds / "vaultfs.key").write_bytes(open(v.key, "rb").read())
    os.chmod(creds / "vaultfs.key", 0o400)
    r = v.cli("get", "app", "K", key=False, env={"CREDENTIALS_DIRECTORY": str(creds)})
    assert (r.returncode, r.stdout) == (0, b"v"), r.stderr


def test_key_file_beats_env(vault_unmounted):
    v = vault_unmounted
    v.set("app", "K", b"v")
    r = v.cli("get", "app", "K", env={"VAULTFS_KEY": "00" * 32})
    assert (r.returncode, r.stdout) == (0, b"v"), r.stderr


def test_env_beats_credentials(vault_unmounted, tmp_path):
    v = vault_unmounted
    v.set("app", "K", b"v")
    creds = tmp_path / "creds"
    creds.mkdir(mode=0o700)
    (creds / "vaultfs.key").write_bytes(b"11" * 32)
    os.chmod(creds / "vaultfs.key", 0o400)
    r = v.cli("get", "app", "K", key=False,
              env={"VAULTFS_KEY": v.key_hex(), "CREDENTIALS_DIRECTORY": str(creds)})
    assert (r.returncode, r.stdout) == (0, b"v"), r.stderr


def test_no_key_anywhere(vault_unmounted):
    v = vault_unmounted
    r = v.cli("ls", key=False)
    one_error_line(r)


def test_raw_32_byte_key_file(vault_unmounted, tmp_path):
    v = vault_unmounted
    v.set("app", "K", b"v")
    raw = tmp_path / "raw.key"
    raw.write_bytes(bytes.fromhex(v.key_hex()))
    os.chmod(raw, 0o600)
    r = run([VAULTFS_BIN, "get", "--db", v.db, "--key-file", str(raw), "app", "K"])
    assert (r.returncode, r.stdout) == (0, b"v"), "the same key as 32 raw bytes: " + \
        r.stderr.decode()


def test_shared_or_foreign_key_file_is_refused(vault_unmounted, users):
    """A key file others may read gives every secret away, one another user
    owns decides the key: refused, with the file and the fix named."""
    v = vault_unmounted
    v.set("app", "K", b"v")
    for mode in (0o644, 0o640, 0o604, 0o620):
        os.chmod(v.key, mode)
        r = v.cli("get", "app", "K")
        err = r.stderr.decode()
        assert (r.returncode, r.stdout) == (1, b""), f"mode {mode:o}: {err}"
        assert v.key in err and "chmod 600" in err, err
        assert v.key_hex() not in err
    os.chmod(v.key, 0o600)
    os.chown(v.key, users.uid["bob"], -1)
    r = v.cli("get", "app", "K")
    err = r.stderr.decode()
    assert (r.returncode, r.stdout) == (1, b""), err
    assert v.key in err and f"owned by uid {users.uid['bob']}" in err and "chown" in err
    os.chown(v.key, 0, -1)
    r = v.cli("get", "app", "K")
    assert (r.returncode, r.stdout, r.stderr) == (0, b"v", b"")


def test_key_env_not_passed_to_children(vault_unmounted, tmp_path):
    """VAULTFS_KEY is removed from the environment once read: the mounted
    daemon's /proc/PID/environ must not hold it."""
    v = vault_unmounted
    env = clean_env({"VAULTFS_KEY": v.key_hex()})
    try:
        r = bg_mount([VAULTFS_BIN, "mount", "--db", v.db, v.mnt], env=env)
        assert r.returncode == 0, r.stderr
        assert os.path.ismount(v.mnt)
        pids = run(["pgrep", "-f", v.mnt]).stdout.decode().split()
        assert pids, "the background daemon is running"
        for pid in pids:
            with open(f"/proc/{pid}/environ", "rb") as f:
                environ = f.read()
            assert v.key_hex().encode() not in environ, "master key left in the environment"
    finally:
        if os.path.ismount(v.mnt):
            run(["fusermount3", "-u", v.mnt])
