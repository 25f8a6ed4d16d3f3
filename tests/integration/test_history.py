"""Versions: history, reading an old version, rollback, check-and-set,
undelete and purge."""
import os
import sqlite3

from conftest import read_file, run, write_file


def history(v, inst, key):
    """[(version, size, by, current)] from `vaultfs history`, newest first."""
    r = v.cli("history", inst, key)
    assert r.returncode == 0, r.stderr.decode()
    rows = []
    for line in r.stdout.decode().splitlines()[1:]:
        f = line.split()
        rows.append((int(f[0]), int(f[2]), int(f[3]), "(current)" in line))
    return rows


def get_version(v, inst, key, version):
    return v.cli("get", "--version", str(version), inst, key)


def test_history_after_writes_through_mount_and_cli(vault):
    os.mkdir(vault.path("app"))
    p = vault.path("app", "K")
    for val in ("one\n", "two-two\n", "three-3\n"):
        # The shell's `echo > key` commits twice (at its dup2 and its exit):
        # still one version per write.
        assert run(["/bin/sh", "-c", f"printf '{val}' > {p}"]).returncode == 0
    vault.set("app", "K", "four")
    rows = history(vault, "app", "K")
    assert [(n, size) for n, size, _, _ in rows] == [(4, 4), (3, 7), (2, 7), (1, 3)]
    assert rows[0][3] and not any(cur for *_, cur in rows[1:])
    assert all(by == 0 for _, _, by, _ in rows)
    out = vault.cli("history", "app", "K").stdout
    for val in (b"one", b"two-two", b"three-3", b"four"):
        assert val not in out, "history never shows values"
    # Every kept version reads back exactly.
    assert get_version(vault, "app", "K", 1).stdout == b"one"
    assert get_version(vault, "app", "K", 3).stdout == b"three-3"
    assert get_version(vault, "app", "K", 4).stdout == b"four"
    r = get_version(vault, "app", "K", 9)
    assert r.returncode == 1 and b"app/K has no version 9" in r.stderr


def test_history_records_who_wrote(users, vault_factory):
    v = vault_factory(config=f"[instance team]\nowner = {users.name['alice']}\n"
                             f"group = {users.team}\nmode = 0775\nsecret_mode = 0660\n")
    p = v.path("team", "K")
    assert users.sh("alice", f"printf a > {p} && chmod 0660 {p}").returncode == 0
    assert users.sh("carol", f"printf bb > {p}").returncode == 0
    rows = history(v, "team", "K")
    assert [(n, by) for n, _, by, _ in rows] == \
        [(2, users.uid["carol"]), (1, users.uid["alice"])]
    assert os.getxattr(p, "user.vaultfs.updated_by") == str(users.uid["carol"]).encode()


def test_kept_versions_limited_by_config(vault_factory):
    v = vault_factory(config="[vault]\nversions = 3\n")
    os.mkdir(v.path("app"))
    for i in range(1, 7):
        write_file(v.path("app", "K"), f"v{i}")
    assert [n for n, *_ in history(v, "app", "K")] == [6, 5, 4]
    assert get_version(v, "app", "K", 4).stdout == b"v4"
    assert get_version(v, "app", "K", 3).returncode == 1
    with sqlite3.connect(v.db) as c:
        assert c.execute("SELECT count(*) FROM versions").fetchone() == (2,), \
            "the rows of dropped versions are deleted"


def test_one_kept_version_leaves_no_old_rows(vault_factory):
    """versions = 1: `vaultfs history` lists the current value alone, and
    no replaced value stays in the file."""
    v = vault_factory(config="[vault]\nversions = 1\n")
    os.mkdir(v.path("app"))
    for i in range(1, 4):
        write_file(v.path("app", "K"), f"v{i}")
    assert [n for n, *_ in history(v, "app", "K")] == [3]
    assert get_version(v, "app", "K", 2).returncode == 1
    with sqlite3.connect(v.db) as c:
        assert c.execute("SELECT count(*) FROM versions").fetchone() == (0,)


def test_rollback_makes_old_value_current_as_new_version(vault):
    os.mkdir(vault.path("app"))
    p = vault.path("app", "K")
    for val in ("good", "bad-1", "bad-2"):
        write_file(p, val)
    r = vault.cli("rollback", "app", "K", "1")
    assert r.returncode == 0, r.stderr.decode()
    assert b"as version 4" in r.stdout
    assert read_file(p) == b"good"
    assert os.stat(p).st_size == 4
    assert [n for n, *_ in history(vault, "app", "K")] == [4, 3, 2, 1]
    assert get_version(vault, "app", "K", 3).stdout == b"bad-2", "nothing is lost"
    # Refusals: the current one, one that isn't kept, not a number.
    r = vault.cli("rollback", "app", "K", "4")
    assert r.returncode == 1 and b"version 4 is the current one" in r.stderr
    r = vault.cli("rollback", "app", "K", "99")
    assert r.returncode == 1 and b"has no version 99" in r.stderr
    r = vault.cli("rollback", "app", "K", "two")
    assert r.returncode == 2 and b"bad version 'two'" in r.stderr
    assert read_file(p) == b"good"


def test_rollback_keeps_newline_behaviour(vault):
    """A value stored without its trailing newline rolls back the same way."""
    os.mkdir(vault.path("app"))
    p = vault.path("app", "K")
    assert run(["/bin/sh", "-c", f"echo first > {p}"]).returncode == 0
    write_file(p, "second")
    assert vault.cli("rollback", "app", "K", "1").returncode == 0
    assert run(["/bin/sh", "-c", f"echo more >> {p}"]).returncode == 0
    assert read_file(p) == b"first\nmore\n"


def test_check_and_set(vault_unmounted):
    v = vault_unmounted
    r = v.cli("set", "--if-version", "0", "app", "K", input="first")
    assert r.returncode == 0, "version 0: the key must not exist yet"
    r = v.cli("set", "--if-version", "0", "app", "K", input="again")
    assert r.returncode == 3
    assert r.stderr.decode() == ("vaultfs: app/K is at version 1, not 0: it changed "
                                 "meanwhile; nothing was changed\n")
    assert v.cli("set", "app", "K", input="someone else").returncode == 0
    r = v.cli("set", "--if-version", "1", "app", "K", input="mine")
    assert r.returncode == 3 and b"at version 2, not 1" in r.stderr
    assert v.get("app", "K") == b"someone else", "a conflict changes nothing"
    assert [n for n, *_ in history(v, "app", "K")] == [2, 1]
    r = v.cli("set", "--if-version", "2", "app", "K", input="mine")
    assert r.returncode == 0 and v.get("app", "K") == b"mine"
    # Options after the arguments work as well.
    r = v.cli("set", "app", "K", "--if-version", "3", input="later")
    assert r.returncode == 0 and v.get("app", "K") == b"later"
    # A version against a missing instance is a conflict, and makes nothing.
    r = v.cli("set", "--if-version", "5", "nope", "K", input="x")
    assert r.returncode == 3 and "nope" not in v.cli("ls").stdout.decode()
    r = v.cli("set", "--if-version", "-1", "app", "K", input="x")
    assert r.returncode == 2


def test_undelete_restores_value_history_and_metadata(vault):
    os.mkdir(vault.path("app"))
    p = vault.path("app", "K")
    write_file(p, "v1")
    write_file(p, "v2")
    os.chmod(p, 0o640)
    os.setxattr(p, "user.description", b"keep me")
    os.unlink(p)
    assert not os.path.exists(p)
    r = vault.cli("ls", "--deleted", "app")
    assert r.returncode == 0 and "K" in r.stdout.decode().split()
    r = vault.cli("undelete", "app", "K")
    assert r.returncode == 0, r.stderr.decode()
    assert read_file(p) == b"v2"
    assert os.stat(p).st_mode & 0o777 == 0o640
    assert os.getxattr(p, "user.description") == b"keep me"
    assert [n for n, *_ in history(vault, "app", "K")] == [2, 1]
    # Nothing left to undelete.
    r = vault.cli("undelete", "app", "K")
    assert r.returncode == 1 and b"no deleted key of that name" in r.stderr


def test_undelete_refuses_over_existing_key(vault_unmounted):
    v = vault_unmounted
    v.set("app", "K", "old")
    assert v.cli("rm", "app", "K").returncode == 0
    v.set("app", "K", "new")
    r = v.cli("undelete", "app", "K")
    assert r.returncode == 1 and b"app/K exists" in r.stderr
    assert v.get("app", "K") == b"new"
    assert [n for n, *_ in history(v, "app", "K")] == [1], \
        "created again after a delete: a history of its own"


def test_purge_and_fresh_history(vault_unmounted):
    v = vault_unmounted
    for val in ("old-secret-1", "old-secret-2"):
        v.set("app", "K", val)
    assert v.cli("rm", "app", "K").returncode == 0
    with sqlite3.connect(v.db) as c:
        sealed = [b for (b,) in c.execute("SELECT blob FROM versions")]
    assert len(sealed) == 2
    r = v.cli("purge", "app", "K")
    assert r.returncode == 0 and b"purged 1 deleted key" in r.stdout
    # secure_delete zeroes the rows, and the log keeps no older copy.
    raw = b"".join(read_file(f) for f in v.db_files() if os.path.exists(f))
    for b in sealed:
        assert b[1:25] not in raw, "a purged version's ciphertext is still on disk"
    r = v.cli("undelete", "app", "K")
    assert r.returncode == 1, "purged: gone for good"
    v.set("app", "K", "fresh")
    assert [n for n, *_ in history(v, "app", "K")] == [1]
    assert v.get("app", "K") == b"fresh"
    for n in (1, 2):
        r = get_version(v, "app", "K", n)
        assert b"old-secret" not in r.stdout
    assert get_version(v, "app", "K", 2).returncode == 1
    with sqlite3.connect(v.db) as c:
        assert c.execute("SELECT count(*) FROM versions").fetchone() == (0,)
        assert c.execute("SELECT count(*) FROM trash").fetchone() == (0,)
    # Purging a live key is refused; nothing deleted, nothing to purge.
    r = v.cli("purge", "app", "K")
    assert r.returncode == 1 and b"app/K is not deleted" in r.stderr
    assert v.get("app", "K") == b"fresh"
    r = v.cli("purge", "app", "NOPE")
    assert r.returncode == 1 and b"no deleted key of that name" in r.stderr


def test_no_undelete_window_means_final_delete(vault_factory):
    v = vault_factory(config="[vault]\nundelete_window = 0\n", mount=False)
    v.set("app", "K", "v")
    assert v.cli("rm", "app", "K").returncode == 0
    assert v.cli("undelete", "app", "K").returncode == 1
    with sqlite3.connect(v.db) as c:
        assert c.execute("SELECT count(*) FROM trash").fetchone() == (0,)
        assert c.execute("SELECT count(*) FROM versions").fetchone() == (0,)


def test_rename_keeps_history_and_editor_save_continues_it(vault):
    os.mkdir(vault.path("app"))
    p = vault.path("app", "K")
    write_file(p, "k1")
    write_file(p, "k2")
    os.setxattr(p, "user.description", b"the key")
    # An editor saves: writes a temporary file and renames it over the key.
    tmp = vault.path("app", "K.tmp")
    write_file(tmp, "k3")
    os.rename(tmp, p)
    assert read_file(p) == b"k3"
    assert [n for n, *_ in history(vault, "app", "K")] == [3, 2, 1]
    assert get_version(vault, "app", "K", 1).stdout == b"k1"
    assert os.getxattr(p, "user.description") == b"the key", "metadata stays"
    assert run(["sed", "-i", "s/k3/k4/", p]).returncode == 0
    assert read_file(p) == b"k4"
    assert [n for n, *_ in history(vault, "app", "K")] == [4, 3, 2, 1]
    # A plain rename takes the history along.
    os.rename(p, vault.path("app", "L"))
    assert [n for n, *_ in history(vault, "app", "L")] == [4, 3, 2, 1]
    assert get_version(vault, "app", "L", 2).stdout == b"k2"


def test_rmdir_erases_the_instances_trash(vault):
    os.mkdir(vault.path("app"))
    write_file(vault.path("app", "K"), "v")
    os.unlink(vault.path("app", "K"))
    os.rmdir(vault.path("app"))
    with sqlite3.connect(vault.db) as c:
        assert c.execute("SELECT count(*) FROM trash").fetchone() == (0,)
        assert c.execute("SELECT count(*) FROM versions").fetchone() == (0,)
