"""Many hosts on one PostgreSQL database: two daemons with configurations of
their own, on one vault, stand for two hosts. A real PostgreSQL 15 server
(pgserver.py) runs in a temporary directory for each test."""
import errno
import os
import shutil
import tempfile
import threading
import time

import pytest

import conftest
import pgserver
from conftest import VAULTFS_BIN, errname, oserror, read_file, run, wait_for, write_file

pytestmark = pytest.mark.skipif(not pgserver.available(),
                                reason="PostgreSQL 15 is not installed (make test-deps)")

class Host(conftest.Vault):
    """One host of a fleet: its own directory, configuration, mount point and
    daemon, on the cluster's database, with the fleet's master key.

    A conftest.Vault, so mount, unmount, cli and the log checks are the same
    as for a single-host vault; only the store differs."""

    def __init__(self, cluster, name, key=None, config="[vault]\nattr_timeout = 60\n",
                 init=False):
        self.cluster = cluster
        self.host = name
        self.dir = tempfile.mkdtemp(prefix=f"vaultfs-{name}-", dir="/tmp")
        os.chmod(self.dir, 0o755)
        self.mnt = os.path.join(self.dir, "mnt")
        os.mkdir(self.mnt, 0o755)
        self.db = cluster.uri()
        self.key = os.path.join(self.dir, "master.key")
        self.mount_args = []
        self.proc = None
        self.logs = []
        self.log_path = None
        self.errors = []
        self.config = self.write_config(config) if config is not None else None
        if key:
            shutil.copyfile(key, self.key)
            os.chmod(self.key, 0o600)
        else:
            r = conftest.run([conftest.VAULTFS_BIN, "keygen", "--out", self.key])
            assert r.returncode == 0, r.stderr.decode()
        if init:
            r = self.cli("init", config=False)
            assert r.returncode == 0, f"init on PostgreSQL failed: {r.stderr.decode()}"


class Fleet:
    """A cluster and the hosts that serve its vault."""

    def __init__(self, standby=False):
        self.cluster = pgserver.PgCluster()
        self.hosts = []
        if standby:
            self.cluster.add_standby()

    def host(self, config="[vault]\nattr_timeout = 60\n", mount=True):
        first = not self.hosts
        h = Host(self.cluster, f"host{len(self.hosts) + 1}",
                 key=None if first else self.hosts[0].key, config=config, init=first)
        self.hosts.append(h)
        if mount:
            h.mount()
        return h

    def cleanup(self):
        errors = []
        for h in self.hosts:
            try:
                h.cleanup()
            except BaseException as e:
                errors.append(e)
        self.cluster.cleanup()
        if errors:
            raise errors[0]


# What the tests accept as "at once": far below attr_timeout = 60, which is
# what a mount would show without the change feed. The figures themselves
# are measured by bench/run.py.
SEEN_WITHIN = 2.0


@pytest.fixture
def fleet(monkeypatch):
    made = []

    def make(standby=False):
        f = Fleet(standby=standby)
        made.append(f)
        monkeypatch.setenv("PGPASSFILE", f.cluster.passfile)
        return f

    yield make
    errors = []
    for f in made:
        try:
            f.cleanup()
        except BaseException as e:
            errors.append(e)
    if errors:
        raise errors[0]


def sh_write(path, value):
    """A writer as people write, with tee, which (unlike the shell's
    redirection) reports a failed close: where a commit fails."""
    r = run(["/bin/sh", "-c", f"printf %s '{value}' | tee '{path}' > /dev/null"])
    assert r.returncode == 0, f"writing {path} failed: {r.stderr.decode()}"


def test_a_write_on_one_host_is_read_on_the_other_at_once(fleet):
    f = fleet()
    a, b = f.host(), f.host()
    os.mkdir(a.path("app"))
    sh_write(a.path("app", "TOKEN"), "first")
    assert read_file(b.path("app", "TOKEN")) == b"first"
    # b has cached the size (attr_timeout = 60); a rotation through a must
    # show through b, size included, long before that.
    assert os.stat(b.path("app", "TOKEN")).st_size == 5
    start = time.monotonic()
    sh_write(a.path("app", "TOKEN"), "second-value")
    assert read_file(b.path("app", "TOKEN")) == b"second-value", \
        "a read through the other host returns the value just committed"
    assert wait_for(lambda: os.stat(b.path("app", "TOKEN")).st_size == 12, SEEN_WITHIN), \
        "host b still shows the old size: the change feed did not invalidate it"
    print(f"size seen through host b after {1000 * (time.monotonic() - start):.1f} ms")
    # A key made through b is listed through a.
    sh_write(b.path("app", "OTHER"), "x")
    assert wait_for(lambda: "OTHER" in os.listdir(a.path("app")), SEEN_WITHIN)


def test_the_cli_and_a_manual_sql_edit_reach_every_host(fleet):
    f = fleet()
    a, b = f.host(), f.host()
    os.mkdir(a.path("app"))
    sh_write(a.path("app", "K"), "v1")
    before = os.stat(b.path("app", "K")).st_mtime_ns
    a.set("app", "K", "from the command line")
    assert wait_for(lambda: os.stat(b.path("app", "K")).st_size == 21, SEEN_WITHIN)
    # An operator's UPDATE (mtime is not under the row's tag) is a change too.
    f.cluster.vault_sql("UPDATE secrets SET mtime = mtime + 3600000000000")
    assert wait_for(lambda: os.stat(b.path("app", "K")).st_mtime_ns > before + 3.5e12,
                    SEEN_WITHIN), "a manual SQL edit did not reach host b"


def test_check_and_set_from_two_hosts_exactly_one_wins(fleet):
    f = fleet()
    a, b = f.host(mount=False), f.host(mount=False)
    a.set("app", "COUNTER", "0")
    rounds = 12
    for i in range(rounds):
        version = 1 + i
        results = {}
        go = threading.Barrier(2)

        def cas(host, tag):
            go.wait()
            results[tag] = host.cli("set", "--if-version", str(version), "app", "COUNTER",
                                    input=f"{tag}{i}")

        threads = [threading.Thread(target=cas, args=(h, t)) for h, t in ((a, "a"), (b, "b"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        won = [t for t, r in results.items() if r.returncode == 0]
        assert len(won) == 1, (
            f"round {i}: exactly one check-and-set on version {version} must win, "
            f"got {won}: " + " | ".join(r.stderr.decode() for r in results.values()))
        lost = [r for r in results.values() if r.returncode != 0][0]
        assert b"version" in lost.stderr, lost.stderr.decode()
        assert a.get("app", "COUNTER") == f"{won[0]}{i}".encode()
    r = b.cli("history", "app", "COUNTER")
    assert r.returncode == 0
    assert f"{rounds + 1}  " in r.stdout.decode(), "every round made exactly one version"


def test_chmod_and_rm_on_one_host_deny_on_the_other(fleet, users):
    f = fleet()
    a, b = f.host(), f.host()
    os.mkdir(a.path("app"))
    os.chmod(a.path("app"), 0o755)
    sh_write(a.path("app", "K"), "shared")
    os.chmod(a.path("app", "K"), 0o644)
    assert users.try_open("alice", b.path("app", "K")) == "OK:shared"
    os.chmod(a.path("app", "K"), 0o600)
    assert wait_for(lambda: users.try_open("alice", b.path("app", "K")) == "EACCES",
                    SEEN_WITHIN), "a chmod on host a must deny on host b"
    os.unlink(a.path("app", "K"))
    assert wait_for(lambda: oserror(read_file, b.path("app", "K")) == errno.ENOENT,
                    SEEN_WITHIN), "an rm on host a must be gone on host b"


def test_server_stopped_and_started_under_running_mounts(fleet):
    f = fleet()
    a, b = f.host(), f.host()
    os.mkdir(a.path("app"))
    sh_write(a.path("app", "K"), "kept")
    f.cluster.primary.stop("fast")
    # Reads fail with EIO, writes with an error, quickly; nothing stale.
    start = time.monotonic()
    e = oserror(read_file, b.path("app", "K"))
    assert e == errno.EIO, f"a read with the database down: {errname(e)}"
    e = oserror(write_file, a.path("app", "K"), "lost")
    assert e is not None, "a write with the database down must fail"
    assert time.monotonic() - start < 15, "failures must come within the timeouts"
    assert a.proc.poll() is None and b.proc.poll() is None, "the daemons stay up"
    f.cluster.primary.start()
    for h in (a, b):
        assert wait_for(lambda: oserror(read_file, h.path("app", "K")) is None, 10), \
            f"{h.host} did not recover:\n{h.log()}"
        assert read_file(h.path("app", "K")) == b"kept"
    # And the change feed is back: a write through a reaches b's cache.
    os.stat(b.path("app", "K"))
    sh_write(a.path("app", "K"), "after the restart")
    assert wait_for(lambda: os.stat(b.path("app", "K")).st_size == 17, SEEN_WITHIN)


def test_failover_to_a_promoted_standby(fleet):
    f = fleet(standby=True)
    a, b = f.host(), f.host()
    os.mkdir(a.path("app"))
    sh_write(a.path("app", "K"), "before failover")
    standby = f.cluster.standbys[0]
    f.cluster.wait_replayed(standby)
    f.cluster.primary.stop("immediate")     # the machine is lost
    standby.promote()
    for h in (a, b):
        assert wait_for(lambda: oserror(read_file, h.path("app", "K")) is None, 15), \
            f"{h.host} does not serve from the promoted standby:\n{h.log()}"
        assert read_file(h.path("app", "K")) == b"before failover"
    os.stat(b.path("app", "K"))
    sh_write(a.path("app", "K"), "written after failover")
    assert read_file(b.path("app", "K")) == b"written after failover"
    assert wait_for(lambda: os.stat(b.path("app", "K")).st_size == 22, SEEN_WITHIN), \
        "host b did not LISTEN again on the new primary"


def test_a_lost_change_feed_refuses_rather_than_serves_stale(fleet):
    f = fleet()
    a = f.host()
    a.set("app", "K", "v")            # by another process: the daemon sees it come
    assert wait_for(lambda: os.path.exists(a.path("app", "K")), SEEN_WITHIN)
    os.stat(a.path("app", "K"))       # cached for attr_timeout = 60
    # The vault's role may open no new connection: the listener, once cut,
    # can't come back, while the daemon's own connection stays.
    f.cluster.vault_sql("ALTER ROLE vault CONNECTION LIMIT 0")
    f.cluster.vault_sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE application_name = 'vaultfs-listen'")
    assert wait_for(lambda: oserror(read_file, a.path("app", "K")) == errno.EIO, 5), \
        "with the change feed lost, reads must be refused"
    assert wait_for(lambda: oserror(os.stat, a.path("app", "K")) == errno.EIO, 5), \
        "what the kernel cached must not be shown while the feed is lost"
    f.cluster.vault_sql("ALTER ROLE vault CONNECTION LIMIT -1")
    assert wait_for(lambda: oserror(read_file, a.path("app", "K")) is None, 5)
    assert read_file(a.path("app", "K")) == b"v"


def test_a_password_in_the_uri_is_refused(fleet):
    f = fleet()
    a = f.host(mount=False)
    uri = a.db.replace("postgresql://", f"postgresql://vault:{f.cluster.password}@", 1)
    r = run([VAULTFS_BIN, "ls", "--db", uri, "--key-file", a.key])
    assert r.returncode != 0
    assert b"passfile" in r.stderr, r.stderr.decode()


def test_migration_from_sqlite_into_postgresql_and_back(fleet, vault_factory, tmp_path):
    """The runbook: back up the single host's vault, init the database with
    the same master key, restore into it; and a backup from PostgreSQL is a
    SQLite vault file again."""
    single = vault_factory(mount=False)
    single.set("app", "DB_PASSWORD", "one")
    single.set("app", "DB_PASSWORD", "two")
    single.set("web", "TLS_KEY", "k" * 300)
    assert single.cli("rm", "web", "TLS_KEY").returncode == 0    # in the trash
    bak = str(tmp_path / "single.db")
    assert single.cli("backup", bak).returncode == 0

    f = fleet()
    host = Host(f.cluster, "host1", key=single.key, init=True)
    f.hosts.append(host)
    r = host.cli("restore", bak)
    assert r.returncode == 0, r.stderr.decode()
    assert host.get("app", "DB_PASSWORD") == b"two"
    hist = host.cli("history", "app", "DB_PASSWORD").stdout.decode()
    assert "(current)" in hist and "\n      1 " in hist, hist
    assert host.cli("undelete", "web", "TLS_KEY").returncode == 0
    assert host.get("web", "TLS_KEY") == b"k" * 300
    # New ids go past the restored ones: nothing is handed out twice.
    host.set("app", "NEW", "n")
    ids = f.cluster.vault_sql("SELECT id FROM secrets ORDER BY id").split()
    assert len(ids) == len(set(ids)) == 3

    out = str(tmp_path / "from-pg.db")
    r = host.cli("backup", out)
    assert r.returncode == 0, r.stderr.decode()
    assert os.stat(out).st_mode & 0o077 == 0, "a backup file is the owner's alone"
    back = run([VAULTFS_BIN, "get", "--db", out, "--key-file", single.key, "app", "NEW"])
    assert back.returncode == 0 and back.stdout == b"n", back.stderr.decode()
    back = run([VAULTFS_BIN, "get", "--db", out, "--key-file", single.key, "web", "TLS_KEY"])
    assert back.stdout == b"k" * 300


def test_a_doctored_backup_changes_nothing_in_postgresql(fleet, vault_factory, tmp_path):
    single = vault_factory(mount=False)
    single.set("app", "K", "genuine")
    f = fleet()
    host = Host(f.cluster, "host1", key=single.key, init=True)
    f.hosts.append(host)
    bak = str(tmp_path / "b.db")
    assert single.cli("backup", bak).returncode == 0
    assert host.cli("restore", bak).returncode == 0
    # Whoever can write the backup gives the key to everyone: the tag fails.
    import sqlite3
    con = sqlite3.connect(bak)
    con.execute("UPDATE secrets SET mode = 438")
    con.commit()
    con.close()
    r = host.cli("restore", bak)
    assert r.returncode != 0
    mode = f.cluster.vault_sql("SELECT mode FROM secrets").strip()
    assert mode != "438", "a refused restore changed nothing"
    assert host.get("app", "K") == b"genuine"


def test_whoever_edits_a_tagged_row_in_the_database_gets_eio_everywhere(fleet, users):
    """Database access is no way around the modes: a row made readable to
    everyone by an UPDATE fails its tag on every host, and nothing of the
    value comes out."""
    f = fleet()
    a, b = f.host(), f.host()
    os.mkdir(a.path("app"))
    os.chmod(a.path("app"), 0o755)
    sh_write(a.path("app", "K"), "private")
    os.chmod(a.path("app", "K"), 0o600)
    f.cluster.vault_sql("UPDATE secrets SET mode = 420")     # 0644
    for h in (a, b):
        assert oserror(read_file, h.path("app", "K")) == errno.EIO, h.host
        assert users.try_open("alice", h.path("app", "K")) in ("EIO", "EACCES"), h.host
    # Audited as authfail, naming the row, in the fleet's one log.
    assert wait_for(lambda: b"authfail" in b.cli("audit").stdout and
                    b"secrets row" in b.cli("audit").stdout, 10), b.cli("audit").stdout.decode()


def test_an_instance_key_rotated_on_one_host_is_served_by_the_other(fleet):
    f = fleet()
    a, b = f.host(), f.host()
    os.mkdir(a.path("app"))
    sh_write(a.path("app", "K"), "before rotation")
    assert read_file(b.path("app", "K")) == b"before rotation"     # b caches the data key
    r = a.cli("rotate-key", "--instance", "app")
    assert r.returncode == 0, r.stderr.decode()
    assert read_file(b.path("app", "K")) == b"before rotation", \
        "host b must take the new data key from the database"
    sh_write(b.path("app", "K"), "after rotation")
    assert read_file(a.path("app", "K")) == b"after rotation"


def test_purge_leaves_no_row_of_the_key_in_the_database(fleet):
    f = fleet()
    a = f.host(mount=False)
    a.set("app", "OLD", "one")
    a.set("app", "OLD", "two")
    assert a.cli("rm", "app", "OLD").returncode == 0
    assert f.cluster.vault_sql("SELECT count(*) FROM trash").strip() == "1"
    r = a.cli("purge", "app", "OLD")
    assert r.returncode == 0, r.stderr.decode()
    for table in ("trash", "versions", "secrets", "secret_attrs"):
        assert f.cluster.vault_sql(f"SELECT count(*) FROM {table}").strip() == "0", table
    # Made again, it starts a history of its own, under a new id.
    a.set("app", "OLD", "three")
    assert a.get("app", "OLD") == b"three"
    hist = a.cli("history", "app", "OLD").stdout.decode()
    assert "      1 " in hist and "      2 " not in hist, hist


def test_the_password_from_a_systemd_credential(fleet, tmp_path):
    f = fleet()
    a = f.host(mount=False)
    creds = tmp_path / "creds"
    creds.mkdir(mode=0o700)
    (creds / "vaultfs-db-password").write_text(f.cluster.password + "\n")
    no_passfile = {"PGPASSFILE": str(tmp_path / "none")}
    r = a.cli("ls", env=no_passfile)
    assert r.returncode != 0 and b"password" in r.stderr, \
        "without passfile or credential the server must refuse"
    r = a.cli("ls", env=dict(no_passfile, CREDENTIALS_DIRECTORY=str(creds)))
    assert r.returncode == 0, r.stderr.decode()


# -- upgrade from the release whose states were chains ----------------------------

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures")


def load_schema1_fixture(f):
    """The vault the vaultfs before instance states by bucket made on
    PostgreSQL (schema 1, chained states; pg_dump of it): app/API_KEY (2
    versions), app/K1..K70, billing/TOKEN. Loaded by the vault's role."""
    c = f.cluster
    r = run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", c.primary.sockdir,
             "-p", str(c.primary.port), "-U", pgserver.VAULT_ROLE, "-d", pgserver.VAULT_DB,
             "-f", os.path.join(FIXTURES, "pg-schema1.sql")])
    assert r.returncode == 0, r.stderr.decode()
    h = Host(c, "old", key=os.path.join(FIXTURES, "pg-schema1.key"))
    f.hosts.append(h)
    return h


def test_chained_states_on_postgresql_are_checked_then_converted(fleet):
    f = fleet()
    h = load_schema1_fixture(f)
    assert f.cluster.vault_sql("SELECT version FROM vaultfs_schema").strip() == "1"
    assert h.get("app", "API_KEY") == b"sk-two"
    assert f.cluster.vault_sql("SELECT version FROM vaultfs_schema").strip() == "2"
    assert f.cluster.vault_sql("SELECT count(*) FROM meta WHERE key = 'state_chain'").strip() \
        == "0"
    assert h.get("app", "K70") == b"v70"
    h.mount()
    sh_write(h.path("app", "API_KEY"), "sk-three")
    assert read_file(h.path("app", "API_KEY")) == b"sk-three"


def test_chained_state_on_postgresql_that_does_not_match_is_refused(fleet):
    """A row put back before the upgrade: nothing is converted, the user is
    told, and the mark stays."""
    f = fleet()
    h = load_schema1_fixture(f)
    f.cluster.vault_sql("UPDATE secrets SET version = 1 WHERE name = 'API_KEY'")
    r = h.cli("get", "app", "K1")
    err = r.stderr.decode()
    assert r.returncode == 1 and r.stdout == b"", err
    assert "does not match its secrets" in err and "nothing was changed" in err, err
    assert f.cluster.vault_sql("SELECT count(*) FROM meta WHERE key = 'state_chain'").strip() \
        == "1"
