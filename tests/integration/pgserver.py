"""A real PostgreSQL 15 server for the tests, started and stopped by them.

initdb and pg_ctl run as the unprivileged `postgres` user (initdb refuses
root) in a temporary directory; the server listens on a unix socket only
(listen_addresses = ''). The superuser connects by peer authentication;
the vault's own role `vault` by password (scram-sha-256), which the daemon
reads from a libpq passfile, as it would on a real host.

A standby is a pg_basebackup -R copy of a primary, streaming from it, that
can be promoted.
"""
import os
import shutil
import subprocess
import tempfile
import time

PG_BIN = os.environ.get("VAULTFS_PG_BIN", "/usr/lib/postgresql/15/bin")
PG_USER = "postgres"
VAULT_ROLE = "vault"
VAULT_DB = "vault"
START_TIMEOUT = 30

_next_port = [54000 + (os.getpid() % 500) * 8]


def available():
    """Whether this machine has PostgreSQL 15's server binaries and its user."""
    try:
        import pwd
        pwd.getpwnam(PG_USER)
    except KeyError:
        return False
    return os.access(os.path.join(PG_BIN, "initdb"), os.X_OK)


def _as_pg(argv, check=True, timeout=60, input=None):
    r = subprocess.run(["runuser", "-u", PG_USER, "--"] + argv, input=input,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                       cwd="/")
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({r.returncode}): "
                           f"{r.stderr.decode(errors='replace')}{r.stdout.decode(errors='replace')}")
    return r


def _port():
    """A port number: with unix sockets only, it just names the socket file."""
    _next_port[0] += 1
    return _next_port[0]


class PgServer:
    """One PostgreSQL cluster: its data directory, socket directory and port."""

    def __init__(self, base, name, port=None):
        self.base = base
        self.name = name
        self.data = os.path.join(base, name)
        self.sockdir = os.path.join(base, "sock")
        self.port = port or _port()
        self.log = os.path.join(base, f"{name}.log")

    # -- life ------------------------------------------------------------------
    def initdb(self):
        _as_pg([os.path.join(PG_BIN, "initdb"), "-D", self.data, "-U", PG_USER,
                "--auth-local=peer", "--auth-host=reject", "-E", "UTF8",
                "--locale=C.UTF-8", "--no-instructions", "--no-sync"])
        with open(os.path.join(self.data, "pg_hba.conf"), "w") as f:
            f.write("local all postgres peer\n"
                    "local replication postgres peer\n"
                    "local all all scram-sha-256\n")
        self.configure(
            "listen_addresses = ''\n"
            f"unix_socket_directories = '{self.sockdir}'\n"
            "wal_level = replica\nmax_wal_senders = 4\nhot_standby = on\n"
            "password_encryption = 'scram-sha-256'\n"
            "shared_buffers = 16MB\nmax_connections = 60\n"
            "logging_collector = off\n")

    def configure(self, text):
        path = os.path.join(self.data, "postgresql.conf")
        with open(path, "a") as f:
            f.write(text)

    def start(self):
        _as_pg([os.path.join(PG_BIN, "pg_ctl"), "-D", self.data, "-l", self.log,
                "-o", f"-p {self.port}", "-w", "-t", str(START_TIMEOUT), "start"],
               timeout=START_TIMEOUT + 10)

    def stop(self, mode="fast"):
        """mode: smart, fast, or immediate (a crash, as a lost machine)."""
        _as_pg([os.path.join(PG_BIN, "pg_ctl"), "-D", self.data, "-m", mode, "-w",
                "-t", str(START_TIMEOUT), "stop"], check=False,
               timeout=START_TIMEOUT + 10)

    def running(self):
        r = _as_pg([os.path.join(PG_BIN, "pg_ctl"), "-D", self.data, "status"], check=False)
        return r.returncode == 0

    def promote(self):
        _as_pg([os.path.join(PG_BIN, "pg_ctl"), "-D", self.data, "-w", "promote"])

    # -- SQL -------------------------------------------------------------------
    def psql(self, sql, db="postgres", check=True):
        """Runs sql as the superuser; returns stdout (unaligned, tuples only)."""
        r = _as_pg([os.path.join(PG_BIN, "psql"), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1",
                    "-h", self.sockdir, "-p", str(self.port), "-d", db, "-c", sql],
                   check=check)
        return r.stdout.decode()

    def uri(self, **params):
        """The vault's libpq URI for this server alone."""
        return uri_for([self], **params)


def uri_for(servers, **params):
    """A libpq URI naming several servers (tried in order), as the vault's
    `db =` setting: target_session_attrs=read-write picks the primary."""
    q = {"host": ",".join(s.sockdir for s in servers),
         "port": ",".join(str(s.port) for s in servers),
         "user": VAULT_ROLE}
    q.update(params)
    return f"postgresql:///{VAULT_DB}?" + "&".join(f"{k}={v}" for k, v in q.items())


class PgCluster:
    """A primary (and, on demand, a streaming standby) in one temporary
    directory, with the vault's role and database, and a passfile."""

    def __init__(self, parent="/tmp"):
        self.base = tempfile.mkdtemp(prefix="vaultfs-pg-", dir=parent)
        os.chmod(self.base, 0o755)
        sock = os.path.join(self.base, "sock")
        os.mkdir(sock, 0o755)
        shutil.chown(self.base, PG_USER)
        shutil.chown(sock, PG_USER)
        self.password = os.urandom(12).hex()
        self.passfile = os.path.join(self.base, "pgpass")
        self.primary = PgServer(self.base, "primary")
        self.standbys = []
        self.servers = [self.primary]
        self.primary.initdb()
        self.primary.start()
        self.primary.psql(f"CREATE ROLE {VAULT_ROLE} LOGIN PASSWORD '{self.password}'")
        self.primary.psql(f"CREATE DATABASE {VAULT_DB} OWNER {VAULT_ROLE}")
        self.primary.psql(f"REVOKE ALL ON DATABASE {VAULT_DB} FROM PUBLIC")
        # root's, mode 0600: libpq ignores a passfile others can read.
        with open(self.passfile, "w") as f:
            f.write(f"*:*:*:{VAULT_ROLE}:{self.password}\n")
        os.chmod(self.passfile, 0o600)

    def uri(self, **params):
        """Every server of the cluster, the primary first."""
        params.setdefault("target_session_attrs", "read-write")
        return uri_for(self.servers, **params)

    def add_standby(self):
        """A streaming standby made with pg_basebackup -R, started."""
        s = PgServer(self.base, f"standby{len(self.standbys) + 1}")
        _as_pg([os.path.join(PG_BIN, "pg_basebackup"), "-D", s.data, "-R", "-X", "stream",
                "-c", "fast", "--no-sync",
                "-h", self.primary.sockdir, "-p", str(self.primary.port), "-U", PG_USER],
               timeout=120)
        s.start()
        self.standbys.append(s)
        self.servers.append(s)
        return s

    def wait_replayed(self, standby, timeout=20):
        """Until standby has replayed everything the primary has written."""
        lsn = self.primary.psql("SELECT pg_current_wal_lsn()").strip()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = standby.psql(f"SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn",
                             check=False)
            if r.strip() == "t":
                return
            time.sleep(0.05)
        raise AssertionError(f"standby did not replay up to {lsn} in {timeout}s")

    def vault_sql(self, sql, server=None):
        """SQL in the vault's database as the superuser (a manual edit)."""
        return (server or self.primary).psql(sql, db=VAULT_DB)

    def cleanup(self):
        for s in self.servers:
            if os.path.isdir(s.data):
                s.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)

