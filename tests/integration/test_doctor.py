"""vaultfs doctor: one line per check, and a non-zero exit on anything insecure."""
import os
import re

from conftest import VAULTFS_BIN, run

LINE = re.compile(r"^(secure|weak|insecure) +(\S.*)$")


def doctor(v, *args, env=None, key=True):
    r = v.cli("doctor", *args, env=env, key=key)
    out = r.stdout.decode()
    lines = out.splitlines()
    assert lines, r.stderr
    checks = lines[:-1]
    for line in checks:
        assert LINE.match(line), f"not a verdict line: {line!r}"
    assert re.match(r"^\d+ secure, \d+ weak, \d+ insecure$", lines[-1]), lines[-1]
    return r.returncode, checks


def verdict(checks, subject):
    """The verdict of the first line about subject (a prefix of its text)."""
    for line in checks:
        v, text = LINE.match(line).groups()
        if text.startswith(subject):
            return v, text
    raise AssertionError(f"no line about {subject!r} in:\n" + "\n".join(checks))


def test_healthy_vault(vault):
    code, checks = doctor(vault)
    assert code == 0, checks
    assert verdict(checks, "swap:")[0] in ("secure", "weak")
    assert verdict(checks, "memory locking:")[0] in ("secure", "weak")
    assert verdict(checks, "core dumps:")
    v, text = verdict(checks, f"mount {vault.mnt}:")
    assert v == "secure" and "default_permissions" in text
    assert verdict(checks, f"database {vault.db}:") == \
        ("secure", f"database {vault.db}: mode 0600, owner uid 0")
    assert verdict(checks, f"key file {vault.key}:")[0] == "secure"
    assert verdict(checks, "daemon user:")[0] == "weak", "root while serving is weak"
    assert verdict(checks, "audit log:")[0] == "secure"


def test_core_dumps_of_running_daemon(vault):
    code, checks = doctor(vault)
    # The daemon that holds keys is the serving process, the holder's worker.
    assert any(f"core dumps: off for the daemon (pid {vault.worker_pid()})" in c and
               c.startswith("secure") for c in checks), checks


def test_readable_key_file_is_insecure(vault_unmounted):
    v = vault_unmounted
    os.chmod(v.key, 0o644)
    code, checks = doctor(v)
    assert code == 1
    assert verdict(checks, f"key file {v.key}:") == \
        ("insecure", f"key file {v.key}: mode 0644, readable by group or others")


def test_writable_database_is_insecure(vault_unmounted):
    v = vault_unmounted
    os.chmod(v.db, 0o666)
    code, checks = doctor(v)
    assert code == 1
    assert verdict(checks, f"database {v.db}:")[0] == "insecure"
    os.chmod(v.db, 0o644)
    code, checks = doctor(v)
    assert code == 0, "world-readable ciphertext is weak, not insecure"
    assert verdict(checks, f"database {v.db}:")[0] == "weak"


def test_unlocked_memory_allowed_is_insecure(vault_unmounted):
    v = vault_unmounted
    v.config = v.write_config("[vault]\nallow_unlocked_memory = yes\n")
    code, checks = doctor(v)
    assert code == 1
    assert verdict(checks, "memory locking:")[0] == "insecure"


def test_budget_reported(vault_unmounted):
    v = vault_unmounted
    v.config = v.write_config("[vault]\nmemlock_budget = 4M\n")
    code, checks = doctor(v)
    v_, text = verdict(checks, "memory locking:")
    assert v_ == "secure" and "memlock_budget 4M" in text


def test_key_in_environment_is_weak(vault_unmounted):
    v = vault_unmounted
    code, checks = doctor(v, env={"VAULTFS_KEY": v.key_hex()}, key=False)
    assert code == 0
    v_, text = verdict(checks, "key:")
    assert v_ == "weak" and "VAULTFS_KEY" in text


def test_missing_database_is_insecure(vault_unmounted):
    v = vault_unmounted
    missing = os.path.join(v.dir, "nope.db")
    r = run([VAULTFS_BIN, "doctor", "--db", missing, "--key-file", v.key])
    assert r.returncode == 1
    assert f"insecure database {missing}: No such file or directory" in \
        re.sub(r" +", " ", r.stdout.decode())


def test_doctor_needs_no_key(vault_unmounted):
    v = vault_unmounted
    code, checks = doctor(v, key=False)
    assert verdict(checks, "key:")[0] == "weak"


def test_reports_only_this_vaults_daemon(vault_factory):
    """With two vaults mounted, doctor run for one names that vault's
    daemon, never the other's."""
    a, b = vault_factory(), vault_factory()
    code, checks = doctor(a)
    cores = [c for c in checks if "core dumps: off for the daemon" in c]
    assert any(f"(pid {a.worker_pid()})" in c for c in cores), checks
    assert not any(f"(pid {b.worker_pid()})" in c for c in cores), checks


def test_two_vaults_each_sees_its_own_daemon(vault_factory):
    """Two vaults mounted on one host: doctor run against one names that
    vault's daemon and mount, never the other's."""
    a = vault_factory()
    b = vault_factory()
    for mine, other in ((a, b), (b, a)):
        code, checks = doctor(mine)
        assert code == 0, checks
        cores = [c for c in checks if c.startswith("secure   core dumps: off for the daemon")]
        assert cores == [f"secure   core dumps: off for the daemon (pid {mine.worker_pid()}): "
                         "RLIMIT_CORE 0 and not dumpable"], checks
        mounts = [c for c in checks if " mount " in c or " mounts: " in c]
        assert len(mounts) == 1 and f"mount {mine.mnt}:" in mounts[0], checks
        assert not any(other.mnt in c for c in checks), checks
        assert not any(f"pid {other.worker_pid()})" in c for c in checks), checks


def test_vault_not_mounted_while_another_is(vault_factory):
    """A vault with no daemon says so, though another vault is mounted."""
    a = vault_factory(mount=False)
    b = vault_factory()
    code, checks = doctor(a)
    assert code == 0, checks
    assert verdict(checks, "mounts:") == \
        ("secure", "mounts: this vault is not mounted on this host")
    assert not any(b.mnt in c for c in checks), checks
    assert not any(f"pid {b.worker_pid()})" in c for c in checks), checks
