"""The database is untrusted storage (issue 11): whoever can write the
database file, its -wal/-shm or a backup can destroy secrets, but can't
read them, widen access or bring back an older value. Each attack is made
here as such a writer would (sqlite3 on the file) against a real mount and
real users; what the user sees is a refusal (EIO, or a command that names
the file and the fix), and the audit log records it."""
import json
import os
import shutil
import sqlite3
import stat
import subprocess

import pytest

from conftest import VAULTFS_BIN, run, wait_for, write_file

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "fixtures")

# attr_timeout 0: the kernel asks the daemon at every lookup, so a change
# made in the file is seen at the next access, as after attr_timeout.
CONFIG = """\
[vault]
attr_timeout = 0
"""


def sql(path, *stmts):
    conn = sqlite3.connect(path, timeout=10)
    try:
        for s in stmts:
            conn.execute(s)
        conn.commit()
    finally:
        conn.close()


def sql_one(path, stmt):
    conn = sqlite3.connect(path, timeout=10)
    try:
        return conn.execute(stmt).fetchone()
    finally:
        conn.close()


def audit(v):
    r = v.cli("audit", "--json")
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    return [json.loads(line) for line in r.stdout.decode().splitlines()]


def authfails(v, what):
    """Audit entries of rows that failed their tag, naming `what`."""
    return [e for e in audit(v) if e.get("op") == "authfail" and what in json.dumps(e)]


def wait_authfail(v, what):
    assert wait_for(lambda: authfails(v, what), 10.0), \
        f"no authfail entry naming {what!r} in the audit log: {audit(v)[-5:]}"


def read_as_root(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        return e.errno


@pytest.fixture
def secret_vault(vault_factory, users):
    """A mounted vault: instance app (root, 0755), key K (root, 0600) whose
    value is v3 after v1 and v2."""
    v = vault_factory(config=CONFIG)
    os.mkdir(v.path("app"))
    os.chmod(v.path("app"), 0o755)
    for val in ("v1", "v2", "v3"):
        r = subprocess.run(["sh", "-c", f"echo {val} > {v.path('app', 'K')}"])
        assert r.returncode == 0
    os.chmod(v.path("app", "K"), 0o600)
    assert users.try_open("alice", v.path("app", "K")) == "EACCES"
    assert read_as_root(v.path("app", "K")) == b"v3"
    return v


def secret_id(v):
    return sql_one(v.db, "SELECT id FROM secrets WHERE name = 'K'")[0]


def test_chmod_in_database_gives_eio_not_access(secret_vault, users):
    """UPDATE secrets SET mode = 0666 (the user = account, or anyone when
    the file was writable): no one reads the secret, the row is audited."""
    v = secret_vault
    sql(v.db, "UPDATE secrets SET mode = 438, uid = %d" % users.uid["alice"])
    assert users.try_open("alice", v.path("app", "K")) == "EIO"
    assert read_as_root(v.path("app", "K")) == 5  # EIO
    r = v.cli("get", "app", "K")
    assert r.returncode == 1 and r.stdout == b""
    assert "fails authentication" in r.stderr.decode()
    wait_authfail(v, f"secrets row {secret_id(v)}")
    assert "fails authentication" in v.log()


def test_instance_chmod_in_database_gives_eio(secret_vault, users):
    v = secret_vault
    os.chmod(v.path("app"), 0o700)
    assert users.try_open("alice", v.path("app", "K")) == "EACCES"
    sql(v.db, "UPDATE instances SET mode = 493, uid = %d" % users.uid["alice"])
    assert users.try_open("alice", v.path("app", "K")) == "EIO"
    r = users.run("alice", ["ls", v.path("app")])
    assert r.returncode != 0
    wait_authfail(v, "instances row")


def test_version_rollback_inside_database_is_refused(secret_vault, users):
    """The revoked v1 copied back from versions into the secret's row: the
    mount, get and history refuse it instead of serving v1."""
    v = secret_vault
    sid = secret_id(v)
    sql(v.db, "UPDATE secrets SET (version, size, flags, blob) = (SELECT version, size, "
              f"flags, blob FROM versions WHERE secret_id = {sid} AND version = 1) "
              f"WHERE id = {sid}")
    assert read_as_root(v.path("app", "K")) == 5
    r = v.cli("get", "app", "K")
    assert (r.returncode, r.stdout) == (1, b"")
    r = v.cli("history", "app", "K")
    assert r.returncode == 1 and b"v1" not in r.stdout
    wait_authfail(v, f"secrets row {sid}")
    # Copying the versions row's tag along does not help either: it was
    # made for another table.
    sql(v.db, f"UPDATE secrets SET mac = (SELECT mac FROM versions WHERE secret_id = {sid} "
              f"AND version = 1) WHERE id = {sid}")
    assert read_as_root(v.path("app", "K")) == 5


def test_row_swapped_from_another_secret_is_refused(secret_vault, users):
    """Alice's own secret's row (tag included) copied over root's: refused."""
    v = secret_vault
    r = users.sh("alice", f"true")
    os.chown(v.path("app"), 0, users.gid["alice"])
    os.chmod(v.path("app"), 0o775)
    r = users.sh("alice", f"echo mine > {v.path('app', 'MINE')}")
    assert r.returncode == 0, r.stderr
    sid = secret_id(v)
    mine = sql_one(v.db, "SELECT id FROM secrets WHERE name = 'MINE'")[0]
    sql(v.db, f"UPDATE secrets SET (uid, gid, mode, mac) = (SELECT uid, gid, mode, mac "
              f"FROM secrets WHERE id = {mine}) WHERE id = {sid}")
    assert users.try_open("alice", v.path("app", "K")) == "EIO"
    wait_authfail(v, f"secrets row {sid}")


def test_trigger_that_undoes_chmod_is_refused(secret_vault, users):
    """A trigger that resets mode and owner after each update: root's chmod
    fails instead of being silently undone, and mount and every command
    refuse the file, naming the trigger and the fix."""
    v = secret_vault
    sql(v.db, "CREATE TRIGGER undo AFTER UPDATE ON secrets BEGIN "
              f"UPDATE secrets SET mode = 438, uid = {users.uid['alice']} WHERE id = new.id; END")
    # The trigger's own UPDATE can't tag the row: the chmod fails rather
    # than being undone, and the row it left is refused.
    with pytest.raises(OSError):
        os.chmod(v.path("app", "K"), 0o400)
    assert users.try_open("alice", v.path("app", "K")) in ("EACCES", "EIO")
    r = v.cli("get", "app", "K")
    err = r.stderr.decode()
    assert r.returncode == 1 and r.stdout == b""
    assert "trigger undo" in err and v.db in err and "DROP trigger" in err, err
    v.unmount()
    r = run([VAULTFS_BIN, "mount"] + v.base_opts() + ["-f", v.mnt])
    assert r.returncode == 1 and "trigger undo" in r.stderr.decode()
    assert not os.path.ismount(v.mnt)
    sql(v.db, "DROP TRIGGER undo")
    v.mount()
    assert users.try_open("alice", v.path("app", "K")) in ("EACCES", "EIO")


@pytest.mark.parametrize("extra", [
    "CREATE VIEW peek AS SELECT name FROM secrets",
    "CREATE TABLE stash (x)",
    "CREATE INDEX by_mode ON secrets (mode)",
])
def test_schema_objects_vaultfs_did_not_make_are_refused(vault_unmounted, extra):
    v = vault_unmounted
    v.set("app", "K", b"v")
    sql(v.db, extra)
    r = v.cli("get", "app", "K")
    err = r.stderr.decode()
    assert r.returncode == 1 and r.stdout == b"" and v.db in err
    assert "did not create" in err, err


def test_writable_database_is_refused(vault_unmounted, users):
    v = vault_unmounted
    v.set("app", "K", b"v")
    for path in (v.db, v.db + "-wal"):
        if not os.path.exists(path):
            write_file(path, b"")
            os.chmod(path, 0o600)
        before = stat.S_IMODE(os.stat(path).st_mode)
        for mode in (0o666, 0o620, 0o602):
            os.chmod(path, mode)
            r = v.cli("get", "app", "K")
            err = r.stderr.decode()
            assert (r.returncode, r.stdout) == (1, b""), err
            assert path in err and "chmod go-w" in err, err
            r = run([VAULTFS_BIN, "mount"] + v.base_opts() + ["-f", v.mnt])
            assert r.returncode == 1 and path in r.stderr.decode()
        os.chmod(path, before)
    os.chown(v.db, users.uid["bob"], -1)
    r = v.cli("get", "app", "K")
    err = r.stderr.decode()
    assert r.returncode == 1 and v.db in err and "chown" in err, err
    os.chown(v.db, 0, -1)
    assert v.get("app", "K") == b"v"


def test_doctored_backup_is_refused_whole(vault_unmounted, users, tmp_path):
    """UPDATE secrets SET mode = 0666, uid = bob in a backup, then restore:
    refused before anything is replaced; the vault is as it was."""
    v = vault_unmounted
    v.set("app", "K", b"root only")
    v.set("app", "OTHER", b"x")
    bak = str(tmp_path / "bak.db")
    r = v.cli("backup", bak)
    assert r.returncode == 0, r.stderr
    sql(bak, f"UPDATE secrets SET mode = 438, uid = {users.uid['bob']} WHERE name = 'K'")
    before = v.db_fingerprint()
    r = v.cli("restore", bak)
    err = r.stderr.decode()
    assert r.returncode == 1, err
    assert "secrets row" in err and "fails authentication" in err, err
    assert v.db_fingerprint() == before, "the running vault must be untouched"
    assert not [f for f in os.listdir(v.dir) if "restor" in f], os.listdir(v.dir)
    assert v.get("app", "K") == b"root only"
    # The same backup, undoctored, restores.
    sql(bak, "UPDATE secrets SET mode = 384, uid = 0 WHERE name = 'K'")
    r = v.cli("restore", bak)
    assert r.returncode == 0, r.stderr


def test_master_key_rotation_keeps_rows_checkable(vault_unmounted, tmp_path):
    v = vault_unmounted
    v.set("app", "K", b"one")
    v.set("app", "K", b"two")
    r = v.cli("describe", "app", "K", "a description")
    assert r.returncode == 0, r.stderr
    new = str(tmp_path / "new.key")
    assert run([VAULTFS_BIN, "keygen", "--out", new]).returncode == 0
    r = v.cli("rotate-key", "--new-key-file", new)
    assert r.returncode == 0, r.stderr
    assert v.get("app", "K") == b"two"
    r = v.cli("history", "app", "K")
    assert r.returncode == 0 and r.stdout.count(b"\n") == 3, r.stdout
    r = v.cli("describe", "app", "K")
    assert b"a description" in r.stdout


# -- every stored value, one at a time ----------------------------------------

def mutations(value):
    """Values an attacker might write in place of one stored value."""
    if isinstance(value, int):
        return [value + 1, 0o777 if value != 0o777 else 0o666, 0]
    if isinstance(value, str):
        return [value + "x"]
    if isinstance(value, bytes):
        if not value:
            return [b"\0" * 32]
        return [bytes([value[0] ^ 1]) + value[1:]]
    return [1]


TABLES = {
    "instances": "name = 'app'",
    "secrets": "name = 'K'",
    "versions": "secret_id = (SELECT id FROM secrets WHERE name = 'K') AND version = 2",
    "trash": "name = 'GONE'",
    "secret_attrs": "name = 'description'",
}


def test_no_single_stored_value_grants_access_or_an_old_value(secret_vault, users):
    """For every column of every table that holds access, identity or
    value, each stored value is changed in turn: alice never reads the
    root-only secret, and root gets v3 or a clear error, never v1 or v2."""
    v = secret_vault
    r = subprocess.run(["sh", "-c", f"echo gone > {v.path('app', 'GONE')}"])
    assert r.returncode == 0
    os.unlink(v.path("app", "GONE"))
    r = v.cli("describe", "app", "K", "root only")
    assert r.returncode == 0, r.stderr
    tried = 0
    for table, where in TABLES.items():
        conn = sqlite3.connect(v.db, timeout=10)
        key = "rowid" if table not in KEYS else "NULL"
        cur = conn.execute(f"SELECT {key}, * FROM {table} WHERE {where}")
        cols = [d[0] for d in cur.description][1:]
        row = cur.fetchone()
        conn.close()
        assert row is not None, f"no {table} row to change"
        values = dict(zip(cols, row[1:]))
        for i, col in enumerate(cols):
            orig = row[i + 1]
            for bad in mutations(orig):
                what = f"{table}.{col} = {bad!r}"
                try:
                    sql(v.db, f"UPDATE {table} SET {col} = {sqlite_literal(bad)} "
                              f"WHERE {row_cond(table, row[0], values, col, orig)}")
                except sqlite3.IntegrityError:
                    continue  # the schema itself refuses this value
                tried += 1
                assert not users.try_open("alice", v.path("app", "K")).startswith("OK"), what
                got = read_as_root(v.path("app", "K"))
                assert got in (b"v3", 5, 2), f"{what}: root read {got!r}"
                r = v.cli("get", "app", "K")
                assert r.stdout in (b"v3", b""), f"{what}: get printed {r.stdout!r}"
                assert r.stdout == b"v3" or r.returncode != 0, what
                sql(v.db, f"UPDATE {table} SET {col} = {sqlite_literal(orig)} "
                          f"WHERE {row_cond(table, row[0], values, col, bad)}")
                assert read_as_root(v.path("app", "K")) == b"v3", f"after undoing {what}"
    assert tried > 30
    assert users.try_open("alice", v.path("app", "K")) == "EACCES"


ROWID_ALIAS = {"instances": "id", "secrets": "id", "trash": "secret_id"}
# Tables without a rowid: found by their primary key.
KEYS = {"secret_attrs": ("secret_id", "name"), "versions": ("secret_id", "version")}


def row_cond(table, rowid, values, col, now):
    """Where the row is (its rowid, or its key among values), while column
    col holds now."""
    if table in KEYS:
        return " AND ".join(f"{k} = {sqlite_literal(now if k == col else values[k])}"
                            for k in KEYS[table])
    if ROWID_ALIAS.get(table) == col:
        return f"rowid = {sqlite_literal(now)}"
    return f"rowid = {rowid}"


def sqlite_literal(x):
    if x is None:
        return "NULL"
    if isinstance(x, int):
        return str(x)
    if isinstance(x, bytes):
        return "x'" + x.hex() + "'"
    return "'" + str(x).replace("'", "''") + "'"


# -- upgrade from the release before row tags ----------------------------------

def fixture_vault(vault_factory):
    """The fixture made by vaultfs 0.1.0 (before row tags) in a fresh vault's
    place: app/API_KEY (3 versions, description, type), billing/TOKEN and
    billing/OLD (deleted)."""
    return vault_from_fixture(vault_factory, "vault-0.1.0")


def vault_from_fixture(vault_factory, name):
    """A fresh vault's place taken by tests/fixtures/NAME.db and NAME.key."""
    v = vault_factory(mount=False)
    for p in v.db_files():
        if os.path.exists(p):
            os.unlink(p)
    shutil.copy(os.path.join(FIXTURES, name + ".db"), v.db)
    shutil.copy(os.path.join(FIXTURES, name + ".key"), v.key)
    os.chmod(v.db, 0o600)
    os.chmod(v.key, 0o600)
    return v


def test_upgrade_from_0_1_0_tags_every_row(vault_factory):
    v = fixture_vault(vault_factory)
    assert sql_one(v.db, "PRAGMA user_version")[0] == 4
    assert v.get("app", "API_KEY") == b"sk-three"
    assert sql_one(v.db, "SELECT count(*) FROM secrets WHERE length(mac) != 32")[0] == 0
    for t in ("instances", "versions", "trash", "secret_attrs"):
        assert sql_one(v.db, f"SELECT count(*) FROM {t} WHERE length(mac) != 32")[0] == 0, t
    assert v.get("billing", "TOKEN") == b"tok-1"
    r = v.cli("history", "app", "API_KEY")
    assert r.returncode == 0 and r.stdout.count(b"\n") == 4, r.stdout
    r = v.cli("rollback", "app", "API_KEY", "1")
    assert r.returncode == 0, r.stderr
    assert v.get("app", "API_KEY") == b"sk-one"
    r = v.cli("describe", "app", "API_KEY")
    assert b"prod key" in r.stdout and b"api-key" in r.stdout
    r = v.cli("undelete", "billing", "OLD")
    assert r.returncode == 0, r.stderr
    assert v.get("billing", "OLD") == b"gone"
    v.mount()
    assert read_as_root(v.path("app", "API_KEY")) == b"sk-one"


def test_upgraded_vault_is_not_tagged_again(vault_factory):
    """Emptying the tags of an upgraded vault does not make vaultfs tag its
    (doctored) rows afresh: only a check value of the old era does."""
    v = fixture_vault(vault_factory)
    assert v.get("app", "API_KEY") == b"sk-three"
    sql(v.db, "UPDATE secrets SET mode = 438, mac = x''")
    r = v.cli("get", "app", "API_KEY")
    assert r.returncode == 1 and "fails authentication" in r.stderr.decode()


# -- upgrade from the release whose states were chains ----------------------------

def fixture6_vault(vault_factory):
    """A vault made by the vaultfs before instance states by bucket (schema
    6: each state a keyed chain over every live secret): app/API_KEY (2
    versions), app/K1..K70, billing/TOKEN and billing/OLD (deleted)."""
    return vault_from_fixture(vault_factory, "vault-schema6")


def test_chained_states_are_checked_then_converted(vault_factory):
    """The first command that may write checks every chained state and
    makes the bucket sums' state."""
    v = fixture6_vault(vault_factory)
    assert sql_one(v.db, "PRAGMA user_version")[0] == 6
    assert v.get("app", "API_KEY") == b"sk-two"
    assert sql_one(v.db, "PRAGMA user_version")[0] == 8   # upgraded to the current schema
    assert sql_one(v.db, "SELECT count(*) FROM meta WHERE key = 'state_chain'")[0] == 0
    assert sql_one(v.db, "SELECT count(*) FROM instances WHERE length(sums) != 1024")[0] == 0
    assert v.get("app", "K70") == b"v70"
    assert v.get("billing", "TOKEN") == b"tok"
    r = v.cli("audit", "--verify")
    assert r.returncode == 0, r.stdout
    v.mount()
    assert read_as_root(v.path("app", "API_KEY")) == b"sk-two"
    r = subprocess.run(["sh", "-c", f"printf sk-three > {v.path('app', 'API_KEY')}"])
    assert r.returncode == 0
    assert read_as_root(v.path("app", "API_KEY")) == b"sk-three"


def test_chained_state_that_does_not_match_is_refused_not_converted(vault_factory):
    """A row put back before the upgrade (API_KEY's first version number):
    its chain does not match, so nothing is converted or laundered, and the
    user is told."""
    v = fixture6_vault(vault_factory)
    sql(v.db, "UPDATE secrets SET version = 1 WHERE name = 'API_KEY'")
    r = v.cli("get", "app", "K1")
    err = r.stderr.decode()
    assert r.returncode == 1 and r.stdout == b"", err
    assert "does not match its secrets" in err and "nothing was changed" in err, err
    assert sql_one(v.db, "SELECT count(*) FROM meta WHERE key = 'state_chain'")[0] == 1
    assert sql_one(v.db, "SELECT count(*) FROM instances WHERE length(sums) > 0")[0] == 0
    # A read-only command (doctor) says what the vault needs.
    r = v.cli("doctor")
    assert "open it once for writing" in (r.stdout + r.stderr).decode(), r


# -- anti-rollback ---------------------------------------------------------------

def saved_row(path, table, where):
    conn = sqlite3.connect(path, timeout=10)
    try:
        cur = conn.execute(f"SELECT * FROM {table} WHERE {where}")
        return [d[0] for d in cur.description], cur.fetchone()
    finally:
        conn.close()


def put_back(path, table, where, saved):
    cols, row = saved
    conn = sqlite3.connect(path, timeout=10)
    try:
        conn.execute(f"UPDATE {table} SET " + ", ".join(f"{c} = ?" for c in cols) +
                     f" WHERE {where}", row)
        conn.commit()
    finally:
        conn.close()


def test_older_copy_of_its_own_row_is_refused(secret_vault, users):
    """The attacker saved K's row (tag included) while it held the revoked
    v1... here v3, then root writes v4: the saved row put back is refused
    by the mount and by a fresh `vaultfs get` (the instance's state says v4
    is current)."""
    v = secret_vault
    old = saved_row(v.db, "secrets", "name = 'K'")
    r = subprocess.run(["sh", "-c", f"echo v4 > {v.path('app', 'K')}"])
    assert r.returncode == 0
    assert read_as_root(v.path("app", "K")) == b"v4"
    put_back(v.db, "secrets", "name = 'K'", old)
    assert read_as_root(v.path("app", "K")) == 5
    r = v.cli("get", "app", "K")
    assert (r.returncode, r.stdout) == (1, b""), r.stderr
    assert "state" in r.stderr.decode() or "not the current" in r.stderr.decode()
    wait_authfail(v, "not current")
    # Writing through the mount does not launder it into a new state: the
    # commit fails (logged) and the row stays refused.
    subprocess.run(["sh", "-c", f"echo v5 > {v.path('app', 'K')}"],
                   stderr=subprocess.PIPE)
    assert wait_for(lambda: "commit failed" in v.log(), 10), v.log()
    assert read_as_root(v.path("app", "K")) == 5
    r = v.cli("get", "app", "K")
    assert (r.returncode, r.stdout) == (1, b"")


def test_older_copy_of_row_and_instance_is_refused_by_the_daemon(secret_vault):
    """K's row and its instance's row both put back from before the last
    write: a consistent older state, which a running daemon refuses (the
    instance's seq went back); a fresh process can't tell it from an older
    copy of the whole file (README: what is not detected)."""
    v = secret_vault
    old_k = saved_row(v.db, "secrets", "name = 'K'")
    old_i = saved_row(v.db, "instances", "name = 'app'")
    r = subprocess.run(["sh", "-c", f"echo v4 > {v.path('app', 'K')}"])
    assert r.returncode == 0
    assert read_as_root(v.path("app", "K")) == b"v4"
    put_back(v.db, "secrets", "name = 'K'", old_k)
    put_back(v.db, "instances", "name = 'app'", old_i)
    assert read_as_root(v.path("app", "K")) == 5


def test_undelete_and_rename_keep_the_state(secret_vault):
    v = secret_vault
    os.rename(v.path("app", "K"), v.path("app", "K2"))
    assert read_as_root(v.path("app", "K2")) == b"v3"
    os.unlink(v.path("app", "K2"))
    r = v.cli("undelete", "app", "K2")
    assert r.returncode == 0, r.stderr
    assert read_as_root(v.path("app", "K2")) == b"v3"
    assert v.get("app", "K2") == b"v3"
    r = v.cli("audit", "--verify")
    assert r.returncode == 0, r.stdout


# -- the audit log's length ------------------------------------------------------

def test_audit_log_erased_is_broken(secret_vault):
    """DELETE FROM audit and its head and anchor: --verify says BROKEN, not
    'intact: no entries'."""
    v = secret_vault
    r = v.cli("audit", "--verify")
    assert r.returncode == 0, r.stdout
    sql(v.db, "DELETE FROM audit",
        "DELETE FROM meta WHERE key IN ('audit_head', 'audit_anchor')")
    r = v.cli("audit", "--verify")
    out = r.stdout.decode()
    assert r.returncode == 1 and "BROKEN" in out and "were removed" in out, out


def test_audit_tail_cut_with_older_head_is_broken(secret_vault):
    """The head saved, more entries made by writes, those entries deleted
    and the old head put back: BROKEN."""
    v = secret_vault
    head = sql_one(v.db, "SELECT value FROM meta WHERE key = 'audit_head'")[0]
    top = sql_one(v.db, "SELECT max(seq) FROM audit")[0]
    for val in ("v4", "v5"):
        r = subprocess.run(["sh", "-c", f"echo {val} > {v.path('app', 'K')}"])
        assert r.returncode == 0
    assert wait_for(lambda: sql_one(v.db, "SELECT max(seq) FROM audit")[0] > top + 1, 10)
    sql(v.db, f"DELETE FROM audit WHERE seq > {top}")
    conn = sqlite3.connect(v.db, timeout=10)
    conn.execute("UPDATE meta SET value = ? WHERE key = 'audit_head'", (head,))
    conn.commit()
    conn.close()
    r = v.cli("audit", "--verify")
    out = r.stdout.decode()
    assert r.returncode == 1 and "BROKEN" in out, out


def test_expect_head_catches_an_older_copy(vault_unmounted, tmp_path):
    """The whole file replaced by an older copy can't be told from inside
    it: the head an operator recorded (--expect-head) can."""
    v = vault_unmounted
    v.set("app", "K", b"one")
    old = str(tmp_path / "old.db")
    shutil.copy(v.db, old)
    v.set("app", "K", b"two")
    r = v.cli("audit", "--verify")
    out = r.stdout.decode()
    assert r.returncode == 0, out
    head = out.rsplit("head ", 1)[1].split()[0]
    assert ":" in head, out
    for p in v.db_files():
        if os.path.exists(p):
            os.unlink(p)
    shutil.copy(old, v.db)
    os.chmod(v.db, 0o600)
    assert v.get("app", "K") == b"one"  # not detectable from inside the file
    r = v.cli("audit", "--verify", "--expect-head", head)
    out = r.stdout.decode()
    assert r.returncode == 1 and "BROKEN" in out and "--expect-head" in out, out


def test_doctor_names_each_failing_row(vault_unmounted):
    v = vault_unmounted
    v.set("app", "K", b"one")
    v.set("app", "K", b"two")
    r = v.cli("doctor")
    assert "stored rows: every row's tag" in r.stdout.decode(), r.stdout
    sql(v.db, "UPDATE versions SET size = 99", "UPDATE instances SET gid = 4242")
    r = v.cli("doctor")
    out = r.stdout.decode()
    assert r.returncode == 1, out
    assert "insecure stored row: versions row" in out, out
    assert "insecure stored row: instances row" in out, out


# -- the sums cache: sub-sums kept for `vaultfs get` (db/rowtag.h) ------------------

def cache_row(db, inst_id, bucket):
    return sql_one(db, f"SELECT sums, mac FROM sums_cache WHERE id = {inst_id * 64 + bucket}")


def same_bucket_pair(v):
    """Two keys of app in one bucket (id % 64) but different sub-buckets
    (id % 4096): (name, id) each, and the instance's id."""
    inst = sql_one(v.db, "SELECT id FROM instances WHERE name = 'app'")[0]
    conn = sqlite3.connect(v.db, timeout=10)
    try:
        ids = dict(conn.execute("SELECT name, id FROM secrets").fetchall())
    finally:
        conn.close()
    for a, ia in ids.items():
        for b, ib in ids.items():
            if ia % 64 == ib % 64 and ia % 4096 != ib % 4096:
                return (a, ia), (b, ib), inst
    raise AssertionError(f"no two keys share a bucket: {ids}")


@pytest.fixture
def bucket_vault(vault_factory):
    """app with 70 keys written through the mount by a shell: ids 1..70,
    so that two of them share a bucket."""
    v = vault_factory(config=CONFIG)
    os.mkdir(v.path("app"))
    for i in range(70):
        r = subprocess.run(["sh", "-c", f"echo v1-{i} > {v.path('app', f'K{i:02d}')}"])
        assert r.returncode == 0
    return v


def test_daemon_keeps_sums_cache_that_checks_one_key_by_its_sub_bucket(bucket_vault):
    """Once its writes settle, the daemon stores each bucket's sub-sums
    (tagged). `vaultfs get` then checks a key by its sub-bucket alone: B's
    row put back from before its last write is refused, while A, in B's
    bucket but another sub-bucket, still reads, from the command line as
    through the mount."""
    v = bucket_vault
    (a, _), (b, ib), inst = same_bucket_pair(v)
    assert wait_for(lambda: cache_row(v.db, inst, ib % 64) is not None, 10), \
        "the daemon stored no sums_cache row for the bucket it wrote"
    before = cache_row(v.db, inst, ib % 64)
    old_b = saved_row(v.db, "secrets", f"name = '{b}'")
    r = subprocess.run(["sh", "-c", f"echo v2 > {v.path('app', b)}"])
    assert r.returncode == 0
    assert wait_for(lambda: cache_row(v.db, inst, ib % 64) != before, 10), \
        "the daemon did not bring the bucket's sub-sums up to date after a write"
    assert v.get("app", b) == b"v2"
    value_a = v.get("app", a)
    assert value_a == b"v1-%d" % int(a[1:])
    put_back(v.db, "secrets", f"name = '{b}'", old_b)
    r = v.cli("get", "app", b)
    assert (r.returncode, r.stdout) == (1, b""), r.stderr
    assert v.get("app", a) == value_a
    assert read_as_root(v.path("app", a)) == value_a


def test_sums_cache_is_believed_only_when_it_adds_up_to_the_state(bucket_vault):
    """Whoever writes the file can't make the cache vouch for an old row:
    an older copy of a bucket's sub-sums with the older row it matched is
    refused; sub-sums altered, or copied from another bucket, are not
    believed and cost a scan of the bucket: the right value is still read."""
    v = bucket_vault
    (a, ia), (b, ib), inst = same_bucket_pair(v)
    bucket = ib % 64
    where = f"id = {inst * 64 + bucket}"
    assert wait_for(lambda: cache_row(v.db, inst, bucket) is not None, 10)
    old_cache = saved_row(v.db, "sums_cache", where)
    old_b = saved_row(v.db, "secrets", f"name = '{b}'")
    r = subprocess.run(["sh", "-c", f"echo v2 > {v.path('app', b)}"])
    assert r.returncode == 0
    assert wait_for(lambda: cache_row(v.db, inst, bucket) != tuple(old_cache[1][1:]), 10)
    new_b = saved_row(v.db, "secrets", f"name = '{b}'")
    v.unmount()     # nothing refreshes the cache behind the attacker now

    # The row and the cache row both from before the write: refused.
    put_back(v.db, "secrets", f"name = '{b}'", old_b)
    put_back(v.db, "sums_cache", where, old_cache)
    r = v.cli("get", "app", b)
    assert (r.returncode, r.stdout) == (1, b""), r.stderr

    # The rows as written, the cache's sums altered: read right anyway.
    put_back(v.db, "secrets", f"name = '{b}'", new_b)
    sql(v.db, f"UPDATE sums_cache SET sums = zeroblob(1024) WHERE {where}")
    assert v.get("app", b) == b"v2"
    # Another bucket's row in its place (its tag names its bucket).
    other = (ia + 1) % 64
    sql(v.db, f"DELETE FROM sums_cache WHERE {where}",
        f"INSERT INTO sums_cache (id, sums, mac) SELECT {inst * 64 + bucket}, sums, mac "
        f"FROM sums_cache WHERE id = {inst * 64 + other}")
    assert cache_row(v.db, inst, bucket) is not None
    assert v.get("app", b) == b"v2"
    assert v.get("app", a) == b"v1-%d" % int(a[1:])


def set_pair_by_command(v):
    """app's 70 keys set by `vaultfs set`, then B of a same-bucket pair (A,
    B) set again: the pair, the instance's id and B's row from before."""
    for i in range(70):
        v.set("app", f"K{i:02d}", f"v1-{i}\n".encode())
    (a, ia), (b, ib), inst = same_bucket_pair(v)
    old_b = saved_row(v.db, "secrets", f"name = '{b}'")
    v.set("app", b, b"v2\n")
    return (a, ia), (b, ib), inst, old_b


def test_command_line_set_keeps_its_bucket_in_the_sums_cache(vault_unmounted):
    """Without a daemon, `vaultfs set` stores the sub-sums of the bucket it
    changed in its own transaction: the next `vaultfs get` of a key there
    can check it by its sub-bucket, and an older row put back is refused."""
    v = vault_unmounted
    (a, _), (b, ib), inst, old_b = set_pair_by_command(v)
    assert cache_row(v.db, inst, ib % 64) is not None
    put_back(v.db, "secrets", f"name = '{b}'", old_b)
    r = v.cli("get", "app", b)
    assert (r.returncode, r.stdout) == (1, b""), r.stderr
    assert v.get("app", a) == b"v1-%d" % int(a[1:])
    # Nor does `set` write over the old row, which its sub-bucket refuses.
    r = v.cli("set", "app", b, input=b"v3\n")
    assert r.returncode == 1 and b"nothing was changed" in r.stderr, r.stderr
    # A, in the same bucket, is written, checked by its own sub-bucket.
    v.set("app", a, b"v2-a\n")
    assert v.get("app", a) == b"v2-a"


def test_daemon_fills_sums_cache_of_a_vault_it_only_reads(vault_unmounted):
    """A vault whose sub-sums are missing (made by an older vaultfs, or
    dropped) gets them from a daemon that only reads it, once it is idle:
    `vaultfs get` is then checked by sub-bucket there too. Rows that fail
    their check are not vouched for: the doctored key stays refused."""
    v = vault_unmounted
    (a, _), (b, _), _, old_b = set_pair_by_command(v)
    sql(v.db, "DELETE FROM sums_cache")
    v.mount()
    assert read_as_root(v.path("app", a)) == b"v1-%d" % int(a[1:])
    assert wait_for(lambda: sql_one(v.db, "SELECT count(*) FROM sums_cache")[0] == 64, 10), \
        "the daemon did not fill the sums cache of the instance it reads"
    put_back(v.db, "secrets", f"name = '{b}'", old_b)
    r = v.cli("get", "app", b)
    assert (r.returncode, r.stdout) == (1, b""), r.stderr
    assert v.get("app", a) == b"v1-%d" % int(a[1:])


def test_reads_of_many_keys_at_one_state_refuse_an_old_row(vault_factory):
    """The daemon keeps which (key, version) pairs its trusted set vouched
    for at the instance's current state, and past a few hundred copies the
    whole set: across both, a row put back from before its last write is
    still refused through the mount, and the others still read."""
    v = vault_factory(config=CONFIG)
    os.mkdir(v.path("app"))
    for i in range(300):
        write_file(v.path("app", f"K{i:03d}"), b"v1-%d" % i)
    old = saved_row(v.db, "secrets", "name = 'K150'")
    r = subprocess.run(["sh", "-c", f"printf v2 > {v.path('app', 'K150')}"])
    assert r.returncode == 0
    for i in range(0, 300, 2):      # half, then the rest: vouched, then copied
        want = b"v2" if i == 150 else b"v1-%d" % i
        assert read_as_root(v.path("app", f"K{i:03d}")) == want
    put_back(v.db, "secrets", "name = 'K150'", old)
    for i in range(1, 300, 2):
        assert read_as_root(v.path("app", f"K{i:03d}")) == b"v1-%d" % i
    assert read_as_root(v.path("app", "K150")) == 5, "an older row put back was served"
