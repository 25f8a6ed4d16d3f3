"""The units under a real systemd: this machine's own OS booted in a
systemd-nspawn container (an overlay of / with a throw-away upper layer),
the units installed by `make install`, the master key as an encrypted
credential. Skips with the reason where the container cannot boot.
"""
import os
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

from conftest import VAULTFS_BIN, run, wait_for
from test_ops import make

SETUP = r"""
set -e
V=/usr/local/bin/vaultfs
mkdir -p /etc/vaultfs /var/lib/vaultfs
cd /etc/vaultfs
$V keygen --out master.key
$V init --db /var/lib/vaultfs/vault.db --key-file master.key
cat > vaultfs.ini <<EOF
[vault]
db = /var/lib/vaultfs/vault.db
[instance billing]
mode = 0755
secret_mode = 0644
EOF
chmod 600 vaultfs.ini
printf 'sk-unit-1\n' | $V set --config vaultfs.ini --key-file master.key billing API_KEY
systemd-creds encrypt --name=vaultfs.key master.key master.key.cred 2>/dev/null
shred -u master.key
systemctl daemon-reload
"""


LSAN_OFF = r"""
for u in vaultfs.service vaultfs@.service; do
    mkdir -p /etc/systemd/system/$u.d
    printf '[Service]\nEnvironment=ASAN_OPTIONS=detect_leaks=0\n' > /etc/systemd/system/$u.d/asan.conf
done
systemctl daemon-reload
"""


class Machine:
    def __init__(self, root):
        self.base = root
        self.root = os.path.join(root, "root")
        self.proc = None
        self.leader = None

    def boot(self, binds):
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", self.base], check=True)
        for d in ("up", "work", "root"):
            os.mkdir(os.path.join(self.base, d))
        r = run(["mount", "-t", "overlay", "overlay", "-o",
                 f"lowerdir=/,upperdir={self.base}/up,workdir={self.base}/work", self.root])
        if r.returncode != 0:
            return f"cannot make an overlay of /: {r.stderr.decode()}"
        for p in ("etc/machine-id",):
            try:
                os.unlink(os.path.join(self.root, p))
            except FileNotFoundError:
                pass
        argv = ["systemd-nspawn", "-q", "-D", self.root, "--register=no", "--keep-unit",
                f"--machine=vaultfs-test-{os.getpid()}", "--bind=/dev/fuse",
                "--capability=CAP_IPC_LOCK"]
        argv += [f"--bind-ro={src}:{dst}" for src, dst in binds]
        argv += ["-b", "systemd.unit=basic.target"]
        self.log = open(os.path.join(self.base, "console.log"), "wb")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

        def up():
            if self.proc.poll() is not None:
                return True
            if self.leader is None:
                r = run(["pgrep", "-P", str(self.proc.pid), "-x", "systemd"])
                self.leader = int(r.stdout.split()[0]) if r.stdout.split() else None
                return False
            state = self.sh("systemctl is-system-running").stdout.strip()
            return state not in (b"", b"initializing", b"starting")
        wait_for(up, 90)
        if self.proc.poll() is not None or self.leader is None:
            return f"systemd-nspawn could not boot:\n{self.console()}"
        return None

    def sh(self, script, timeout=60):
        return run(["nsenter", "-t", str(self.leader), "-a", "/bin/sh", "-c", script],
                   timeout=timeout)

    def ok(self, script):
        r = self.sh(script)
        assert r.returncode == 0, f"{script}\n{r.stdout.decode()}{r.stderr.decode()}"
        return r.stdout.decode()

    def console(self):
        with open(os.path.join(self.base, "console.log"), errors="replace") as f:
            return "".join(f.readlines()[-20:])

    def shutdown(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)   # nspawn halts the container
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        subprocess.run(["umount", "-R", "-l", self.base], stderr=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def machine():
    for tool in ("systemd-nspawn", "nsenter", "systemd-creds"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is not installed (Debian packages systemd-container, "
                        "util-linux, systemd)")
    dest = tempfile.mkdtemp(prefix="vaultfs-units-", dir="/var/tmp")
    base = tempfile.mkdtemp(prefix="vaultfs-nspawn-", dir="/var/tmp")
    m = Machine(base)
    try:
        r = make("install", f"DESTDIR={dest}")
        assert r.returncode == 0, r.stderr.decode()
        err = m.boot([(f"{dest}/usr/local/bin/vaultfs", "/usr/local/bin/vaultfs"),
                      (f"{dest}/usr/local/lib/systemd/system", "/usr/local/lib/systemd/system")])
        if err:
            pytest.skip(err)
        m.ok(SETUP)
        if b"libasan" in run(["ldd", VAULTFS_BIN]).stdout:
            # LeakSanitizer stops the threads it scans with ptrace, which
            # the units' sandbox forbids: it then fails the exit status.
            m.ok(LSAN_OFF)
        yield m
    finally:
        m.shutdown()
        shutil.rmtree(dest, ignore_errors=True)
        shutil.rmtree(base, ignore_errors=True)


def fuse_mounted(m, path):
    out = m.sh("cat /proc/1/mountinfo").stdout.decode()
    return any(l.split()[4] == path and "fuse.vaultfs" in l for l in out.splitlines())


def test_service_starts_with_the_credential_and_serves(machine):
    m = machine
    m.ok("systemctl start vaultfs.service")
    try:
        assert m.ok("systemctl is-active vaultfs.service").strip() == "active"
        assert fuse_mounted(m, "/run/vault"), "Type=notify said started: the mount must be there"
        assert m.ok("cat /run/vault/billing/API_KEY") == "sk-unit-1"
        assert m.ok("systemctl show -p StatusText --value vaultfs") .strip() == \
            "serving /run/vault"
        assert not m.sh("test -e /etc/vaultfs/master.key").returncode == 0
        # The sandbox holds: no capability but CAP_SYS_ADMIN, no network.
        pid = m.ok("systemctl show -p MainPID --value vaultfs").strip()
        status = m.ok(f"cat /proc/{pid}/status")
        capbnd = next(l for l in status.splitlines() if l.startswith("CapBnd:")).split()[1]
        assert int(capbnd, 16) == 1 << 21, f"CapBnd {capbnd}: only CAP_SYS_ADMIN"
        assert "NoNewPrivs:\t1" in status and "Seccomp:\t2" in status
    finally:
        m.sh("systemctl stop vaultfs.service")
    assert not fuse_mounted(m, "/run/vault"), "stopping the unit must unmount"
    assert m.ok("systemctl show -p Result --value vaultfs").strip() == "success", \
        m.sh("journalctl -u vaultfs --no-pager | tail -20").stdout.decode()


def test_service_comes_back_after_a_crash(machine):
    m = machine
    m.ok("systemctl start vaultfs.service")
    try:
        old = m.ok("systemctl show -p MainPID --value vaultfs").strip()
        m.ok("systemctl kill -s KILL vaultfs.service")

        def back():
            pid = m.sh("systemctl show -p MainPID --value vaultfs").stdout.decode().strip()
            return pid not in ("0", old) and \
                m.sh("cat /run/vault/billing/API_KEY").stdout == b"sk-unit-1"
        assert wait_for(back, 30), m.sh("journalctl -u vaultfs --no-pager | tail").stdout.decode()
    finally:
        m.sh("systemctl stop vaultfs.service")


def test_instance_template_is_read_only(machine):
    m = machine
    m.ok("systemctl start vaultfs@billing.service")
    try:
        assert fuse_mounted(m, "/run/vaultfs/billing/secrets")
        assert m.ok("ls /run/vaultfs/billing/secrets").split() == ["API_KEY"]
        assert m.ok("cat /run/vaultfs/billing/secrets/API_KEY") == "sk-unit-1"
        r = m.sh("echo x > /run/vaultfs/billing/secrets/API_KEY")
        assert r.returncode != 0 and b"Read-only file system" in r.stderr
        assert m.ok("stat -c %a /run/vaultfs /run/vaultfs/billing").split() == ["755", "755"]
    finally:
        m.sh("systemctl stop vaultfs@billing.service")
    assert not fuse_mounted(m, "/run/vaultfs/billing/secrets")


def test_a_mount_namespace_would_hide_the_mount(machine):
    """Why the units use none of ProtectSystem=, PrivateTmp=, ...: the unit
    is active, yet nobody outside its namespace sees the mount."""
    m = machine
    m.ok("mkdir -p /run/systemd/system/vaultfs.service.d && printf '[Service]\\nPrivateTmp=yes\\n'"
         " > /run/systemd/system/vaultfs.service.d/ns.conf && systemctl daemon-reload")
    try:
        m.ok("systemctl start vaultfs.service")
        assert m.ok("systemctl is-active vaultfs.service").strip() == "active"
        assert not fuse_mounted(m, "/run/vault")
        assert m.sh("cat /run/vault/billing/API_KEY").returncode != 0
    finally:
        m.sh("systemctl stop vaultfs.service; rm -r /run/systemd/system/vaultfs.service.d; "
             "systemctl daemon-reload")


def test_reload_keeps_the_mount(machine):
    m = machine
    m.ok("systemctl start vaultfs.service")
    try:
        m.ok("systemctl reload vaultfs.service")
        time.sleep(1)
        assert m.ok("systemctl is-active vaultfs.service").strip() == "active"
        assert m.ok("cat /run/vault/billing/API_KEY") == "sk-unit-1"
    finally:
        m.sh("systemctl stop vaultfs.service")


def unit_pids(m, unit="vaultfs"):
    """(MainPID: the holder, the worker: its child)."""
    main = m.ok(f"systemctl show -p MainPID --value {unit}").strip()
    workers = m.sh(f"pgrep -P {main} -f ' mount --worker='").stdout.decode().split()
    return main, workers


# Reads API_KEY in a loop inside the machine until /run/stop-reader exists;
# counts good and bad reads in /run/reader.out.
READER = r"""
rm -f /run/stop-reader /run/reader.out
( n=0; bad=0
  while [ ! -e /run/stop-reader ]; do
    v=$(cat /run/vault/billing/API_KEY 2>&1)
    if [ "$v" = sk-unit-1 ]; then n=$((n+1)); else bad=$((bad+1)); echo "BAD: $v" >> /run/reader.bad; fi
    echo "reads=$n bad=$bad" > /run/reader.tmp && mv /run/reader.tmp /run/reader.out
  done ) >/dev/null 2>&1 &
"""


def reader_counts(m):
    out = m.sh("cat /run/reader.out").stdout.decode().split()
    return dict(kv.split("=") for kv in out) if out else {"reads": "0", "bad": "0"}


def reader_progress(m):
    start = int(reader_counts(m)["reads"])
    assert wait_for(lambda: int(reader_counts(m)["reads"]) >= start + 3, 30), reader_counts(m)


def test_reload_and_worker_kill_keep_serving(machine):
    """systemctl reload is an in-place upgrade; kill -9 of the serving
    process is the holder's business: MainPID and the mount stay, and a
    reader inside the machine never fails."""
    m = machine
    m.ok("systemctl start vaultfs.service")
    try:
        main, (worker,) = unit_pids(m)
        m.ok(READER)
        reader_progress(m)
        m.ok("systemctl reload vaultfs.service")
        main2, workers = unit_pids(m)
        assert main2 == main and workers and workers != [worker], (main, worker, workers)
        reader_progress(m)
        m.ok(f"kill -9 {workers[0]}")
        assert wait_for(lambda: unit_pids(m)[1] not in ([], workers), 30)
        reader_progress(m)
        assert m.ok("systemctl is-active vaultfs.service").strip() == "active"
        assert unit_pids(m)[0] == main
        m.ok("touch /run/stop-reader")
        counts = reader_counts(m)
        assert counts["bad"] == "0", m.sh("cat /run/reader.bad").stdout.decode()
        status = m.ok("vaultfs status /run/vault")
        assert f"holder:     {main}" in status and "restarts:   2" in status, status
    finally:
        m.sh("touch /run/stop-reader; systemctl stop vaultfs.service")
    assert m.sh("pgrep -f '[v]aultfs mount'").returncode != 0, "stop leaves no process"
    assert not fuse_mounted(m, "/run/vault")


def test_kill9_of_the_holder_restarts_the_unit_keeping_the_mount(machine):
    """kill -9 of MAINPID: its worker follows it, Restart= starts a new holder,
    which adopts the connection kept in the service's file descriptor store:
    the mount never goes away and a reader only waits."""
    m = machine
    m.ok("systemctl start vaultfs.service")
    try:
        main, _ = unit_pids(m)
        dev = m.ok("stat -c %d /run/vault")
        m.ok(READER)
        reader_progress(m)
        m.ok(f"kill -9 {main}")

        def back():
            pid, workers = unit_pids(m)
            return pid not in ("0", main) and bool(workers)
        assert wait_for(back, 30), m.sh("journalctl -u vaultfs --no-pager | tail").stdout.decode()
        reader_progress(m)
        m.ok("touch /run/stop-reader")
        assert reader_counts(m)["bad"] == "0", m.sh("cat /run/reader.bad").stdout.decode()
        assert m.ok("stat -c %d /run/vault") == dev, "the same mount, not a new one"
        assert "adopted the connection" in \
            m.ok("journalctl -u vaultfs --no-pager | tail -30")
    finally:
        m.sh("touch /run/stop-reader; systemctl stop vaultfs.service")
    assert m.sh("pgrep -f '[v]aultfs mount'").returncode != 0, "stop leaves no process"
    assert not fuse_mounted(m, "/run/vault")
