"""The store's contract tests (tests/unit: test_db, test_versions,
test_vault, cmocka) run again with the PostgreSQL store: the same
assertions, against a real PostgreSQL 15 server started here. Each test
gets a database of its own, made by its DB_CREATE open."""
import os
import subprocess

import pytest

import pgserver
from conftest import VAULTFS_BIN

pytestmark = pytest.mark.skipif(not pgserver.available(),
                                reason="PostgreSQL 15 is not installed (make test-deps)")

CONTRACT = ("test_db", "test_versions", "test_vault")


def unit_dir():
    """build/tests beside the binary (make), or BUILD/tests (make BUILD=...)."""
    d = os.path.dirname(os.path.abspath(VAULTFS_BIN))
    for cand in (os.path.join(d, "tests"), os.path.join(d, "build", "tests")):
        if os.path.isfile(os.path.join(cand, CONTRACT[0])):
            return cand
    pytest.fail(f"the unit tests are not built beside {VAULTFS_BIN}: make unit-tests")


@pytest.fixture(scope="module")
def cluster():
    c = pgserver.PgCluster()
    # The tests make a database each, as init may for a role allowed to.
    c.primary.psql(f"ALTER ROLE {pgserver.VAULT_ROLE} CREATEDB")
    yield c
    c.cleanup()


@pytest.mark.parametrize("name", CONTRACT)
def test_contract_holds_on_postgresql(cluster, name):
    p = cluster.primary
    env = dict(os.environ, PGPASSFILE=cluster.passfile,
               VAULTFS_TEST_STORE=f"postgresql:///vt_{{}}?host={p.sockdir}&port={p.port}"
                                  f"&user={pgserver.VAULT_ROLE}")
    r = subprocess.run([os.path.join(unit_dir(), name)], env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=600)
    out = r.stdout.decode(errors="replace")
    assert r.returncode == 0, f"{name} fails on PostgreSQL:\n{out[-8000:]}"
    assert "PASSED" in out and "FAILED" not in out, out[-4000:]
