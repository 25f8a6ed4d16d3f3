"""Operations: the manual, make install, the systemd units, sd_notify and
single-instance mounts."""
import os
import re
import shutil
import socket
import stat
import subprocess

import pytest

from conftest import VAULTFS_BIN, oserror, read_file, run, stop_process, wait_for, write_file

REPO = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
UNITS = ("vaultfs.service", "vaultfs@.service")
# Measured with systemd 252 (Debian 12): 2.9 for both units. A change that
# weakens the sandbox shows here first.
SECURITY_MAX = 3.0


def make_env():
    """The environment for a nested make: no jobserver of the outer one, and
    none of the variables the outer make exports (make check-sanitize runs
    this suite with BUILD=build/san SANITIZE=1), as a user's shell has."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "BUILD", "SANITIZE")}
    return env


def make(*args, timeout=300):
    build = os.path.relpath(os.path.dirname(VAULTFS_BIN), REPO)
    argv = ["make", "--no-print-directory", "-C", REPO]
    if build != ".":
        argv.append(f"BUILD={build}")
    return run(argv + list(args), env=make_env(), timeout=timeout)


def listing(root):
    out = set()
    for d, _, files in os.walk(root):
        for f in files:
            out.add(os.path.relpath(os.path.join(d, f), root))
    return out


# -- the manual ------------------------------------------------------------------

@pytest.fixture(scope="module")
def man_pages():
    r = make("man")
    assert r.returncode == 0, r.stderr.decode()
    build = os.path.join(REPO, os.path.relpath(os.path.dirname(VAULTFS_BIN), REPO))
    if os.path.dirname(VAULTFS_BIN) == REPO:
        build = os.path.join(REPO, "build")
    return {name: os.path.join(build, "man", name) for name in ("vaultfs.8", "vaultfs.ini.5")}


def render(page):
    env = dict(os.environ, MANWIDTH="80", LANG="C.UTF-8")
    r = subprocess.run(["man", "--warnings", "-l", page], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, env=env, timeout=60)
    return r


@pytest.mark.parametrize("name", ["vaultfs.8", "vaultfs.ini.5"])
def test_man_page_renders_without_warnings(man_pages, name):
    r = render(man_pages[name])
    assert r.returncode == 0, r.stderr.decode()
    assert r.stderr == b"", f"man --warnings on {name}:\n{r.stderr.decode()}"
    assert b"NAME" in r.stdout and b"SEE ALSO" in r.stdout


def test_man_page_covers_every_command_and_option(man_pages):
    text = render(man_pages["vaultfs.8"]).stdout.decode()
    r = run([VAULTFS_BIN, "--help"])
    commands = re.findall(r"^  (\w+) ", r.stdout.decode(), re.M)
    assert len(commands) >= 7, r.stdout
    for cmd in commands:
        assert re.search(rf"^\s+{cmd}\b", text, re.M), f"vaultfs(8) lacks command {cmd}"
        h = run([VAULTFS_BIN, cmd, "--help"]).stdout.decode()
        for opt in re.findall(r"(--[a-z][a-z-]+)", h):
            assert opt in text, f"vaultfs(8) lacks {cmd} option {opt}"
    for section in ("EXIT STATUS", "DIAGNOSTICS", "SYSTEMD", "DOCKER", "SIGNALS", "ENVIRONMENT"):
        assert section in text


def test_man_page_covers_every_setting(man_pages):
    text = render(man_pages["vaultfs.ini.5"]).stdout.decode()
    with open(os.path.join(REPO, "src", "config_keys.c")) as f:
        src = f.read()
    settings = set(re.findall(r'\{ "([a-z_]+)", cfg_', src))
    assert {"db", "key_file", "mountpoint", "owner", "mode"} <= settings
    for s in settings:
        assert re.search(rf"\b{s} =", text), f"vaultfs.ini(5) lacks setting {s}"


def test_man_page_lists_the_cli_error_messages(man_pages):
    """A message users meet, taken from the code, is explained in the page."""
    text = " ".join(render(man_pages["vaultfs.8"]).stdout.decode().split())
    for msg in ("no master key", "wrong master key", "not a master key",
                "cannot lock memory for the master key", "already exists",
                "no such instance", "no such key", "fails authentication",
                "value too large", "invalid instance name", "invalid key name",
                "does not exist", "cannot mount on", "not a shared or slave mount",
                "Transport endpoint is not connected", "built without libsystemd"):
        assert msg in text, f"vaultfs(8) does not explain '{msg}'"


# -- make install ------------------------------------------------------------------

EXPECTED_FILES = {
    "usr/bin/vaultfs",
    "usr/share/man/man8/vaultfs.8",
    "usr/share/man/man5/vaultfs.ini.5",
    "usr/lib/systemd/system/vaultfs.service",
    "usr/lib/systemd/system/vaultfs@.service",
    "usr/share/doc/vaultfs/vaultfs.ini.example",
    "etc/vaultfs/vaultfs.ini",
}


def test_install_into_destdir_installs_exactly_the_package(tmp_path):
    dest = tmp_path / "root"
    r = make("install", f"DESTDIR={dest}", "PREFIX=/usr")
    assert r.returncode == 0, r.stderr.decode()
    assert listing(dest) == EXPECTED_FILES
    st = os.stat(dest / "usr/bin/vaultfs")
    assert stat.S_IMODE(st.st_mode) == 0o755
    assert stat.S_IMODE(os.stat(dest / "etc/vaultfs/vaultfs.ini").st_mode) == 0o600
    unit = (dest / "usr/lib/systemd/system/vaultfs.service").read_text()
    assert "ExecStart=/usr/bin/vaultfs mount" in unit, "ExecStart must name BINDIR"
    r = run([str(dest / "usr/bin/vaultfs"), "--version"])
    assert r.returncode == 0 and r.stdout.startswith(b"vaultfs ")

    r = make("uninstall", f"DESTDIR={dest}", "PREFIX=/usr")
    assert r.returncode == 0, r.stderr.decode()
    assert listing(dest) == set(), "uninstall must remove every file it installed"


def test_install_and_uninstall_leave_foreign_files_alone(tmp_path):
    dest = tmp_path / "root"
    conf = dest / "etc/vaultfs/vaultfs.ini"
    key = dest / "etc/vaultfs/master.key.cred"
    other = dest / "usr/local/bin/other-tool"
    for p, data in ((conf, "[vault]\ndb = /srv/vault.db\n"), (key, "cred"), (other, "x")):
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(data)
    r = make("install", f"DESTDIR={dest}")
    assert r.returncode == 0, r.stderr.decode()
    assert conf.read_text() == "[vault]\ndb = /srv/vault.db\n", \
        "install must not replace an admin's configuration"
    r = make("uninstall", f"DESTDIR={dest}")
    assert r.returncode == 0, r.stderr.decode()
    assert listing(dest) == {"etc/vaultfs/vaultfs.ini", "etc/vaultfs/master.key.cred",
                             "usr/local/bin/other-tool"}
    assert conf.read_text() == "[vault]\ndb = /srv/vault.db\n"


# -- the systemd units -------------------------------------------------------------

@pytest.fixture(scope="module")
def installed_units(tmp_path_factory):
    """The units installed under a real prefix, so ExecStart and the man pages exist."""
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    root = tmp_path_factory.mktemp("prefix")
    r = make("install", f"PREFIX={root}/usr", f"SYSCONFDIR={root}/etc")
    assert r.returncode == 0, r.stderr.decode()
    return root


@pytest.mark.parametrize("unit", ["vaultfs.service", "vaultfs@.service",
                                  "vaultfs@billing.service"])
def test_systemd_analyze_verify(installed_units, unit):
    unitdir = installed_units / "usr/lib/systemd/system"
    path = unitdir / unit
    if not path.exists():  # an instance of the template
        path = installed_units / unit
        shutil.copy(unitdir / "vaultfs@.service", path)
    env = dict(os.environ, MANPATH=f"{installed_units}/usr/share/man:")
    r = run(["systemd-analyze", "verify", str(path)], env=env)
    assert r.returncode == 0 and r.stderr == b"", \
        f"systemd-analyze verify {unit}:\n{r.stdout.decode()}{r.stderr.decode()}"


@pytest.mark.parametrize("unit", UNITS)
def test_systemd_security_exposure(installed_units, unit):
    path = installed_units / "usr/lib/systemd/system" / unit
    r = run(["systemd-analyze", "security", "--offline=yes", "--no-pager", str(path)])
    out = r.stdout.decode()
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", out)
    assert m, out + r.stderr.decode()
    assert float(m.group(1)) <= SECURITY_MAX, f"{unit}: exposure {m.group(1)}\n{out}"
    for setting in ("NoNewPrivileges=", "RestrictAddressFamilies=~AF_(INET|INET6)",
                    "PrivateNetwork=", "MemoryDenyWriteExecute=",
                    "CapabilityBoundingSet=~CAP_(DAC_*|FOWNER|IPC_OWNER)"):
        line = next((l for l in out.splitlines() if setting in l), "")
        assert line.lstrip().startswith("✓"), f"{unit}: {setting} is not in force:\n{line}"


# Any of these gives the service a mount namespace, which systemd makes a
# slave of the host's: the FUSE mount would exist only inside it (see
# test_systemd_boot.py for the experiment under a real systemd).
NAMESPACING = ("ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices",
               "PrivateMounts", "ProtectKernelTunables", "ProtectKernelModules",
               "ProtectKernelLogs", "ProtectControlGroups", "ProtectProc", "ProcSubset",
               "ReadWritePaths", "ReadOnlyPaths", "InaccessiblePaths", "TemporaryFileSystem",
               "BindPaths", "BindReadOnlyPaths", "RootDirectory", "PrivateUsers", "MountFlags")


@pytest.mark.parametrize("unit", UNITS)
def test_units_keep_the_mount_visible_and_the_key_out_of_files(unit):
    with open(os.path.join(REPO, "systemd", unit)) as f:
        text = f.read()
    settings = dict(re.findall(r"^(\w+)=(.*)$", text, re.M))
    for name in NAMESPACING:
        assert name not in settings, f"{unit}: {name}= would hide the FUSE mount from the host"
    assert settings["Type"] == "notify"
    assert "--foreground" in settings["ExecStart"]
    assert "--key-file %d/vaultfs.key" in settings["ExecStart"]
    assert settings["LoadCredentialEncrypted"].startswith("vaultfs.key:")
    assert settings["LimitCORE"] == "0" and settings["LimitMEMLOCK"]
    # reload: an in-place upgrade of the serving process, which also
    # reloads the key and the configuration; it waits until it serves.
    assert settings["ExecReload"].startswith("/usr/local/bin/vaultfs reload --upgrade /run/")
    assert settings["CapabilityBoundingSet"] == "CAP_SYS_ADMIN"


# -- sd_notify -----------------------------------------------------------------------

def built_with_systemd():
    """Built with libsystemd's header: the binary names the library it loads
    when a service manager listens (it is not linked, see src/notify.c)."""
    with open(VAULTFS_BIN, "rb") as f:
        return b"libsystemd.so.0\0" in f.read()


def test_commands_start_without_libsystemd():
    """`vaultfs get` and every other command start without loading
    libsystemd and the six libraries it brings (only a mount under a
    service manager loads it), or libpq (only a PostgreSQL store does)."""
    assert built_with_systemd(), "make deps installs libsystemd-dev: the build must use it"
    linked = run(["ldd", VAULTFS_BIN]).stdout
    assert b"libsystemd" not in linked
    # Nor libpq and its twenty libraries: a PostgreSQL store loads it.
    assert b"libpq" not in linked and b"libkrb5" not in linked
    # Nor libfuse: a mount loads it (fs/fuse_lib.c).
    assert b"libfuse3" not in linked


def test_mount_without_a_usable_libfuse_says_so(vault_unmounted, tmp_path):
    """A libfuse3.so.3 that lacks what vaultfs calls: the mount fails at
    once and names the library and the packages, instead of crashing."""
    v = vault_unmounted
    src = tmp_path / "empty.c"
    src.write_text("int vaultfs_test_nothing;\n")
    lib = tmp_path / "libfuse3.so.3"
    r = run(["gcc", "-shared", "-fPIC", "-Wl,-soname,libfuse3.so.3", "-o", str(lib), str(src)])
    assert r.returncode == 0, r.stderr
    r = run([VAULTFS_BIN, "mount", "-f"] + v.base_opts() + [v.mnt],
            env=dict(os.environ, LD_LIBRARY_PATH=str(tmp_path)), timeout=30)
    err = r.stderr.decode()
    assert r.returncode != 0
    assert "cannot load libfuse (packages fuse3, libfuse3-3)" in err, err
    assert "lacks fuse_" in err, err
    assert not os.path.ismount(v.mnt)


@pytest.fixture
def notify_socket(tmp_path):
    path = str(tmp_path / "notify")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(10)
    yield s, path
    s.close()


def test_sd_notify_ready_only_once_mounted(vault_unmounted, notify_socket):
    if not built_with_systemd():
        pytest.skip("this build is not linked with libsystemd")
    v = vault_unmounted
    v.set("app", "K", b"v")
    sock, path = notify_socket
    env = {k: x for k, x in os.environ.items() if k not in ("VAULTFS_KEY", "CREDENTIALS_DIRECTORY")}
    env["NOTIFY_SOCKET"] = path
    proc = subprocess.Popen([VAULTFS_BIN, "mount", "-f"] + v.base_opts() + [v.mnt], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        msg = sock.recv(4096).decode()
        mounted = os.path.ismount(v.mnt)
        assert "READY=1" in msg.split("\n"), msg
        assert mounted, "READY=1 came before the mount was in place"
        assert f"STATUS=serving {v.mnt}" in msg
        assert sorted(os.listdir(v.path("app"))) == ["K"]
    finally:
        rc = stop_process(proc)
    assert rc == 0, proc.stderr.read().decode(errors="replace")
    assert sock.recv(4096) == b"STOPPING=1"
    assert not os.path.ismount(v.mnt)


def test_sd_notify_never_ready_when_the_mount_fails(vault_unmounted, notify_socket, tmp_path):
    if not built_with_systemd():
        pytest.skip("this build is not linked with libsystemd")
    v = vault_unmounted
    sock, path = notify_socket
    env = dict(os.environ, NOTIFY_SOCKET=path)
    env.pop("VAULTFS_KEY", None)
    r = run([VAULTFS_BIN, "mount", "-f"] + v.base_opts() + ["--instance", "nope", v.mnt],
            env=env)
    assert r.returncode == 1
    assert b"instance nope does not exist" in r.stderr
    sock.settimeout(0.2)
    with pytest.raises(socket.timeout):
        sock.recv(4096)


# -- vaultfs mount --instance --------------------------------------------------------

CONFIG = """\
[instance billing]
mode = 0750
secret_mode = 0640

[instance other]
mode = 0755
"""


def test_instance_mount_shows_one_instance_at_the_root(vault_factory):
    # No mode in the config here: it would be applied again at the next mount.
    v = vault_factory(config=CONFIG.replace("mode = 0750\n", ""), mount=False)
    v.set("billing", "API_KEY", b"sk-1")
    v.set("other", "SECRET", b"nope")
    v.mount()
    os.chmod(v.path("billing"), 0o750)
    v.unmount()
    v.mount(extra=["--instance", "billing"])
    assert sorted(os.listdir(v.mnt)) == ["API_KEY"]
    assert read_file(v.path("API_KEY")) == b"sk-1"
    st = os.stat(v.mnt)
    assert stat.S_IMODE(st.st_mode) == 0o750, "the root takes the instance's mode"
    assert oserror(os.stat, v.path("other")) == 2          # ENOENT: nothing else
    assert oserror(os.stat, v.path("other", "SECRET")) == 2
    write_file(v.path("NEW"), "v2\n")                      # still a normal instance
    assert v.get("billing", "NEW") == b"v2"
    assert oserror(os.mkdir, v.path("sub")) == 1           # EPERM
    os.unlink(v.path("NEW"))
    assert sorted(os.listdir(v.mnt)) == ["API_KEY"]
    os.chmod(v.mnt, 0o700)                                 # chmod of the root is the instance's
    assert stat.S_IMODE(os.stat(v.mnt).st_mode) == 0o700
    v.unmount()
    v.mount()
    assert stat.S_IMODE(os.stat(v.path("billing")).st_mode) == 0o700
    assert sorted(os.listdir(v.mnt)) == ["billing", "other"]


def test_instance_mount_read_only(vault_factory):
    v = vault_factory(config=CONFIG, mount=False)
    v.set("billing", "API_KEY", b"sk-1")
    v.mount(extra=["-o", "ro", "--instance", "billing"])
    assert read_file(v.path("API_KEY")) == b"sk-1"
    assert oserror(write_file, v.path("API_KEY"), "x") == 30   # EROFS
    assert oserror(os.unlink, v.path("API_KEY")) == 30
    assert v.get("billing", "API_KEY") == b"sk-1"


def test_instance_mount_refuses_unknown_or_bad_names(vault_unmounted):
    v = vault_unmounted
    r = run([VAULTFS_BIN, "mount", "-f"] + v.base_opts() + ["--instance", "ghost", v.mnt])
    assert r.returncode == 1
    assert b"instance ghost does not exist" in r.stderr
    assert not os.path.ismount(v.mnt)
    r = run([VAULTFS_BIN, "mount", "-f"] + v.base_opts() + ["--instance", "../x", v.mnt])
    assert r.returncode == 2
    assert b"not an instance name" in r.stderr
    assert not os.path.ismount(v.mnt)
