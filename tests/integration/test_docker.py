"""Containers read secrets from a bind mount of a vault: the recipes of
vaultfs(8), section DOCKER, against a real dockerd started here.

No registry is reachable: the image is a busybox rootfs put together from
Debian's busybox-static and loaded with `docker import`.
"""
import os
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

from conftest import run, wait_for

IMAGE = "vaultfs-test/busybox:1"
OWNER, STRANGER = 4242, 4343
CONFIG = """\
[instance billing]
mode = 0755
secret_mode = 0644
"""


def _docker_bin():
    for p in ("/usr/bin/docker", shutil.which("docker")):
        if p and os.access(p, os.X_OK):
            return p
    return None


class Docker:
    def __init__(self, root):
        self.root = root
        self.sock = os.path.join(root, "docker.sock")
        self.cli = [_docker_bin(), "-H", f"unix://{self.sock}"]
        self.log = os.path.join(root, "dockerd.log")
        self.proc = None

    def start(self):
        argv = ["dockerd", "-H", f"unix://{self.sock}", "--data-root", f"{self.root}/data",
                "--exec-root", f"{self.root}/exec", "--pidfile", f"{self.root}/dockerd.pid",
                "--bridge=none", "--iptables=false", "--ip6tables=false"]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        return wait_for(lambda: self.proc.poll() is not None or
                        self("version").returncode == 0, 60) and self.proc.poll() is None

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __call__(self, *args, input=None, timeout=120):
        return run(self.cli + list(args), input=input, env=dict(os.environ), timeout=timeout)

    def sh(self, script, *opts):
        """Runs script in a new container: (exit status, stdout+stderr)."""
        r = self("run", "--rm", "--network", "none", *opts, IMAGE, "/bin/sh", "-c", script)
        return r.returncode, (r.stdout + r.stderr).decode(errors="replace")

    def log_tail(self):
        with open(self.log, errors="replace") as f:
            return "".join(f.readlines()[-15:])


def _build_image(docker, workdir):
    busybox = "/bin/busybox"
    rootfs = os.path.join(workdir, "rootfs")
    for d in ("bin", "run", "tmp", "etc", "proc", "sys", "dev"):
        os.makedirs(os.path.join(rootfs, d))
    shutil.copy(busybox, os.path.join(rootfs, "bin", "busybox"))
    for applet in ("sh", "cat", "ls", "echo", "id", "sleep", "stat"):
        os.symlink("busybox", os.path.join(rootfs, "bin", applet))
    tar = subprocess.run(["tar", "-C", rootfs, "-c", "."], stdout=subprocess.PIPE, check=True)
    r = docker("import", "-", IMAGE, input=tar.stdout)
    assert r.returncode == 0, r.stderr.decode()


@pytest.fixture(scope="module")
def docker():
    if not _docker_bin() or not shutil.which("dockerd"):
        pytest.skip("Docker is not installed (Debian package docker.io)")
    if not os.path.exists("/bin/busybox"):
        pytest.skip("no /bin/busybox for the test image (Debian package busybox-static)")
    root = tempfile.mkdtemp(prefix="vaultfs-docker-", dir="/var/tmp")
    d = Docker(root)
    try:
        if not d.start():
            pytest.skip(f"dockerd cannot start on this machine:\n{d.log_tail()}")
        _build_image(d, root)
        code, out = d.sh("echo ok")
        if code != 0:
            pytest.skip(f"dockerd started but cannot run a container: {out}\n{d.log_tail()}")
        yield d
    finally:
        d.stop()
        subprocess.run(["umount", "-R", "-l", f"{root}/data"], stderr=subprocess.DEVNULL)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def billing(vault_factory):
    """A vault with billing/API_KEY (0644) and billing/OWNED (4242, 0400)."""
    v = vault_factory(config=CONFIG, mount=False)
    v.set("billing", "API_KEY", b"sk-live-1")
    v.set("billing", "OWNED", b"for-4242")
    v.mount()
    os.chown(v.path("billing", "OWNED"), OWNER, OWNER)
    os.chmod(v.path("billing", "OWNED"), 0o400)
    return v


def restart(v, extra=()):
    """What a restart of the service does: SIGTERM, then a new daemon."""
    proc, v.proc = v.proc, None
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    assert not os.path.ismount(v.mnt)
    v.mount(extra=extra)


def test_container_reads_secrets_read_only_as_root_and_user(docker, billing):
    v = billing
    bind = ["-v", f"{v.path('billing')}:/run/secrets:ro"]
    code, out = docker.sh("cat /run/secrets/API_KEY", *bind)
    assert (code, out) == (0, "sk-live-1")
    code, out = docker.sh("cat /run/secrets/OWNED", "--user", f"{OWNER}:{OWNER}", *bind)
    assert (code, out) == (0, "for-4242")
    code, out = docker.sh("cat /run/secrets/OWNED", "--user", f"{STRANGER}:{STRANGER}", *bind)
    assert code != 0 and "Permission denied" in out and "for-4242" not in out
    code, out = docker.sh("echo pwned > /run/secrets/API_KEY", *bind)
    assert code != 0 and "Read-only file system" in out
    assert v.get("billing", "API_KEY") == b"sk-live-1"


def test_plain_bind_mount_goes_stale_when_vaultfs_restarts(docker, billing):
    """The failure the DOCKER section warns about, as users see it."""
    v = billing
    name = f"vaultfs-stale-{os.getpid()}"
    r = docker("run", "-d", "--name", name, "--network", "none",
               "-v", f"{v.path('billing')}:/run/secrets:ro", IMAGE, "sleep", "120")
    assert r.returncode == 0, r.stderr.decode()
    try:
        assert docker("exec", name, "cat", "/run/secrets/API_KEY").stdout == b"sk-live-1"
        restart(v)
        r = docker("exec", name, "cat", "/run/secrets/API_KEY")
        assert r.returncode != 0
        assert b"Transport endpoint is not connected" in r.stderr
    finally:
        docker("rm", "-f", name)


@pytest.fixture
def anchor(tmp_path):
    """A directory on a mount of its own; shared only if the test makes it so."""
    d = tmp_path / "vaultfs"
    d.mkdir()
    os.chmod(tmp_path, 0o755)
    subprocess.run(["mount", "--bind", str(d), str(d)], check=True)
    subprocess.run(["mount", "--make-private", str(d)], check=True)
    yield d
    subprocess.run(["umount", "-R", "-l", str(d)])


def test_rslave_needs_a_shared_mount(docker, anchor):
    (anchor / "billing" / "secrets").mkdir(parents=True)
    code, out = docker.sh("ls /run", "--mount",
                          f"type=bind,src={anchor}/billing,dst=/run,readonly,"
                          "bind-propagation=rslave")
    assert code != 0
    assert "is not a shared or slave mount" in out


def test_instance_mount_survives_restart_with_rslave(docker, anchor, billing):
    v = billing
    v.unmount()
    subprocess.run(["mount", "--make-rshared", str(anchor)], check=True)
    v.mnt = str(anchor / "billing" / "secrets")
    os.makedirs(v.mnt)
    os.chmod(anchor / "billing", 0o755)
    ro = ["-o", "ro", "--instance", "billing"]
    v.mount(extra=ro)
    name = f"vaultfs-rslave-{os.getpid()}"
    r = docker("run", "-d", "--name", name, "--network", "none", "--user", f"{OWNER}:{OWNER}",
               "--mount", f"type=bind,src={anchor}/billing,dst=/run,readonly,"
               "bind-propagation=rslave", IMAGE, "sleep", "120")
    assert r.returncode == 0, r.stderr.decode()
    try:
        def cat(key, user=None):
            u = ["-u", user] if user else []
            r = docker("exec", *u, name, "cat", f"/run/secrets/{key}")
            return r.returncode, (r.stdout + r.stderr).decode(errors="replace")

        assert cat("OWNED") == (0, "for-4242")
        assert cat("API_KEY") == (0, "sk-live-1")
        code, out = cat("OWNED", f"{STRANGER}")
        assert code != 0 and "Permission denied" in out

        v.set("billing", "API_KEY", b"sk-live-2")
        restart(v, extra=ro)
        assert wait_for(lambda: cat("API_KEY") == (0, "sk-live-2"), 10), \
            f"the container lost the vault across a restart: {cat('API_KEY')}"
        r = docker("exec", "-u", "0", name, "/bin/sh", "-c", "echo x > /run/secrets/API_KEY")
        assert r.returncode != 0 and b"Read-only file system" in r.stderr
    finally:
        docker("rm", "-f", name)
    assert v.get("billing", "API_KEY") == b"sk-live-2"


# A container's read loop: counts good and bad reads of /run/secrets/API_KEY
# until /ctl/stop exists, and publishes its count of good reads in /ctl/n.
READ_LOOP = """
n=0; bad=0
while [ ! -e /ctl/stop ]; do
  v=$(cat /run/secrets/API_KEY 2>&1)
  if [ "$v" = sk-live-1 ]; then n=$((n+1)); else bad=$((bad+1)); echo "BAD: $v"; fi
  echo $n > /ctl/n.tmp && mv /ctl/n.tmp /ctl/n
done
echo "reads=$n bad=$bad"
"""


def test_simple_bind_mount_survives_kill9_and_upgrade(docker, billing, tmp_path):
    """The recommended recipe, `docker run -v /run/vault/billing:/run/secrets:ro`:
    the container keeps reading while the serving process is killed and
    upgraded, because the connection itself never goes away."""
    from conftest import VAULTFS_BIN, serving_pid_changed
    v = billing
    ctl = tmp_path / "ctl"
    ctl.mkdir()
    os.chmod(tmp_path, 0o755)

    def reads():
        try:
            return int((ctl / "n").read_text() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def progress():
        start = reads()
        assert wait_for(lambda: reads() >= start + 3, 60), docker.log_tail()
    container = subprocess.Popen(
        docker.cli + ["run", "--rm", "--network", "none", "-v",
                      f"{v.path('billing')}:/run/secrets:ro", "-v", f"{ctl}:/ctl",
                      IMAGE, "/bin/sh", "-c", READ_LOOP],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        progress()
        for _ in range(20):
            old = v.worker_pid()
            os.kill(old, signal.SIGKILL)
            serving_pid_changed(v, old)
            progress()
        for _ in range(5):
            old = v.worker_pid()
            r = run([VAULTFS_BIN, "reload", "--upgrade", v.mnt])
            assert r.returncode == 0, r.stderr.decode()
            serving_pid_changed(v, old)
            progress()
    finally:
        (ctl / "stop").write_text("")
        try:
            out, _ = container.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            container.kill()
            out, _ = container.communicate()
    out = out.decode(errors="replace")
    assert container.returncode == 0, out
    assert "bad=0" in out and "BAD" not in out, out
    print(f"\ncontainer across 20 kill -9 and 5 upgrades: {out.strip()}")
