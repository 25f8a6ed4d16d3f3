"""Other users: the mode bits of secrets and instances are enforced."""
import os
import stat

CONFIG = """\
[instance solo]
owner = {alice}
group = {team}
mode = 0755

[instance team]
owner = {alice}
group = {team}
mode = 0755
secret_mode = 0640

[instance locked]
owner = {alice}
group = {alice}
mode = 0700
"""


def config(users):
    """The config, with user and group given by name."""
    return CONFIG.format(alice=users.name["alice"], team=users.team)


def test_config_instances_owner_group_mode(users, vault_factory):
    v = vault_factory(config=config(users))
    assert sorted(os.listdir(v.mnt)) == ["locked", "solo", "team"]
    st = os.stat(v.path("team"))
    assert stat.S_ISDIR(st.st_mode)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == \
        (users.uid["alice"], users.team_gid, 0o755)
    st = os.stat(v.path("locked"))
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == \
        (users.uid["alice"], users.gid["alice"], 0o700)


def test_0600_secret_only_owner_reads(users, vault_factory):
    v = vault_factory(config=config(users))
    p = v.path("solo", "TOKEN")
    r = users.sh("alice", f"echo alice-secret > {p}")
    assert r.returncode == 0, r.stderr
    st = os.stat(p)
    assert st.st_uid == users.uid["alice"], "a new secret is owned by its writer"
    assert st.st_gid == users.team_gid, "a new secret gets the instance's group"
    assert stat.S_IMODE(st.st_mode) == 0o600

    assert users.try_open("alice", p) == "OK:alice-secret"
    # Bob shares no group with alice: cat fails with "Permission denied".
    assert users.try_open("bob", p) == "EACCES"
    # Carol is in the file's group, but 0600 gives the group nothing.
    assert users.try_open("carol", p) == "EACCES"
    assert users.try_open("bob", p, "w") == "EACCES"
    r = users.sh("bob", f"cat {p}")
    assert r.returncode != 0 and b"Permission denied" in r.stderr
    assert b"alice-secret" not in r.stdout
    # The failed attempts changed nothing.
    assert users.try_open("alice", p) == "OK:alice-secret"


def test_0640_secret_group_member_reads(users, vault_factory):
    v = vault_factory(config=config(users))
    p = v.path("team", "SHARED")
    r = users.sh("alice", f"echo team-secret > {p}")
    assert r.returncode == 0, r.stderr
    st = os.stat(p)
    # 0666 asked, umask 022 -> 0644, secret_mode 0640 -> 0640.
    assert stat.S_IMODE(st.st_mode) == 0o640
    assert st.st_gid == users.team_gid
    assert users.try_open("carol", p) == "OK:team-secret"
    assert users.try_open("carol", p, "w") == "EACCES", "group has no write bit"
    assert users.try_open("bob", p) == "EACCES", "others have no read bit"
    assert users.try_open("alice", p) == "OK:team-secret"


def test_umask_narrows_new_secret_mode(users, vault_factory):
    v = vault_factory(config=config(users))
    p = v.path("team", "PRIVATE")
    r = users.sh("alice", f"umask 077; echo x > {p}")
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o600
    assert users.try_open("carol", p) == "EACCES"


def test_chmod_by_owner_opens_to_group(users, vault_factory):
    v = vault_factory(config=config(users))
    p = v.path("solo", "K")
    r = users.sh("alice", f"echo v > {p}")
    assert r.returncode == 0, r.stderr
    assert users.try_open("carol", p) == "EACCES"
    r = users.sh("alice", f"chmod 0640 {p}")
    assert r.returncode == 0, r.stderr
    assert users.try_open("carol", p) == "OK:v"
    assert users.try_open("bob", p) == "EACCES"
    # Bob may not change someone else's secret's mode or owner.
    r = users.sh("bob", f"chmod 0644 {p}")
    assert r.returncode != 0
    r = users.sh("bob", f"chown {users.name['bob']} {p}")
    assert r.returncode != 0
    st = os.stat(p)
    assert stat.S_IMODE(st.st_mode) == 0o640 and st.st_uid == users.uid["alice"]
    # The new mode is persisted.
    v.remount()
    assert users.try_open("carol", p) == "OK:v"
    assert users.try_open("bob", p) == "EACCES"


def test_others_cannot_create_delete_or_rename(users, vault_factory):
    v = vault_factory(config=config(users))
    d = v.path("solo")
    r = users.sh("alice", f"echo v > {d}/K")
    assert r.returncode == 0, r.stderr
    r = users.sh("bob", f"echo evil > {d}/NEW")
    assert r.returncode != 0 and b"Permission denied" in r.stderr
    r = users.sh("bob", f"rm -f {d}/K")
    assert r.returncode != 0
    r = users.sh("bob", f"mv {d}/K {d}/K2")
    assert r.returncode != 0
    assert sorted(os.listdir(d)) == ["K"]
    assert users.try_open("alice", f"{d}/K") == "OK:v"


def test_locked_instance_not_even_listed(users, vault_factory):
    v = vault_factory(config=config(users))
    r = users.sh("alice", f"echo v > {v.path('locked', 'K')}")
    assert r.returncode == 0, r.stderr
    r = users.sh("bob", f"ls {v.path('locked')}")
    assert r.returncode != 0 and b"Permission denied" in r.stderr
    assert users.try_open("bob", v.path("locked", "K")) == "EACCES"
    assert users.try_open("carol", v.path("locked", "K")) == "EACCES"


def test_chown_to_other_user_gives_access(users, vault_factory):
    v = vault_factory(config=config(users))
    p = v.path("solo", "HANDOVER")
    r = users.sh("alice", f"echo handed > {p}")
    assert r.returncode == 0, r.stderr
    os.chown(p, users.uid["bob"], -1)
    assert users.try_open("bob", p) == "OK:handed"
    assert users.try_open("alice", p) == "EACCES"
    v.remount()
    assert os.stat(p).st_uid == users.uid["bob"]
    assert users.try_open("bob", p) == "OK:handed"
