"""Expiring secrets and read limits: after the time, or after N reads, an open
fails with EKEYEXPIRED ("Key has expired"), for every reader at once, counted
in the store; and whoever can write the database can't remove, extend or
wind back a limit unseen."""
import errno
import json
import os
import sqlite3
import subprocess
import time

import pytest

from conftest import read_file, run, wait_for, write_file

CONFIG = "[vault]\nattr_timeout = 0\n"


def cat(path, n):
    """n `cat`s started together; their (returncode, stdout, stderr)."""
    procs = [subprocess.Popen(["cat", path], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) for _ in range(n)]
    return [(p.wait(timeout=20), p.stdout.read(), p.stderr.read().decode())
            for p in procs]


def audit(v):
    r = v.cli("audit", "--json")
    assert r.returncode == 0, r.stderr.decode()
    return [json.loads(l) for l in r.stdout.decode().splitlines()]


@pytest.fixture
def app(vault_factory):
    v = vault_factory(config=CONFIG)
    os.mkdir(v.path("app"))
    os.chmod(v.path("app"), 0o755)
    return v


def test_expiry_under_concurrent_readers(app):
    v = app
    p = v.path("app", "session")
    r = v.cli("set", "--expires", "3s", "app", "session", input="tok3n")
    assert r.returncode == 0, r.stderr.decode()
    deadline = time.time() + 3
    # Readers keep reading while the time passes: before it they get the
    # value, and never after it.
    seen_expired = False
    while time.time() < deadline + 1.5:
        before = time.time()
        for rc, out, err in cat(p, 4):
            after = time.time()
            if rc == 0:
                assert out == b"tok3n"
                assert before < deadline + 0.5, "read after the expiry"
            else:
                assert "Key has expired" in err, err
                assert after >= deadline - 0.5, "expired before its time"
                seen_expired = True
        time.sleep(0.1)
    assert seen_expired
    rc, out, err = cat(p, 1)[0]
    assert rc == 1 and "Key has expired" in err and out == b""
    r = v.cli("get", "app", "session")
    assert r.returncode == 1 and b"Key has expired" in r.stderr and r.stdout == b""
    assert any(e["op"] == "read" and e["key"] == "session" and
               e.get("result") in ("EKEYEXPIRED", -errno.EKEYEXPIRED) or
               ("EKEYEXPIRED" in json.dumps(e) and e["key"] == "session")
               for e in audit(v)), "expired opens are audited"
    # Writers may still replace it: the new version has no limit.
    write_file(p, "fresh")
    assert read_file(p) == b"fresh"


@pytest.mark.parametrize("n", [1, 3])
def test_max_reads_with_eight_concurrent_readers(app, n):
    v = app
    p = v.path("app", "bootstrap")
    r = v.cli("set", "--max-reads", str(n), "app", "bootstrap", input="b00t")
    assert r.returncode == 0, r.stderr.decode()
    results = cat(p, 8)
    ok = [out for rc, out, err in results if rc == 0]
    refused = [err for rc, out, err in results if rc != 0]
    assert len(ok) == n, results
    assert all(out == b"b00t" for out in ok)
    assert all("Key has expired" in err for err in refused), refused
    # Then it behaves as expired, for the mount and the CLI alike.
    assert cat(p, 1)[0][0] == 1
    assert v.cli("get", "app", "bootstrap").returncode == 1
    r = v.cli("ls", "-l", "app")
    assert f"EXPIRED: {n} of {n} reads" in r.stdout.decode()
    # A read+write open can't read it around the count.
    with pytest.raises(OSError) as e:
        os.open(p, os.O_RDWR)
    assert e.value.errno in (errno.EKEYEXPIRED, errno.EACCES)


def test_the_expires_xattr(app, users):
    v = app
    p = v.path("app", "K")
    write_file(p, "value")
    os.chmod(p, 0o644)
    assert os.getxattr(p, "user.vaultfs.version") == b"1"
    with pytest.raises(OSError) as e:
        os.getxattr(p, "user.vaultfs.expires")
    assert e.value.errno == errno.ENODATA
    os.setxattr(p, "user.vaultfs.expires", b"2099-01-01")
    assert os.getxattr(p, "user.vaultfs.expires") == b"2099-01-01T00:00:00Z"
    assert "user.vaultfs.expires" in os.listxattr(p)
    assert read_file(p) == b"value"
    os.setxattr(p, "user.vaultfs.expires", b"@1000")
    with pytest.raises(OSError) as e:
        read_file(p)
    assert e.value.errno == errno.EKEYEXPIRED
    assert "Key has expired" in users.sh("alice", f"cat {p}").stderr.decode()
    os.removexattr(p, "user.vaultfs.expires")
    assert read_file(p) == b"value"
    for bad in (b"tomorrow", b"2026-13-01", b"-5d", b""):
        with pytest.raises(OSError) as e:
            os.setxattr(p, "user.vaultfs.expires", bad)
        assert e.value.errno == errno.EINVAL, bad
    # Only the owner (or root) may set it: alice can't make it last.
    r = users.sh("alice", f"setfattr -n user.vaultfs.expires -v 1d {p}")
    assert r.returncode != 0


def test_check_warns_ahead_and_fails_after(app):
    v = app
    assert v.cli("set", "--expires", "2d", "app", "soon", input="x").returncode == 0
    r = v.cli("check")
    assert r.returncode == 0, r.stderr.decode()
    assert "warning: app/soon expires" in r.stderr.decode()
    r = v.cli("check", "--warn", "1d")
    assert r.returncode == 0 and "soon" not in r.stderr.decode()
    assert v.cli("set", "--expires", "@1000", "app", "gone", input="x").returncode == 0
    r = v.cli("check", "app")
    assert r.returncode == 3
    assert "app/gone: expired" in r.stderr.decode()
    ex = json.loads(v.cli("export", "app").stdout)
    keys = {k["name"]: k for k in ex["instances"][0]["keys"]}
    assert keys["gone"]["expired"] is True and keys["gone"]["expires"] == \
        "1970-01-01T00:16:40Z"
    assert keys["soon"]["expired"] is False
    assert "(current, expires" in v.cli("history", "app", "soon").stdout.decode()
    assert "EXPIRED" in v.cli("ls", "-l", "app").stdout.decode()
    r = v.cli("set", "--expires", "someday", "app", "x", input="x")
    assert r.returncode == 2 and b"bad --expires" in r.stderr


# -- whoever can write the database ------------------------------------------

def sql(path, *stmts):
    conn = sqlite3.connect(path, timeout=10)
    try:
        rows = [conn.execute(s).fetchall() for s in stmts]
        conn.commit()
        return rows
    finally:
        conn.close()


def sid(v, name):
    return sql(v.db, f"SELECT id FROM secrets WHERE name = '{name}'")[0][0][0]


def refused(v, key):
    r = v.cli("get", "app", key)
    assert r.returncode != 0 and r.stdout == b"", "the value must not be served"
    rc, out, err = cat(v.path("app", key), 1)[0]
    assert rc != 0 and out == b""
    return r.stderr.decode() + err


def test_tampering_with_a_limit_is_refused(app):
    v = app
    assert v.cli("set", "--expires", "@1000", "app", "E", input="e").returncode == 0
    assert v.cli("set", "--max-reads", "2", "app", "M", input="m").returncode == 0
    e, m = sid(v, "E"), sid(v, "M")
    # Removing the record does not lift the limit.
    sql(v.db, f"DELETE FROM secret_attrs WHERE secret_id = {e}")
    assert "expired" in refused(v, "E")
    # Extending it (to 2096) breaks its tag.
    assert v.cli("set", "--expires", "@2000", "app", "E", input="e").returncode == 0
    sql(v.db, f"UPDATE secret_attrs SET value = CAST(replace(CAST(value AS TEXT), "
              f"'e=2000000000000 ', 'e=4000000000000000000 ') AS BLOB) "
              f"WHERE secret_id = {e}")
    assert b"e=4000000000000000000 " in sql(
        v.db, f"SELECT value FROM secret_attrs WHERE secret_id = {e}")[0][0][0]
    assert "Input/output error" in refused(v, "E")
    # Clearing the flag breaks the row's tag.
    sql(v.db, f"UPDATE secrets SET flags = flags & ~4 WHERE id = {m}")
    assert "Input/output error" in refused(v, "M")
    sql(v.db, f"UPDATE secrets SET flags = flags | 4 WHERE id = {m}")


def test_a_read_count_cant_be_wound_back(app):
    v = app
    assert v.cli("set", "--max-reads", "1", "app", "M", input="m").returncode == 0
    m = sid(v, "M")
    rec = sql(v.db, f"SELECT value, mac FROM secret_attrs WHERE secret_id = {m}")[0][0]
    row = sql(v.db, f"SELECT version, flags, blob, mac FROM secrets WHERE id = {m}")[0][0]
    assert read_file(v.path("app", "M")) == b"m"
    assert cat(v.path("app", "M"), 1)[0][0] == 1
    # The record as it was before the read, tag and all: another version's.
    conn = sqlite3.connect(v.db, timeout=10)
    conn.execute("UPDATE secret_attrs SET value = ?, mac = ? WHERE secret_id = ?",
                 (rec[0], rec[1], m))
    conn.commit()
    assert "expired" in refused(v, "M")
    # And the secret's row too: an older row, which the instance state refuses.
    conn.execute("UPDATE secrets SET version = ?, flags = ?, blob = ?, mac = ? WHERE id = ?",
                 (row[0], row[1], row[2], row[3], m))
    conn.commit()
    conn.close()
    assert "Input/output error" in refused(v, "M")


def test_a_template_cant_read_around_a_limit(app):
    v = app
    assert v.cli("set", "--max-reads", "1", "app", "T", input="once").returncode == 0
    r = v.cli("template", "set", "app", "tpl", input="T={{ T }}\n")
    assert r.returncode == 0, r.stderr.decode()
    for _ in range(3):
        with pytest.raises(OSError) as e:
            read_file(v.path("app", "tpl"))
        assert e.value.errno == errno.EACCES
    assert v.cli("render", "app", "tpl").returncode != 0
    # The one read is still there, for the one reader it is meant for.
    assert read_file(v.path("app", "T")) == b"once"
    assert cat(v.path("app", "T"), 1)[0][0] == 1
