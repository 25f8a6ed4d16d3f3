"""What an attacker with the database file, or a wrong key, must not get."""
import errno
import os
import sqlite3
import stat
import subprocess
import uuid

import pytest

from conftest import VAULTFS_BIN, bg_mount, errname, oserror, read_file, run, write_file

SEAL_HEADER = 1 + 24  # format byte + nonce
SEAL_TAG = 16


def db_connect(v):
    return sqlite3.connect(v.db, timeout=10)


def get_blob(v, name):
    with db_connect(v) as c:
        rows = c.execute("SELECT blob FROM secrets WHERE name = ?", (name,)).fetchall()
    c.close()
    assert len(rows) == 1, f"expected one row for {name}, got {len(rows)}"
    return bytes(rows[0][0])


def set_blob(v, name, blob):
    c = db_connect(v)
    with c:
        n = c.execute("UPDATE secrets SET blob = ? WHERE name = ?", (blob, name)).rowcount
    c.close()
    assert n == 1


def flip(blob, i):
    b = bytearray(blob)
    b[i] ^= 0x01
    return bytes(b)


def read_errno(path):
    return oserror(read_file, path)


def test_blob_layout(vault_unmounted):
    v = vault_unmounted
    v.set("t", "K", b"0123456789")
    blob = get_blob(v, "K")
    assert len(blob) == 10 + SEAL_HEADER + SEAL_TAG, "1 format byte + nonce + ct + tag"
    assert b"0123456789" not in blob


@pytest.mark.parametrize("where", ["format", "nonce", "ciphertext", "tag"])
def test_flipped_byte_gives_eio(vault_unmounted, where):
    v = vault_unmounted
    v.set("t", "A", b"value-of-A-which-is-long-enough")
    v.set("t", "B", b"value-of-B")
    blob = get_blob(v, "A")
    i = {"format": 0, "nonce": 5, "ciphertext": SEAL_HEADER + 3, "tag": len(blob) - 1}[where]
    set_blob(v, "A", flip(blob, i))

    r = v.cli("get", "t", "A")
    assert r.returncode != 0, "vaultfs get must refuse a tampered value"
    assert r.stdout == b"", "nothing of a tampered value is printed"
    assert v.get("t", "B") == b"value-of-B"

    v.mount()
    e = read_errno(v.path("t", "A"))
    assert e == errno.EIO, f"cat of a tampered key must fail with EIO, got {errname(e)}"
    r = subprocess.run(["cat", v.path("t", "A")], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE)
    assert r.returncode != 0 and r.stdout == b""
    assert read_file(v.path("t", "B")) == b"value-of-B", "other keys still read"
    assert sorted(os.listdir(v.path("t"))) == ["A", "B"]


def test_swapped_blobs_both_eio(vault_unmounted):
    v = vault_unmounted
    v.set("t", "A", b"value-of-A")
    v.set("t", "B", b"value-of-B")
    v.set("t", "C", b"value-of-C")
    a, b = get_blob(v, "A"), get_blob(v, "B")
    set_blob(v, "A", b)
    set_blob(v, "B", a)
    v.mount()
    # A ciphertext is bound to its row: moved onto another key it fails to open.
    assert read_errno(v.path("t", "A")) == errno.EIO
    assert read_errno(v.path("t", "B")) == errno.EIO
    assert read_file(v.path("t", "C")) == b"value-of-C"
    assert v.cli("get", "t", "A").returncode != 0
    assert v.cli("get", "t", "B").returncode != 0


def test_blob_copied_to_other_instance_same_name_eio(vault_unmounted):
    v = vault_unmounted
    v.set("one", "TOKEN", b"token-one")
    v.set("two", "TOKEN", b"token-two")
    c = db_connect(v)
    with c:
        rows = c.execute("SELECT s.rowid, s.blob, i.name FROM secrets s, instances i "
                         "WHERE s.name = 'TOKEN' AND s.instance_id = i.id").fetchall()
    c.close()
    assert len(rows) == 2, ("this test moves a sealed value between instances through "
                            "secrets.instance_id and instances.id; update it to the schema")
    c = db_connect(v)
    blobs = {inst: (rowid, blob) for rowid, blob, inst in rows}
    with c:
        c.execute("UPDATE secrets SET blob = ? WHERE rowid = ?",
                  (blobs["one"][1], blobs["two"][0]))
    c.close()
    v.mount()
    assert read_file(v.path("one", "TOKEN")) == b"token-one"
    assert read_errno(v.path("two", "TOKEN")) == errno.EIO


def test_tamper_while_mounted(vault):
    v = vault
    os.mkdir(v.path("t"))
    write_file(v.path("t", "A"), b"value-of-A")
    write_file(v.path("t", "B"), b"value-of-B")
    assert read_file(v.path("t", "A")) == b"value-of-A"
    set_blob(v, "A", flip(get_blob(v, "A"), SEAL_HEADER))
    # No cache: the next open reaches the database and fails to authenticate.
    assert read_errno(v.path("t", "A")) == errno.EIO
    assert read_file(v.path("t", "B")) == b"value-of-B"
    # A new value written over the damaged one is fine again.
    write_file(v.path("t", "A"), b"fresh")
    assert read_file(v.path("t", "A")) == b"fresh"


def test_tamper_logged_without_value(vault):
    v = vault
    secret = "tamper-" + uuid.uuid4().hex
    os.mkdir(v.path("t"))
    write_file(v.path("t", "A"), secret)
    set_blob(v, "A", flip(get_blob(v, "A"), SEAL_HEADER + 1))
    assert read_errno(v.path("t", "A")) == errno.EIO
    v.unmount()
    log = v.log()
    assert log.strip() != "", "the failed authentication must be logged"
    assert secret not in log and secret[:16] not in log


def grep_files(paths, needle):
    hits = []
    for p in paths:
        try:
            with open(p, "rb") as f:
                if needle in f.read():
                    hits.append(p)
        except FileNotFoundError:
            pass
    return hits


def test_plaintext_never_in_db_wal_shm(vault):
    v = vault
    os.mkdir(v.path("app"))
    via_mount = ("MOUNT-" + uuid.uuid4().hex + uuid.uuid4().hex).encode()
    via_cli = ("CLI-" + uuid.uuid4().hex + uuid.uuid4().hex).encode()
    write_file(v.path("app", "K1"), via_mount)
    # Also an old value that was overwritten, and a deleted one.
    old = ("OLD-" + uuid.uuid4().hex).encode()
    write_file(v.path("app", "K2"), old)
    write_file(v.path("app", "K2"), b"replaced")
    gone = ("GONE-" + uuid.uuid4().hex).encode()
    write_file(v.path("app", "K3"), gone)
    os.unlink(v.path("app", "K3"))
    v.set("app", "K4", via_cli)
    assert v.get("app", "K1") == via_mount  # the test is not vacuous

    for needle in (via_mount, via_cli, old, gone):
        assert grep_files(v.db_files(), needle) == [], "plaintext found while mounted"
    for p in v.db_files():
        if os.path.exists(p):
            assert stat.S_IMODE(os.stat(p).st_mode) == 0o600, \
                f"{os.path.basename(p)} must be 0600 while mounted"
    v.unmount()
    for needle in (via_mount, via_cli, old, gone):
        assert grep_files(v.db_files(), needle) == [], "plaintext found after unmount"
        assert needle.decode() not in v.log(), "plaintext in the daemon's log"
    for p in v.db_files():
        if os.path.exists(p):
            assert stat.S_IMODE(os.stat(p).st_mode) == 0o600, p


def test_db_created_0600_even_with_umask_0(tmp_path):
    key = tmp_path / "k"
    db = tmp_path / "v.db"
    r = run([VAULTFS_BIN, "keygen", "--out", str(key)], preexec_fn=lambda: os.umask(0))
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    r = run([VAULTFS_BIN, "init", "--db", str(db), "--key-file", str(key)],
            preexec_fn=lambda: os.umask(0))
    assert r.returncode == 0, r.stderr
    for p in (db, str(db) + "-wal", str(db) + "-shm"):
        if os.path.exists(p):
            assert stat.S_IMODE(os.stat(p).st_mode) == 0o600, p


# -- wrong master key ----------------------------------------------------------

@pytest.fixture
def wrong_key(tmp_path):
    p = tmp_path / "wrong.key"
    r = run([VAULTFS_BIN, "keygen", "--out", str(p)])
    assert r.returncode == 0, r.stderr
    return str(p)


def assert_wrong_key(r, what):
    err = r.stderr.decode(errors="replace")
    assert r.returncode != 0, f"{what} with a wrong key must fail"
    assert "wrong master key" in err, f"{what}: stderr should say 'wrong master key': {err!r}"


def test_wrong_key_refused_by_cli(vault_unmounted, wrong_key):
    v = vault_unmounted
    v.set("app", "K", b"v")
    before = v.db_fingerprint()
    opts = ["--db", v.db, "--key-file", wrong_key]
    for argv, inp in ((["ls"], None), (["ls", "app"], None), (["get", "app", "K"], None),
                      (["set", "app", "K"], b"evil"), (["set", "new", "K"], b"evil"),
                      (["rm", "app", "K"], None)):
        r = run([VAULTFS_BIN, argv[0]] + opts + argv[1:], input=inp)
        assert_wrong_key(r, " ".join(argv))
        assert r.stdout == b""
        assert v.db_fingerprint() == before, f"{' '.join(argv)} with a wrong key changed the db"
    assert v.get("app", "K") == b"v"
    r = v.cli("ls")
    assert "new" not in r.stdout.decode().split()


def test_wrong_key_refused_by_mount(vault_unmounted, wrong_key):
    v = vault_unmounted
    v.set("app", "K", b"v")
    before = v.db_fingerprint()
    try:
        r = bg_mount([VAULTFS_BIN, "mount", "--db", v.db, "--key-file", wrong_key, v.mnt])
        mounted = os.path.ismount(v.mnt)
    finally:
        if os.path.ismount(v.mnt):
            subprocess.run(["fusermount3", "-u", v.mnt])
    assert not mounted, "a wrong key must not mount anything"
    assert_wrong_key(r, "mount")
    assert v.db_fingerprint() == before
    # The foreground mode refuses too, and exits rather than serving.
    r = run([VAULTFS_BIN, "mount", "-f", "--db", v.db, "--key-file", wrong_key, v.mnt],
            timeout=15)
    assert_wrong_key(r, "mount -f")
    assert not os.path.ismount(v.mnt)
    assert v.db_fingerprint() == before


def test_wrong_key_refused_while_mounted(vault, wrong_key):
    v = vault
    v.set("app", "K", b"v")
    r = run([VAULTFS_BIN, "set", "--db", v.db, "--key-file", wrong_key, "app", "K"],
            input=b"evil")
    assert_wrong_key(r, "set")
    r = run([VAULTFS_BIN, "get", "--db", v.db, "--key-file", wrong_key, "app", "K"])
    assert_wrong_key(r, "get")
    assert read_file(v.path("app", "K")) == b"v"


def test_wrong_key_via_env(vault_unmounted):
    v = vault_unmounted
    v.set("app", "K", b"v")
    before = v.db_fingerprint()
    r = v.cli("get", "app", "K", key=False, env={"VAULTFS_KEY": "ab" * 32})
    assert_wrong_key(r, "get with VAULTFS_KEY")
    assert v.db_fingerprint() == before


def test_malformed_key_file_refused(vault_unmounted, tmp_path):
    v = vault_unmounted
    bad = tmp_path / "bad.key"
    bad.write_bytes(b"not-a-key\n")
    os.chmod(bad, 0o600)
    r = run([VAULTFS_BIN, "ls", "--db", v.db, "--key-file", str(bad)])
    assert r.returncode != 0
    assert r.stderr.decode().startswith("vaultfs: ")
    short = tmp_path / "short.key"
    short.write_bytes(b"a" * 63)
    os.chmod(short, 0o600)
    r = run([VAULTFS_BIN, "ls", "--db", v.db, "--key-file", str(short)])
    assert r.returncode != 0


def test_tampered_value_can_be_overwritten(vault):
    """A value that fails to authenticate reads as EIO, but the owner can
    still replace it (`echo new > key`), which is how it gets fixed."""
    import sqlite3
    os.mkdir(vault.path("app"))
    write_file(vault.path("app", "K"), b"original")
    con = sqlite3.connect(vault.db)
    blob = bytearray(con.execute("SELECT blob FROM secrets WHERE name='K'").fetchone()[0])
    blob[-1] ^= 1
    con.execute("UPDATE secrets SET blob=? WHERE name='K'", (bytes(blob),))
    con.commit()
    con.close()
    assert oserror(read_file, vault.path("app", "K")) == errno.EIO
    write_file(vault.path("app", "K"), b"replaced\n")
    assert read_file(vault.path("app", "K")) == b"replaced"
