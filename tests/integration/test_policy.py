"""The daemon's own access rules from the config, on top of the mode bits.

Every rule is shown allowing and denying, with real users (alice and carol
share the team group as a supplementary group; bob shares nothing) run
through setpriv.
"""
import errno
import os
import stat
import subprocess

import pytest

from conftest import VAULTFS_BIN, bg_mount, oserror, read_file, sh, write_file

# Mode bits that let everyone in, so each denial below comes from the rule.
CONFIG = """\
[instance readers]
owner = {alice}
group = {team}
mode = 0755
secret_mode = 0644
read_users = {bob}

[instance team]
owner = {alice}
group = {team}
mode = 0755
secret_mode = 0644
read_groups = {team}

[instance noroot]
owner = {alice}
group = {alice}
mode = 0755
secret_mode = 0644
root_read = no

[instance makers]
owner = {alice}
group = {team}
mode = 0777
secret_mode = 0644
create_users = {alice}

[instance teammakers]
owner = {alice}
group = {team}
mode = 0777
secret_mode = 0644
create_groups = {team}

[instance capped]
owner = {alice}
group = {team}
mode = 0755
secret_mode = 0666
max_mode = 0640
"""


def config(users, text=CONFIG):
    return text.format(alice=users.name["alice"], bob=users.name["bob"], team=users.team)


@pytest.fixture
def pv(users, vault_factory):
    v = vault_factory(config=config(users))
    for inst in ("readers", "team", "noroot"):
        r = users.sh("alice", f"echo {inst}-value > {v.path(inst, 'K')}")
        assert r.returncode == 0, r.stderr
        assert stat.S_IMODE(os.stat(v.path(inst, "K")).st_mode) == 0o644
    return v


def test_read_users(users, pv):
    p = pv.path("readers", "K")
    assert users.try_open("bob", p) == "OK:readers-value", "bob is in read_users"
    # The mode bits (0644) would let carol and the owner alice read: the rule doesn't.
    assert users.try_open("carol", p) == "EACCES"
    assert users.try_open("alice", p) == "EACCES"
    r = users.sh("carol", f"cat {p}")
    assert r.returncode != 0 and b"Permission denied" in r.stderr and r.stdout == b""
    # Root is not bound by read lists (root_read defaults to yes).
    assert read_file(p) == b"readers-value"
    # The rule is about reading: the owner may still replace the value.
    r = users.sh("alice", f"echo new > {p}")
    assert r.returncode == 0, r.stderr
    assert users.try_open("bob", p) == "OK:new"


def test_read_groups_supplementary(users, pv):
    p = pv.path("team", "K")
    # The team group is a supplementary group of alice and carol, primary of neither.
    assert users.try_open("carol", p) == "OK:team-value"
    assert users.try_open("alice", p) == "OK:team-value"
    assert users.try_open("bob", p) == "EACCES"
    # Dropping the supplementary group loses access.
    carol = users.name["carol"]
    r = sh(f"setpriv --reuid={carol} --regid={carol} --clear-groups cat {p}")
    assert r.returncode != 0 and b"Permission denied" in r.stderr


def test_root_read_no(users, pv):
    p = pv.path("noroot", "K")
    assert oserror(read_file, p) == errno.EACCES, "root may not read this instance"
    r = sh(f"cat {p}")
    assert r.returncode != 0 and r.stdout == b"" and b"Permission denied" in r.stderr
    fd = None
    try:
        assert oserror(lambda: os.open(p, os.O_RDWR)) == errno.EACCES
    finally:
        if fd is not None:
            os.close(fd)
    # Root still sees the key, and the owner reads it.
    assert os.listdir(pv.path("noroot")) == ["K"]
    assert os.stat(p).st_size == len("noroot-value")
    assert users.try_open("alice", p) == "OK:noroot-value"
    # Root may replace the value without reading it.
    write_file(p, b"rotated")
    assert users.try_open("alice", p) == "OK:rotated"
    # Other instances stay readable by root.
    assert read_file(pv.path("team", "K")) == b"team-value"


def test_create_users(users, pv):
    d = pv.path("makers")
    r = users.sh("alice", f"echo a > {d}/BY_ALICE")
    assert r.returncode == 0, r.stderr
    # The directory is 0777, so only the rule stops bob and carol.
    for who in ("bob", "carol"):
        r = users.sh(who, f"echo b > {d}/BY_{who.upper()}")
        assert r.returncode != 0 and b"Permission denied" in r.stderr, who
        r = users.sh(who, f"rm -f {d}/BY_ALICE")
        assert r.returncode != 0 and b"Permission denied" in r.stderr, who
        r = users.sh(who, f"mv {d}/BY_ALICE {d}/MOVED")
        assert r.returncode != 0 and b"Permission denied" in r.stderr, who
    assert os.listdir(d) == ["BY_ALICE"]
    r = users.sh("alice", f"mv {d}/BY_ALICE {d}/RENAMED && rm {d}/RENAMED")
    assert r.returncode == 0, r.stderr
    assert os.listdir(d) == []
    # Root is exempt from create lists.
    write_file(f"{d}/BY_ROOT", b"r")
    os.unlink(f"{d}/BY_ROOT")


def test_create_groups(users, pv):
    d = pv.path("teammakers")
    r = users.sh("carol", f"echo c > {d}/BY_CAROL")
    assert r.returncode == 0, r.stderr
    r = users.sh("bob", f"echo b > {d}/BY_BOB")
    assert r.returncode != 0 and b"Permission denied" in r.stderr
    r = users.sh("bob", f"rm -f {d}/BY_CAROL")
    assert r.returncode != 0 and b"Permission denied" in r.stderr
    assert os.listdir(d) == ["BY_CAROL"]
    r = users.sh("alice", f"rm {d}/BY_CAROL")
    assert r.returncode == 0, r.stderr


def test_max_mode_chmod(users, pv):
    p = pv.path("capped", "K")
    r = users.sh("alice", f"umask 077; echo v > {p}")
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o600
    r = users.sh("alice", f"chmod 0640 {p}")
    assert r.returncode == 0, r.stderr
    for mode in ("0644", "0604", "0660", "0700", "4640"):
        r = users.sh("alice", f"chmod {mode} {p}")
        assert r.returncode != 0, mode
        assert b"Operation not permitted" in r.stderr, (mode, r.stderr)
    # Root is held to it too: the cap is against accidents.
    assert oserror(os.chmod, p, 0o666) == errno.EPERM
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o640
    pv.remount()
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o640


def test_max_mode_create(users, pv):
    d = pv.path("capped")
    # 0666 & ~022 = 0644, then secret_mode 0666: beyond max_mode 0640.
    r = users.sh("alice", f"umask 022; echo v > {d}/WIDE")
    assert r.returncode != 0 and b"Operation not permitted" in r.stderr
    assert os.listdir(d) == [], "a refused create leaves nothing behind"
    r = users.sh("alice", f"umask 027; echo v > {d}/NARROW")
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(os.stat(f"{d}/NARROW").st_mode) == 0o640
    assert users.try_open("carol", f"{d}/NARROW") == "OK:v"


def test_vault_max_mode_default(users, vault_factory):
    v = vault_factory(config="[vault]\nmax_mode = 0600\nsecret_mode = 0644\n")
    os.mkdir(v.path("app"))
    old = os.umask(0o077)
    try:
        write_file(v.path("app", "K"), b"v")
    finally:
        os.umask(old)
    assert oserror(os.chmod, v.path("app", "K"), 0o640) == errno.EPERM
    fd = None
    e = oserror(lambda: os.open(v.path("app", "K2"), os.O_WRONLY | os.O_CREAT, 0o644))
    assert e == errno.EPERM
    assert sorted(os.listdir(v.path("app"))) == ["K"]


def test_unknown_instance_defaults(users, vault_factory):
    v = vault_factory(config=config(users))
    old = os.umask(0)
    try:
        os.mkdir(v.path("adhoc"), 0o777)
        write_file(v.path("adhoc", "K"), b"v")
    finally:
        os.umask(old)
    st = os.stat(v.path("adhoc"))
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, 0o700), \
        "an instance the config doesn't name is root's and 0700, whatever mkdir asked"
    st = os.stat(v.path("adhoc", "K"))
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o600)
    for who in ("alice", "bob"):
        assert users.try_open(who, v.path("adhoc", "K")) == "EACCES"
    # No extra rules there: root reads and may chmod as it likes.
    assert read_file(v.path("adhoc", "K")) == b"v"
    os.chmod(v.path("adhoc", "K"), 0o644)


def _cgroup2_root():
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            if fields[sep + 1] == "cgroup2" and "rw" in fields[5].split(","):
                return fields[4]
    return None


def test_read_units(users, vault_factory):
    root = _cgroup2_root()
    if root is None:
        pytest.skip("no writable cgroup2 hierarchy to put a process in a unit")
    unit_dir = os.path.join(root, f"vaultfs-test-{os.getpid()}.slice", "app.service")
    try:
        os.makedirs(unit_dir)
    except OSError as e:
        pytest.skip(f"cannot create a cgroup here: {e}")
    try:
        v = vault_factory(config="[instance svc]\nmode = 0755\nsecret_mode = 0644\n"
                                 "read_units = app.service\n")
        write_file(v.path("svc", "K"), b"unit-value")
        os.chmod(v.path("svc", "K"), 0o644)
        p = v.path("svc", "K")
        # Outside the unit, even a user the mode bits allow is refused.
        assert users.try_open("bob", p) == "EACCES"
        # The same user, moved into app.service first, reads it.
        script = f"echo $$ > {unit_dir}/cgroup.procs && exec setpriv --reuid={users.name['bob']} " \
                 f"--regid={users.name['bob']} --init-groups cat {p}"
        r = sh(script)
        assert r.returncode == 0 and r.stdout == b"unit-value", r.stderr
    finally:
        # The shell has exited; the cgroup is empty again.
        os.rmdir(unit_dir)
        os.rmdir(os.path.dirname(unit_dir))


BAD_CONFIGS = {
    "unknown-reader": ("[instance a]\nread_users = root, no_such_user_vfs\n", 2,
                       "unknown user 'no_such_user_vfs' in read_users"),
    "unknown-group": ("[instance a]\nmode = 0750\ncreate_groups = no_such_group_vfs\n", 3,
                      "unknown group 'no_such_group_vfs' in create_groups"),
    "bad-max-mode": ("[instance a]\nmax_mode = 0888\n", 2, "bad mode '0888' for max_mode"),
    "bad-root-read": ("[vault]\nroot_read = perhaps\n", 2,
                      "bad value 'perhaps' for root_read (want yes or no)"),
    "unknown-setting": ("[instance a]\nread_user = root\n", 2,
                        "unknown setting 'read_user' in [instance a]"),
    "bad-unit": ("[instance a]\nread_units = nginx\n", 2, "bad unit name 'nginx' in read_units"),
    "unknown-daemon-user": ("[vault]\nuser = no_such_user_vfs\n", 2,
                            "unknown user 'no_such_user_vfs' for user"),
    "bad-retention": ("[vault]\naudit_retention = forever\n", 2,
                      "bad duration 'forever' for audit_retention"),
    "empty-list": ("[instance a]\nread_groups =\n", 2, "empty list for read_groups"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_policy_config_refused(users, vault_unmounted, case):
    v = vault_unmounted
    text, line, reason = BAD_CONFIGS[case]
    cfg = v.write_config(text, name=f"{case}.ini")
    try:
        r = bg_mount([VAULTFS_BIN, "mount", "--config", cfg, "--db", v.db, "--key-file",
                      v.key, v.mnt])
        mounted = os.path.ismount(v.mnt)
    finally:
        if os.path.ismount(v.mnt):
            subprocess.run(["fusermount3", "-u", v.mnt])
    err = r.stderr.decode(errors="replace")
    assert not mounted and r.returncode != 0
    # What the user sees: "vaultfs: FILE:LINE: reason", and nothing else.
    assert err.startswith(f"vaultfs: {cfg}:{line}: {reason}"), err
    assert err.count("\n") == 1, err
