"""Other users: the mode bits of secrets and instances are enforced."""
import os
import stat

CONFIG = """\
[instance solo]
owner = vfs_alice
group = vfs_team
mode = 0755

[instance team]
owner = vfs_alice
group = vfs_team
mode = 0755
secret_mode = 0640

[instance locked]
owner = vfs_alice
group = vfs_alice
mode = 0700
"""


def test_config_instances_owner_group_mode(users, vault_factory):
    v = vault_factory(config=CONFIG)
    assert sorted(os.listdir(v.mnt)) == ["locked", "solo", "team"]
    st = os.stat(v.path("team"))
    assert stat.S_ISDIR(st.st_mode)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == \
        (users.uid["vfs_alice"], users.team_gid, 0o755)
    st = os.stat(v.path("locked"))
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == \
        (users.uid["vfs_alice"], users.gid["vfs_alice"], 0o700)


def test_0600_secret_only_owner_reads(users, vault_factory):
    v = vault_factory(config=CONFIG)
    p = v.path("solo", "TOKEN")
    r = users.sh("vfs_alice", f"echo alice-secret > {p}")
    assert r.returncode == 0, r.stderr
    st = os.stat(p)
    assert st.st_uid == users.uid["vfs_alice"], "a new secret is owned by its writer"
    assert st.st_gid == users.team_gid, "a new secret gets the instance's group"
    assert stat.S_IMODE(st.st_mode) == 0o600

    assert users.try_open("vfs_alice", p) == "OK:alice-secret"
    # Bob shares no group with alice: cat fails with "Permission denied".
    assert users.try_open("vfs_bob", p) == "EACCES"
    # Carol is in the file's group, but 0600 gives the group nothing.
    assert users.try_open("vfs_carol", p) == "EACCES"
    assert users.try_open("vfs_bob", p, "w") == "EACCES"
    r = users.sh("vfs_bob", f"cat {p}")
    assert r.returncode != 0 and b"Permission denied" in r.stderr
    assert b"alice-secret" not in r.stdout
    # The failed attempts changed nothing.
    assert users.try_open("vfs_alice", p) == "OK:alice-secret"


def test_0640_secret_group_member_reads(users, vault_factory):
    v = vault_factory(config=CONFIG)
    p = v.path("team", "SHARED")
    r = users.sh("vfs_alice", f"echo team-secret > {p}")
    assert r.returncode == 0, r.stderr
    st = os.stat(p)
    # 0666 asked, umask 022 -> 0644, secret_mode 0640 -> 0640.
    assert stat.S_IMODE(st.st_mode) == 0o640
    assert st.st_gid == users.team_gid
    assert users.try_open("vfs_carol", p) == "OK:team-secret"
    assert users.try_open("vfs_carol", p, "w") == "EACCES", "group has no write bit"
    assert users.try_open("vfs_bob", p) == "EACCES", "others have no read bit"
    assert users.try_open("vfs_alice", p) == "OK:team-secret"


def test_umask_narrows_new_secret_mode(users, vault_factory):
    v = vault_factory(config=CONFIG)
    p = v.path("team", "PRIVATE")
    r = users.sh("vfs_alice", f"umask 077; echo x > {p}")
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o600
    assert users.try_open("vfs_carol", p) == "EACCES"


def test_chmod_by_owner_opens_to_group(users, vault_factory):
    v = vault_factory(config=CONFIG)
    p = v.path("solo", "K")
    r = users.sh("vfs_alice", f"echo v > {p}")
    assert r.returncode == 0, r.stderr
    assert users.try_open("vfs_carol", p) == "EACCES"
    r = users.sh("vfs_alice", f"chmod 0640 {p}")
    assert r.returncode == 0, r.stderr
    assert users.try_open("vfs_carol", p) == "OK:v"
    assert users.try_open("vfs_bob", p) == "EACCES"
    # Bob may not change someone else's secret's mode or owner.
    r = users.sh("vfs_bob", f"chmod 0644 {p}")
    assert r.returncode != 0
    r = users.sh("vfs_bob", f"chown vfs_bob {p}")
    assert r.returncode != 0
    st = os.stat(p)
    assert stat.S_IMODE(st.st_mode) == 0o640 and st.st_uid == users.uid["vfs_alice"]
    # The new mode is persisted.
    v.remount()
    assert users.try_open("vfs_carol", p) == "OK:v"
    assert users.try_open("vfs_bob", p) == "EACCES"


def test_others_cannot_create_delete_or_rename(users, vault_factory):
    v = vault_factory(config=CONFIG)
    d = v.path("solo")
    r = users.sh("vfs_alice", f"echo v > {d}/K")
    assert r.returncode == 0, r.stderr
    r = users.sh("vfs_bob", f"echo evil > {d}/NEW")
    assert r.returncode != 0 and b"Permission denied" in r.stderr
    r = users.sh("vfs_bob", f"rm -f {d}/K")
    assert r.returncode != 0
    r = users.sh("vfs_bob", f"mv {d}/K {d}/K2")
    assert r.returncode != 0
    assert sorted(os.listdir(d)) == ["K"]
    assert users.try_open("vfs_alice", f"{d}/K") == "OK:v"


def test_locked_instance_not_even_listed(users, vault_factory):
    v = vault_factory(config=CONFIG)
    r = users.sh("vfs_alice", f"echo v > {v.path('locked', 'K')}")
    assert r.returncode == 0, r.stderr
    r = users.sh("vfs_bob", f"ls {v.path('locked')}")
    assert r.returncode != 0 and b"Permission denied" in r.stderr
    assert users.try_open("vfs_bob", v.path("locked", "K")) == "EACCES"
    assert users.try_open("vfs_carol", v.path("locked", "K")) == "EACCES"


def test_chown_to_other_user_gives_access(users, vault_factory):
    v = vault_factory(config=CONFIG)
    p = v.path("solo", "HANDOVER")
    r = users.sh("vfs_alice", f"echo handed > {p}")
    assert r.returncode == 0, r.stderr
    os.chown(p, users.uid["vfs_bob"], -1)
    assert users.try_open("vfs_bob", p) == "OK:handed"
    assert users.try_open("vfs_alice", p) == "EACCES"
    v.remount()
    assert os.stat(p).st_uid == users.uid["vfs_bob"]
    assert users.try_open("vfs_bob", p) == "OK:handed"
