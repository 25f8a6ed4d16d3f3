"""Hostile neighbours (issue 12): users who share a vault can't delete,
replace or steal each other's secrets, starve each other of memory or
handles, leave plaintext in the page cache, or keep reading after a
revoke made elsewhere."""
import os
import stat

from conftest import read_file, write_file
from test_history import history


def shared_instance(vault, users, name, mode):
    """An instance owned by carol that everyone may write, mode as given
    (set with chmod through the mount, as an admin would)."""
    os.mkdir(vault.path(name))
    os.chown(vault.path(name), users.uid["carol"], users.gid["carol"])
    os.chmod(vault.path(name), mode)
    return vault.path(name)


def test_sticky_instance_keeps_its_bit_and_protects_each_users_secrets(vault, users):
    d = shared_instance(vault, users, "shared", 0o1777)
    # The bit is kept: stat shows drwxrwxrwt, through the mount and after it.
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o1777
    assert vault.cli("ls", "-l").stdout.decode().count("rwt") == 1

    assert users.sh("alice", f"echo alice-1 > {d}/ALICE && echo alice-2 > {d}/ALICE")\
        .returncode == 0
    assert users.sh("bob", f"echo bob > {d}/BOB").returncode == 0
    # bob can't delete, move, or replace alice's secret...
    r = users.sh("bob", f"rm -f {d}/ALICE")
    assert r.returncode != 0 and b"Operation not permitted" in r.stderr
    r = users.sh("bob", f"mv {d}/BOB {d}/ALICE")
    assert r.returncode != 0 and b"Operation not permitted" in r.stderr
    r = users.sh("bob", f"mv {d}/ALICE {d}/MINE")
    assert r.returncode != 0 and b"Operation not permitted" in r.stderr
    assert vault.get("shared", "ALICE") == b"alice-2"
    assert [n for n, *_ in history(vault, "shared", "ALICE")] == [2, 1]
    # ... nor can alice touch bob's; each renames and removes their own.
    assert users.sh("alice", f"rm -f {d}/BOB").returncode != 0
    assert users.sh("bob", f"mv {d}/BOB {d}/BOB2 && rm {d}/BOB2").returncode == 0
    assert users.sh("alice", f"mv {d}/ALICE {d}/ALICE2").returncode == 0
    # The instance's owner (carol) and root may remove anyone's.
    assert users.sh("bob", f"echo bob > {d}/BOB").returncode == 0
    assert users.sh("carol", f"rm -f {d}/ALICE2").returncode == 0
    os.unlink(os.path.join(d, "BOB"))
    assert os.listdir(d) == []


def test_sticky_instance_from_the_config(vault_factory, users):
    v = vault_factory(config="[instance shared]\nmode = 1777\n", mount=False)
    v.mount()
    assert stat.S_IMODE(os.stat(v.path("shared")).st_mode) == 0o1777
    d = v.path("shared")
    assert users.sh("alice", f"echo a > {d}/A").returncode == 0
    r = users.sh("bob", f"rm -f {d}/A")
    assert r.returncode != 0 and b"Operation not permitted" in r.stderr


def test_renaming_over_someone_elses_secret_never_hands_over_its_history(vault, users):
    """Without the sticky bit, a writable instance lets bob replace alice's
    secret, as on any filesystem; but her old values go to the trash with
    her secret, never into the history of bob's."""
    d = shared_instance(vault, users, "open", 0o777)
    assert users.sh("alice", f"echo alice-1 > {d}/K && echo alice-2 > {d}/K")\
        .returncode == 0
    assert users.sh("bob", f"echo bob-1 > {d}/T && mv {d}/T {d}/K").returncode == 0
    assert read_file(os.path.join(d, "K"), ) == b"bob-1"
    assert os.stat(os.path.join(d, "K")).st_uid == users.uid["bob"]
    rows = history(vault, "open", "K")
    assert [(n, by) for n, _, by, _ in rows] == [(1, users.uid["bob"])], \
        "only bob's own version"
    assert vault.cli("get", "--version", "2", "open", "K").returncode != 0
    # alice's secret, history included, waits in the trash for an admin.
    deleted = vault.cli("ls", "--deleted", "open").stdout.decode()
    assert "K" in deleted, deleted
    # An owner's own rename over (an editor's save) still continues it.
    assert users.sh("bob", f"echo bob-2 > {d}/T && mv {d}/T {d}/K").returncode == 0
    assert [n for n, *_ in history(vault, "open", "K")] == [2, 1]
    # So does root's, editing anyone's secret.
    write_file(os.path.join(d, "T"), "root-3")
    os.rename(os.path.join(d, "T"), os.path.join(d, "K"))
    assert [n for n, *_ in history(vault, "open", "K")] == [3, 2, 1]
