"""The INI configuration: what it sets, and how its errors are reported."""
import os
import stat
import subprocess

import pytest

from conftest import VAULTFS_BIN, bg_mount, read_file, run, sh

BAD_CONFIGS = {
    "unknown-key": ("[vault]\nmax_value_size = 1M\ncolour = blue\n", 3),
    "bad-size": ("[vault]\nmax_value_size = 12Q\n", 2),
    "size-over-limit": ("[vault]\nmax_value_size = 1G\n", 2),
    "bad-mode": ("[vault]\n\nsecret_mode = 0999\n", 3),
    "mode-not-octal": ("[instance app]\nmode = rwx\n", 2),
    "bad-newline": ("[vault]\nnewline = sometimes\n", 2),
    "unknown-owner": ("; comment\n[instance billing]\nowner = no_such_user_vfs\n", 3),
    "unknown-group": ("[instance billing]\nowner = 0\ngroup = no_such_group_vfs\n", 3),
    "unknown-section": ("[vault]\nnewline = keep\n[bogus]\n", 3),
    "bad-instance-name": ("[vault]\n[instance a:b]\n", 2),
    "not-ini": ("[vault]\nthis line is not ini\n", 2),
    "instance-unknown-key": ("[instance app]\nmode = 0750\nowner_typo = 0\n", 3),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_config_error_reported_with_file_and_line(vault_unmounted, case):
    v = vault_unmounted
    text, line = BAD_CONFIGS[case]
    cfg = v.write_config(text, name=f"{case}.ini")
    try:
        r = bg_mount([VAULTFS_BIN, "mount", "--config", cfg, "--db", v.db, "--key-file", v.key,
                 v.mnt])
        mounted = os.path.ismount(v.mnt)
    finally:
        if os.path.ismount(v.mnt):
            subprocess.run(["fusermount3", "-u", v.mnt])
    err = r.stderr.decode(errors="replace")
    assert not mounted, f"a config with an error ({case}) must not mount anything"
    assert r.returncode != 0
    assert f"{cfg}:{line}:" in err, f"the user must be told FILE:LINE ({cfg}:{line}): {err!r}"
    assert err.startswith("vaultfs: ") and err.count("\n") == 1, err


def test_config_error_refused_by_cli_commands(vault_unmounted):
    v = vault_unmounted
    cfg = v.write_config("[vault]\nmax_value_size = lots\n", name="bad.ini")
    r = run([VAULTFS_BIN, "ls", "--config", cfg, "--db", v.db, "--key-file", v.key])
    assert r.returncode != 0
    assert f"{cfg}:2:" in r.stderr.decode()


def test_missing_config_file(vault_unmounted):
    v = vault_unmounted
    missing = os.path.join(v.dir, "nope.ini")
    r = bg_mount([VAULTFS_BIN, "mount", "--config", missing, "--db", v.db, "--key-file",
                  v.key, v.mnt])
    if os.path.ismount(v.mnt):
        subprocess.run(["fusermount3", "-u", v.mnt])
        pytest.fail("mounted with a config file that does not exist")
    assert r.returncode != 0
    assert r.stderr.decode().startswith("vaultfs: ")
    assert missing in r.stderr.decode()


def test_config_instance_numeric_owner_and_secret_mode(vault_factory):
    v = vault_factory(config="""\
[vault]
max_value_size = 1M
newline = strip
secret_mode = 0600

[instance billing]
owner = 1234
group = 5678
mode = 0750
secret_mode = 0640
""")
    st = os.stat(v.path("billing"))
    assert stat.S_ISDIR(st.st_mode)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1234, 5678, 0o750)
    r = sh(f"echo v > {v.path('billing', 'K')}")
    assert r.returncode == 0, r.stderr
    st = os.stat(v.path("billing", "K"))
    assert stat.S_IMODE(st.st_mode) == 0o640
    assert st.st_gid == 5678
    assert read_file(v.path("billing", "K")) == b"v"


def test_config_vault_secret_mode(vault_factory):
    v = vault_factory(config="[vault]\nsecret_mode = 0644\n")
    os.mkdir(v.path("app"))
    r = sh(f"umask 022; echo v > {v.path('app', 'K')}")
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(os.stat(v.path("app", "K")).st_mode) == 0o644
    # The mask only narrows: asking for less gives less.
    fd = os.open(v.path("app", "K2"), os.O_WRONLY | os.O_CREAT, 0o400)
    os.close(fd)
    assert stat.S_IMODE(os.stat(v.path("app", "K2")).st_mode) == 0o400


def test_config_secret_mode_caps_requested_mode(vault_factory):
    v = vault_factory()
    os.mkdir(v.path("app"))
    old = os.umask(0)
    try:
        fd = os.open(v.path("app", "K"), os.O_WRONLY | os.O_CREAT, 0o666)
        os.close(fd)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(v.path("app", "K")).st_mode) == 0o600, \
        "default secret_mode 0600 caps even a 0666 request with umask 0"


def test_config_applied_again_at_mount(vault_factory):
    cfg = "[instance billing]\nowner = 1234\ngroup = 5678\nmode = 0750\n"
    v = vault_factory(config=cfg)
    os.chmod(v.path("billing"), 0o777)
    os.chown(v.path("billing"), 1, 1)
    v.remount()
    st = os.stat(v.path("billing"))
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1234, 5678, 0o750), \
        "the config's owner/group/mode are applied at every mount"
