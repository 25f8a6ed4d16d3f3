"""Expected keys: `expect =` in the config, `ls --all` and `check`."""
import os

from conftest import VAULTFS_BIN, run, write_file

CONFIG = """\
[instance billing]
expect = OPENAI_API_KEY, STRIPE_API_KEY

[instance support-bot]
expect = TELEGRAM_TOKEN
"""


def states(v, inst):
    r = v.cli("ls", "--all", inst)
    assert r.returncode == 0, r.stderr.decode()
    return {f[0]: f[1:] for f in (line.split() for line in r.stdout.decode().splitlines())}


def test_ls_all_shows_configured_and_missing(vault_factory):
    v = vault_factory(config=CONFIG)
    write_file(v.path("billing", "OPENAI_API_KEY"), "sk-1")
    write_file(v.path("billing", "EXTRA"), "x")
    assert states(v, "billing") == {
        "EXTRA": ["configured"],
        "OPENAI_API_KEY": ["configured", "expected"],
        "STRIPE_API_KEY": ["missing", "expected"],
    }
    # Without --all, only what exists; the mount shows only what exists too.
    assert v.cli("ls", "billing").stdout.decode().split() == ["EXTRA", "OPENAI_API_KEY"]
    assert sorted(os.listdir(v.path("billing"))) == ["EXTRA", "OPENAI_API_KEY"]
    out = v.cli("ls", "-l", "--all", "billing").stdout.decode()
    assert "STRIPE_API_KEY  (missing, expected)" in out, out
    # An empty file is not a configured secret.
    open(v.path("billing", "STRIPE_API_KEY"), "w").close()
    assert states(v, "billing")["STRIPE_API_KEY"] == ["empty", "expected"]


def test_check_exit_codes(vault_factory):
    v = vault_factory(config=CONFIG, mount=False)
    r = v.cli("check")
    assert r.returncode == 3
    err = r.stderr.decode()
    for k in ("billing/OPENAI_API_KEY: missing", "billing/STRIPE_API_KEY: missing",
              "support-bot/TELEGRAM_TOKEN: missing", "3 of 3 expected keys missing"):
        assert k in err, err
    assert f"expected by {v.config}:1" in err
    v.set("billing", "OPENAI_API_KEY", "sk")
    v.set("billing", "STRIPE_API_KEY", "")
    v.set("support-bot", "TELEGRAM_TOKEN", "t")
    r = v.cli("check")
    assert r.returncode == 3 and r.stderr.decode().startswith(
        "vaultfs: billing/STRIPE_API_KEY: empty"), r.stderr
    r = v.cli("check", "support-bot")
    assert r.returncode == 0, "only the named instance is checked"
    v.set("billing", "STRIPE_API_KEY", "rk")
    r = v.cli("check")
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout == b"vaultfs: 3 expected keys configured in 2 instances\n"
    # A deleted key is missing again.
    assert v.cli("rm", "billing", "STRIPE_API_KEY").returncode == 0
    assert v.cli("check").returncode == 3
    # A wrong key or no vault: 1, not 3.
    other = os.path.join(v.dir, "other.key")
    assert run([VAULTFS_BIN, "keygen", "--out", other]).returncode == 0
    r = run([VAULTFS_BIN, "check", "--config", v.config, "--db", v.db, "--key-file", other])
    assert r.returncode == 1 and b"wrong master key" in r.stderr
    r = v.cli("check", "no-such")
    assert r.returncode == 1 and b"no such instance: no-such" in r.stderr


def test_check_without_expectations(vault_unmounted):
    r = vault_unmounted.cli("check")
    assert r.returncode == 0
    assert r.stdout == b"vaultfs: 0 expected keys configured in 0 instances\n"


def test_expected_instance_not_created_yet(vault_factory):
    v = vault_factory(config=CONFIG, mount=False)
    assert v.cli("ls").stdout == b"", "the CLI doesn't create the config's instances"
    assert states(v, "support-bot") == {"TELEGRAM_TOKEN": ["missing", "expected"]}
    r = v.cli("export", "support-bot")
    assert r.returncode == 0 and b'"exists": false' in r.stdout


def test_check_as_exec_start_pre(vault_factory, tmp_path):
    """The way a unit or a container health check uses it: the exit status."""
    v = vault_factory(config=CONFIG, mount=False)
    script = tmp_path / "start.sh"
    script.write_text(f"{VAULTFS_BIN} check --config {v.config} --db {v.db} "
                      f"--key-file {v.key} billing || exit $?\necho started\n")
    r = run(["/bin/sh", str(script)])
    assert r.returncode == 3 and b"started" not in r.stdout
    v.set("billing", "OPENAI_API_KEY", "a")
    v.set("billing", "STRIPE_API_KEY", "b")
    r = run(["/bin/sh", str(script)])
    assert r.returncode == 0 and r.stdout.endswith(b"started\n")
