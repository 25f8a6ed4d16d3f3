"""Master-key rotation and the audit log together: the chain's key is sealed
under the master key, so a rotation must carry it over."""
import os

from conftest import VAULTFS_BIN, read_file, run, write_file


def test_audit_chain_survives_master_rotation(vault):
    os.mkdir(vault.path("app"))
    write_file(vault.path("app", "K"), b"before")
    new_key = os.path.join(vault.dir, "new.key")
    assert run([VAULTFS_BIN, "keygen", "--out", new_key]).returncode == 0
    r = vault.cli("rotate-key", "--new-key-file", new_key)
    assert r.returncode == 0, r.stderr
    # The mount keeps serving and recording; the CLI (with the key file that
    # rotate-key replaced) can still open the audit log and verify it.
    assert read_file(vault.path("app", "K")) == b"before"
    write_file(vault.path("app", "K"), b"after")
    assert vault.get("app", "K") == b"after"
    r = vault.cli("audit", "--verify")
    assert r.returncode == 0, f"the chain must verify after a rotation: {r.stderr!r}"
    r = vault.cli("audit", "--key", "K")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count(b"write app/K") >= 2, r.stdout
