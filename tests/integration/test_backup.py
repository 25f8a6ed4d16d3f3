"""Backup while the vault is in use, restore, and export without values."""
import json
import shutil
import os
import sqlite3
import threading

from conftest import VAULTFS_BIN, read_file, run, wait_for, write_file


class KeyWriter(threading.Thread):
    """Writes K0000, K0001... through the mount until stopped; `acked` holds
    those whose close() returned 0, in order."""

    def __init__(self, v):
        super().__init__(daemon=True)
        self.v = v
        self.acked = []
        self.errors = []
        self.stop = False

    def run(self):
        i = 0
        while not self.stop:
            name = f"K{i:04d}"
            try:
                write_file(self.v.path("app", name), f"value-{i}")
                self.acked.append(name)
            except OSError as e:
                self.errors.append(e)
            i += 1


def test_backup_while_writing_then_restore(vault):
    v = vault
    os.mkdir(v.path("app"))
    w = KeyWriter(v)
    w.start()
    assert wait_for(lambda: len(w.acked) >= 20, 30)
    before = list(w.acked)
    bak = os.path.join(v.dir, "backup.db")
    r = v.cli("backup", bak)
    assert r.returncode == 0, r.stderr.decode()
    after = list(w.acked)
    assert wait_for(lambda: len(w.acked) >= len(after) + 10, 30)
    w.stop = True
    w.join(timeout=30)
    assert w.errors == [], w.errors[:3]
    assert os.stat(bak).st_mode & 0o777 == 0o600
    r = run(["sqlite3", bak, "PRAGMA integrity_check"])
    assert r.stdout.strip() == b"ok", r.stdout
    assert not os.path.exists(bak + "-wal"), "a backup is one self-contained file"

    # Change things after the backup: a key deleted, one changed.
    os.unlink(v.path("app", before[0]))
    write_file(v.path("app", before[1]), "changed after the backup")
    r = v.cli("restore", bak)
    assert r.returncode == 0, r.stderr.decode()
    assert b"it was kept as" in r.stdout and b"told the mount daemons" in r.stdout

    names = set(os.listdir(v.path("app")))
    # Every value acknowledged before the backup began is there, intact;
    # nothing acknowledged after it ended is. A file being written while
    # the snapshot was taken may be there as its writer had it then: just
    # created (empty), or whole; never a part.
    assert set(before) <= names, sorted(set(before) - names)[:5]
    assert not names & set(w.acked[len(after) + 1:])
    for name in names:
        want = f"value-{int(name[1:])}".encode()
        got = read_file(v.path("app", name))
        assert got == want if name in before else got in (b"", want), (name, got)
    # The same through the CLI, which does not go through the mount.
    assert v.get("app", before[1]) == f"value-{int(before[1][1:])}".encode()


def test_backup_refuses_existing_file(vault_unmounted):
    v = vault_unmounted
    v.set("app", "K", "v")
    bak = os.path.join(v.dir, "exists.db")
    write_file(bak, "precious")
    r = v.cli("backup", bak)
    assert r.returncode == 1 and b"exists; refusing to overwrite it" in r.stderr
    assert read_file(bak) == b"precious"


def test_restore_refuses_what_the_key_does_not_open(vault_factory, tmp_path):
    a = vault_factory(mount=False)
    b = vault_factory(mount=False)
    a.set("app", "K", "a-value")
    b.set("app", "K", "b-value")
    bak_b = str(tmp_path / "b.db")
    assert b.cli("backup", bak_b).returncode == 0
    before = a.db_fingerprint()
    r = a.cli("restore", bak_b)
    assert r.returncode == 1
    assert b"the master key does not open it" in r.stderr, r.stderr
    assert a.db_fingerprint() == before, "a refused restore changes nothing"
    assert a.get("app", "K") == b"a-value"
    # Not a vault at all, and no file.
    junk = str(tmp_path / "junk.db")
    run(["sqlite3", junk, "CREATE TABLE t (x)"])
    r = a.cli("restore", junk)
    assert r.returncode == 1 and b"not a vaultfs database" in r.stderr, r.stderr
    r = a.cli("restore", str(tmp_path / "nothing.db"))
    assert r.returncode == 1
    assert a.get("app", "K") == b"a-value"
    assert [f for f in os.listdir(a.dir) if "restoring" in f] == [], "no work file left"


def test_restore_refuses_a_tampered_backup(vault_unmounted, tmp_path):
    v = vault_unmounted
    v.set("app", "K", "v")
    v.set("app", "K", "v2")
    bak = str(tmp_path / "b.db")
    assert v.cli("backup", bak).returncode == 0
    with sqlite3.connect(bak) as c:
        c.execute("UPDATE versions SET blob = substr(blob, 1, 30) || x'00' || "
                  "substr(blob, 32)")
    r = v.cli("restore", bak)
    assert r.returncode == 1 and b"app/K version 1 does not open" in r.stderr, r.stderr


def test_restore_into_missing_vault(vault_unmounted, tmp_path):
    v = vault_unmounted
    v.set("app", "K", "v")
    bak = str(tmp_path / "b.db")
    assert v.cli("backup", bak).returncode == 0
    for f in v.db_files():
        if os.path.exists(f):
            os.unlink(f)
    r = v.cli("restore", bak)
    assert r.returncode == 0, r.stderr.decode()
    assert v.get("app", "K") == b"v"
    assert os.stat(v.db).st_mode & 0o777 == 0o600


def test_export_lists_metadata_never_values(vault_factory):
    v = vault_factory(config="[instance app]\nexpect = K1, MISSING\n"
                             "[instance planned]\nexpect = LATER\n")
    values = {"K1": "sk-live-aaaa1111", "K2": "ghp_bbbb2222", "PEM": "-----BEGIN x\nyy\n"}
    for k, val in values.items():
        write_file(v.path("app", k), val)
    write_file(v.path("app", "K1"), "sk-live-cccc3333")
    values["old"] = "sk-live-aaaa1111"
    os.setxattr(v.path("app", "K2"), "user.description", b"github token")
    r = v.cli("export", "--json")
    assert r.returncode == 0, r.stderr.decode()
    for val in list(values.values()) + ["sk-live-cccc3333"]:
        assert val.encode() not in r.stdout, "export must never contain a value"
        assert val.strip().encode() not in r.stdout
    data = json.loads(r.stdout)
    insts = {i["name"]: i for i in data["instances"]}
    assert set(insts) == {"app", "planned"}
    keys = {k["name"]: k for k in insts["app"]["keys"]}
    assert keys["K1"]["configured"] and keys["K1"]["expected"] and keys["K1"]["version"] == 2
    assert keys["K2"]["description"] == "github token" and not keys["K2"]["expected"]
    assert keys["MISSING"] == {"name": "MISSING", "configured": False, "expected": True}
    assert insts["planned"]["exists"] is True, "the mount made the config's instances"
    assert insts["planned"]["keys"] == [{"name": "LATER", "configured": False,
                                         "expected": True}]
    one = json.loads(v.cli("export", "app").stdout)
    assert [i["name"] for i in one["instances"]] == ["app"]
    r = v.cli("export", "nope")
    assert r.returncode == 1 and b"no such instance: nope" in r.stderr
    r = run([VAULTFS_BIN, "export", "--db", v.db, "--key-file", v.key, "--json", "--csv"])
    assert r.returncode == 2


def test_restore_a_backup_from_before_a_rotation(vault_unmounted, tmp_path):
    v = vault_unmounted
    v.set("app", "K", "from-before")
    bak = str(tmp_path / "b.db")
    assert v.cli("backup", bak).returncode == 0
    old = str(tmp_path / "old.key")
    shutil.copy(v.key, old)
    new = str(tmp_path / "new.key")
    assert run([VAULTFS_BIN, "keygen", "--out", new]).returncode == 0
    assert v.cli("rotate-key", "--new-key-file", new).returncode == 0
    v.set("app", "K", "after")
    r = v.cli("restore", bak)
    assert r.returncode == 1 and b"give the key of that time with --backup-key-file" \
        in r.stderr, r.stderr
    assert v.get("app", "K") == b"after"
    r = v.cli("restore", "--backup-key-file", old, bak)
    assert r.returncode == 0, r.stderr.decode()
    assert v.get("app", "K") == b"from-before", "restored, and opened with the key in use"
    r = run([VAULTFS_BIN, "ls", "--db", v.db, "--key-file", old])
    assert r.returncode == 1 and b"wrong master key" in r.stderr
    assert read_file(bak)[:16] == b"SQLite format 3\x00", "the backup file is left as it was"
    r = run([VAULTFS_BIN, "get", "--db", bak, "--key-file", old, "app", "K"])
    assert r.stdout == b"from-before"
