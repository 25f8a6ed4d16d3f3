"""Harness for vaultfs integration tests: real mounts in temporary directories.

Each test gets its own vault (key, database, mount point) under /tmp. The daemon
runs in the foreground as a child of the test, its output goes to a log file,
and at the end it must unmount, exit 0 and have printed no sanitizer report.
"""
import errno
import grp
import hashlib
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
VAULTFS_BIN = os.environ.get(
    "VAULTFS_BIN", os.path.normpath(os.path.join(HERE, "..", "..", "vaultfs")))

MOUNT_TIMEOUT = 10.0
# Under ASan a daemon's exit runs LeakSanitizer over its whole heap, which
# took more than 10 s on a 2-core machine at load 20: a bound for a hang,
# not a speed target.
EXIT_TIMEOUT = 30.0 if os.environ.get("VAULTFS_SANITIZE") == "1" else 10.0
CMD_TIMEOUT = 20.0

# Lines that mean the daemon hit memory or UB trouble.
BAD_LOG_MARKERS = ("AddressSanitizer", "runtime error:", "LeakSanitizer")

# Environment variables that select a master key; a test sets them on purpose
# or not at all.
KEY_ENV_VARS = ("VAULTFS_KEY", "CREDENTIALS_DIRECTORY")


def default_sigint():
    """A shell starts background jobs with SIGINT ignored, and libfuse leaves
    an ignored signal alone: give the daemon the default, as a terminal
    would, so the tests don't depend on how the suite was started."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def clean_env(extra=None):
    env = {k: v for k, v in os.environ.items() if k not in KEY_ENV_VARS}
    if extra:
        env.update(extra)
    return env


def run(argv, input=None, env=None, timeout=CMD_TIMEOUT, **kw):
    if isinstance(input, str):
        input = input.encode()
    return subprocess.run(argv, input=input, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, env=env if env is not None else clean_env(),
                          timeout=timeout, **kw)


def sha256_or_none(path):
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except FileNotFoundError:
        return None


def wait_for(pred, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return pred()


def read_text(path):
    try:
        with open(path, "r", errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def force_unmount(mnt):
    """Last resort so that a broken daemon never leaves a mount behind."""
    if os.path.ismount(mnt):
        subprocess.run(["fusermount3", "-u", "-z", mnt], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)


def worker_pids(holder):
    """The children of a `vaultfs mount` holder that serve its mount."""
    r = run(["pgrep", "-P", str(holder), "-f", " mount --worker="])
    return [int(p) for p in r.stdout.split()]


def threads_report(pids):
    """Where each thread of these processes waits (name, state, wchan and
    the kernel stack): for a daemon that does not exit, taken before it is
    killed, so the failure says which thread held it up."""
    out = []
    for pid in pids:
        try:
            tids = sorted(os.listdir(f"/proc/{pid}/task"), key=int)
        except FileNotFoundError:
            continue
        for tid in tids:
            base = f"/proc/{pid}/task/{tid}"
            parts = []
            for name in ("comm", "wchan", "syscall", "stack"):
                parts.append(read_text(f"{base}/{name}").strip().replace("\n", " | "))
            state = [l for l in read_text(f"{base}/status").splitlines()
                     if l.startswith("State:")]
            out.append(f"  {pid}/{tid} {parts[0]} {state[0] if state else ''} "
                       f"wchan={parts[1]} syscall={parts[2].split(' ')[0]} {parts[3]}")
    return "\n".join(out)


def serving_pid_changed(v, old, timeout=MOUNT_TIMEOUT):
    """Waits until a worker other than `old` serves; returns its pid."""
    new = []

    def changed():
        pids = worker_pids(v.proc.pid)
        new[:] = [p for p in pids if p != old]
        return bool(new)
    assert wait_for(changed, timeout), f"no new worker after {old}:\n{v.log()}"
    return new[0]


class Vault:
    """A vault in a temporary directory, and the daemon that serves it."""

    def __init__(self, config=None, mount_args=()):
        self.dir = tempfile.mkdtemp(prefix="vaultfs-it-", dir="/tmp")
        # Other users must be able to traverse to the mount point.
        os.chmod(self.dir, 0o755)
        self.mnt = os.path.join(self.dir, "mnt")
        os.mkdir(self.mnt, 0o755)
        self.db = os.path.join(self.dir, "vault.db")
        self.key = os.path.join(self.dir, "master.key")
        self.config = None
        if config is not None:
            self.config = self.write_config(config)
        self.mount_args = list(mount_args)
        self.proc = None
        self.logs = []
        self.log_path = None
        self.errors = []
        try:
            r = run([VAULTFS_BIN, "keygen", "--out", self.key])
            assert r.returncode == 0, f"keygen failed: {r.stderr.decode(errors='replace')}"
            r = run([VAULTFS_BIN, "init", "--db", self.db, "--key-file", self.key])
            assert r.returncode == 0, f"init failed: {r.stderr.decode(errors='replace')}"
        except BaseException:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise

    # -- paths ---------------------------------------------------------------
    def path(self, *parts):
        return os.path.join(self.mnt, *parts)

    def write_config(self, text, name="vaultfs.ini"):
        p = os.path.join(self.dir, name)
        with open(p, "w") as f:
            f.write(text)
        os.chmod(p, 0o600)
        return p

    def key_hex(self):
        with open(self.key, "rb") as f:
            return f.read().strip().decode()

    def db_files(self):
        return [self.db, self.db + "-wal", self.db + "-shm"]

    def db_fingerprint(self):
        """sha256 of the db and its -wal (an absent -wal counts as empty)."""
        wal = sha256_or_none(self.db + "-wal")
        if wal == hashlib.sha256(b"").hexdigest():
            wal = None
        return (sha256_or_none(self.db), wal)

    # -- CLI -----------------------------------------------------------------
    def base_opts(self, db=True, key=True, config=True):
        opts = []
        if config and self.config:
            opts += ["--config", self.config]
        if db:
            opts += ["--db", self.db]
        if key:
            opts += ["--key-file", self.key]
        return opts

    def cli(self, sub, *args, input=None, env=None, db=True, key=True, config=True,
            timeout=CMD_TIMEOUT):
        """Runs `vaultfs SUB [--config C] --db D --key-file K ARGS...`."""
        argv = [VAULTFS_BIN, sub] + self.base_opts(db, key, config) + list(args)
        return run(argv, input=input, env=clean_env(env), timeout=timeout)

    def get(self, inst, key):
        r = self.cli("get", inst, key)
        assert r.returncode == 0, (
            f"`vaultfs get {inst} {key}` failed: {r.stderr.decode(errors='replace')}")
        return r.stdout

    def set(self, inst, key, value):
        r = self.cli("set", inst, key, input=value)
        assert r.returncode == 0, (
            f"`vaultfs set {inst} {key}` failed: {r.stderr.decode(errors='replace')}")

    # -- mount ---------------------------------------------------------------
    def mount(self, extra=()):
        assert self.proc is None, "already mounted"
        assert not os.path.ismount(self.mnt)
        self.log_path = os.path.join(self.dir, f"daemon-{len(self.logs) + 1}.log")
        self.logs.append(self.log_path)
        argv = [VAULTFS_BIN, "mount"] + self.base_opts() + ["-f"] + \
            self.mount_args + list(extra) + [self.mnt]
        log = open(self.log_path, "wb")
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, env=clean_env(),
                                         preexec_fn=default_sigint)
        finally:
            log.close()
        ok = wait_for(lambda: os.path.ismount(self.mnt) or self.proc.poll() is not None,
                      MOUNT_TIMEOUT)
        if not (ok and os.path.ismount(self.mnt)):
            rc = self.proc.poll()
            if rc is None:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
            force_unmount(self.mnt)
            pytest.fail(f"vaultfs mount -f did not mount {self.mnt} within "
                        f"{MOUNT_TIMEOUT}s (exit status {rc}); daemon log:\n"
                        f"{read_text(self.log_path)}")

    def log(self):
        return "".join(read_text(p) for p in self.logs)

    def worker_pid(self, timeout=MOUNT_TIMEOUT):
        """The serving process: the holder's (self.proc's) child."""
        assert self.proc is not None, "not mounted by this harness"
        pids = []
        wait_for(lambda: bool(pids.extend(worker_pids(self.proc.pid)) or pids), timeout)
        assert len(pids) == 1, f"one worker serves the mount: {pids}"
        return pids[0]

    def unmount(self):
        """fusermount3 -u, then the daemon must exit 0 with a clean log."""
        assert self.proc is not None, "not mounted by this harness"
        proc, self.proc = self.proc, None
        r = None
        for _ in range(50):
            r = run(["fusermount3", "-u", self.mnt])
            if r.returncode == 0 or not os.path.ismount(self.mnt):
                break
            time.sleep(0.1)  # EBUSY: a handle is still being released
        try:
            rc = proc.wait(timeout=EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            threads = threads_report([proc.pid] + worker_pids(proc.pid))
            proc.kill()
            proc.wait()
            force_unmount(self.mnt)
            pytest.fail(f"daemon did not exit within {EXIT_TIMEOUT}s of fusermount3 -u; "
                        f"its threads:\n{threads}\nlog:\n{read_text(self.log_path)}")
        log = read_text(self.log_path)
        assert r.returncode == 0, f"fusermount3 -u failed: {r.stderr.decode()}"
        assert not os.path.ismount(self.mnt), "still mounted after fusermount3 -u"
        assert rc == 0, f"daemon exited with {rc} after unmount; log:\n{log}"
        self.check_log(log)

    def check_log(self, log):
        for marker in BAD_LOG_MARKERS:
            assert marker not in log, f"daemon log has a {marker} report:\n{log}"
        # libfuse's own complaints (unknown option, failed unmount...).
        for line in log.splitlines():
            assert not line.startswith("fuse: "), f"libfuse complained:\n{log}"

    def remount(self):
        self.unmount()
        self.mount()

    def cleanup(self):
        errors = []
        if self.proc is not None:
            try:
                self.unmount()
            except BaseException as e:  # report, but still clean up
                errors.append(e)
        force_unmount(self.mnt)
        if os.path.ismount(self.mnt):
            errors.append(AssertionError(f"{self.mnt} is still mounted; left {self.dir}"))
        else:
            shutil.rmtree(self.dir, ignore_errors=True)
        if errors:
            raise errors[0]


@pytest.fixture(scope="session", autouse=True)
def _binary():
    if not (os.path.isfile(VAULTFS_BIN) and os.access(VAULTFS_BIN, os.X_OK)):
        pytest.exit(f"vaultfs binary not found at {VAULTFS_BIN} (build it with make, "
                    f"or set VAULTFS_BIN)", returncode=2)
    if os.geteuid() != 0:
        pytest.exit("the integration tests mount filesystems and create users: run as root",
                    returncode=2)


@pytest.fixture
def vault_factory():
    """vault_factory(config=None, mount=True, mount_args=()) -> Vault."""
    made = []

    def make(config=None, mount=True, mount_args=()):
        v = Vault(config=config, mount_args=mount_args)
        made.append(v)
        if mount:
            v.mount()
        return v

    yield make
    errors = []
    for v in made:
        try:
            v.cleanup()
        except BaseException as e:
            errors.append(e)
    if errors:
        raise errors[0]


@pytest.fixture
def vault(vault_factory):
    """A mounted vault with the default configuration."""
    return vault_factory()


@pytest.fixture
def vault_unmounted(vault_factory):
    return vault_factory(mount=False)


# -- other users ---------------------------------------------------------------
#
# Names carry the pid of the pytest run, so that two runs at once (a developer
# and CI, two worktrees) never delete each other's users. Leftovers of runs
# that died are removed at the next start.

ROLES = {
    # alice and carol share the team group; bob shares no group with alice.
    "alice": True,
    "bob": False,
    "carol": True,
}
USER_RE = re.compile(r"^vfs_(alice|bob|carol|team)_([0-9]+)$")


class Users:
    def __init__(self, tag):
        self.name = {r: f"vfs_{r}_{tag}" for r in ROLES}
        self.team = f"vfs_team_{tag}"
        self.uid = {r: pwd.getpwnam(n).pw_uid for r, n in self.name.items()}
        self.gid = {r: pwd.getpwnam(n).pw_gid for r, n in self.name.items()}
        self.team_gid = grp.getgrnam(self.team).gr_gid

    def run(self, role, argv, input=None):
        """Runs argv as a role's user, with its groups, umask 022, cwd /."""
        user = self.name[role]
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--"] + argv
        return run(cmd, input=input, cwd="/", preexec_fn=lambda: os.umask(0o022))

    def sh(self, role, script, input=None):
        return self.run(role, ["/bin/sh", "-c", script], input=input)

    def try_open(self, role, path, mode="r"):
        """Opens path as a role's user: 'OK:<content>' / 'OK' or the errno name."""
        code = (
            "import os, sys, errno\n"
            "p, m = sys.argv[1], sys.argv[2]\n"
            "try:\n"
            "    if m == 'r':\n"
            "        with open(p, 'rb') as f:\n"
            "            sys.stdout.write('OK:' + f.read().decode(errors='replace'))\n"
            "    else:\n"
            "        with open(p, 'ab') as f:\n"
            "            f.write(b'x')\n"
            "        sys.stdout.write('OK')\n"
            "except OSError as e:\n"
            "    sys.stdout.write(errno.errorcode.get(e.errno, str(e.errno)))\n"
        )
        r = self.run(role, ["/usr/bin/python3", "-c", code, path, mode])
        assert r.stderr == b"", r.stderr.decode(errors="replace")
        return r.stdout.decode()


def _quiet(argv):
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _delete_users(tag):
    for r in ROLES:
        _quiet(["userdel", f"vfs_{r}_{tag}"])
        _quiet(["groupdel", f"vfs_{r}_{tag}"])
    _quiet(["groupdel", f"vfs_team_{tag}"])


def _delete_stale_users():
    tags = set()
    for name in [p.pw_name for p in pwd.getpwall()] + [g.gr_name for g in grp.getgrall()]:
        m = USER_RE.match(name)
        if m and not os.path.exists(f"/proc/{m.group(2)}"):
            tags.add(m.group(2))
    for tag in tags:
        _delete_users(tag)


@pytest.fixture(scope="session")
def users():
    """Creates users alice, bob, carol and a team group (alice, carol); removes
    them after. Their real names are users.name[role] and users.team."""
    tag = str(os.getpid())
    _delete_stale_users()
    try:
        subprocess.run(["groupadd", f"vfs_team_{tag}"], check=True,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for role, in_team in ROLES.items():
            argv = ["useradd", "-M", "-U", "-d", "/nonexistent", "-s", "/usr/sbin/nologin"]
            if in_team:
                argv += ["-G", f"vfs_team_{tag}"]
            subprocess.run(argv + [f"vfs_{role}_{tag}"], check=True,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        yield Users(tag)
    finally:
        _delete_users(tag)


# -- small helpers shared by the tests ----------------------------------------

def write_file(path, data, mode="wb"):
    if isinstance(data, str):
        data = data.encode()
    with open(path, mode) as f:
        f.write(data)


def read_file(path):
    with open(path, "rb") as f:
        return f.read()


def oserror(fn, *args, **kw):
    """Runs fn and returns the errno it failed with (None if it succeeded)."""
    try:
        fn(*args, **kw)
    except OSError as e:
        return e.errno
    return None


def errname(e):
    return errno.errorcode.get(e, str(e)) if e is not None else "success"


def sh(script, **kw):
    """Runs a shell command line as the test's user (root)."""
    return run(["/bin/sh", "-c", script], **kw)


def stop_process(proc, sig=signal.SIGTERM, timeout=EXIT_TIMEOUT):
    proc.send_signal(sig)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return None


def bg_mount(argv, env=None, timeout=CMD_TIMEOUT):
    """Runs a background `vaultfs mount ...` (no -f); it must return by itself.

    Returns the CompletedProcess. A daemon that keeps the caller's stdout or
    stderr open makes the caller hang: reported as a failure.
    """
    try:
        return run(argv, env=env, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"`{' '.join(argv)}` did not return within {timeout}s "
                    f"(does the daemon keep the caller's stdout/stderr open?): "
                    f"{(e.stderr or b'').decode(errors='replace')}")
