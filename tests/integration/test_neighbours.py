"""Hostile neighbours (issue 12): users who share a vault can't delete,
replace or steal each other's secrets, starve each other of memory or
handles, leave plaintext in the page cache, or keep reading after a
revoke made elsewhere."""
import os
import stat

from conftest import read_file, write_file
from test_history import history


def shared_instance(vault, users, name, mode):
    """An instance owned by carol that everyone may write, mode as given
    (set with chmod through the mount, as an admin would)."""
    os.mkdir(vault.path(name))
    os.chown(vault.path(name), users.uid["carol"], users.gid["carol"])
    os.chmod(vault.path(name), mode)
    return vault.path(name)


def test_sticky_instance_keeps_its_bit_and_protects_each_users_secrets(vault, users):
    d = shared_instance(vault, users, "shared", 0o1777)
    # The bit is kept: stat shows drwxrwxrwt, through the mount and after it.
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o1777
    assert vault.cli("ls", "-l").stdout.decode().count("rwt") == 1

    assert users.sh("alice", f"echo alice-1 > {d}/ALICE && echo alice-2 > {d}/ALICE")\
        .returncode == 0
    assert users.sh("bob", f"echo bob > {d}/BOB").returncode == 0
    # bob can't delete, move, or replace alice's secret...
    r = users.sh("bob", f"rm -f {d}/ALICE")
    assert r.returncode != 0 and b"Operation not permitted" in r.stderr
    r = users.sh("bob", f"mv {d}/BOB {d}/ALICE")
    assert r.returncode != 0 and b"Operation not permitted" in r.stderr
    r = users.sh("bob", f"mv {d}/ALICE {d}/MINE")
    assert r.returncode != 0 and b"Operation not permitted" in r.stderr
    assert vault.get("shared", "ALICE") == b"alice-2"
    assert [n for n, *_ in history(vault, "shared", "ALICE")] == [2, 1]
    # ... nor can alice touch bob's; each renames and removes their own.
    assert users.sh("alice", f"rm -f {d}/BOB").returncode != 0
    assert users.sh("bob", f"mv {d}/BOB {d}/BOB2 && rm {d}/BOB2").returncode == 0
    assert users.sh("alice", f"mv {d}/ALICE {d}/ALICE2").returncode == 0
    # The instance's owner (carol) and root may remove anyone's.
    assert users.sh("bob", f"echo bob > {d}/BOB").returncode == 0
    assert users.sh("carol", f"rm -f {d}/ALICE2").returncode == 0
    os.unlink(os.path.join(d, "BOB"))
    assert os.listdir(d) == []


def test_sticky_instance_from_the_config(vault_factory, users):
    v = vault_factory(config="[instance shared]\nmode = 1777\n", mount=False)
    v.mount()
    assert stat.S_IMODE(os.stat(v.path("shared")).st_mode) == 0o1777
    d = v.path("shared")
    assert users.sh("alice", f"echo a > {d}/A").returncode == 0
    r = users.sh("bob", f"rm -f {d}/A")
    assert r.returncode != 0 and b"Operation not permitted" in r.stderr


def test_renaming_over_someone_elses_secret_never_hands_over_its_history(vault, users):
    """Without the sticky bit, a writable instance lets bob replace alice's
    secret, as on any filesystem; but her old values go to the trash with
    her secret, never into the history of bob's."""
    d = shared_instance(vault, users, "open", 0o777)
    assert users.sh("alice", f"echo alice-1 > {d}/K && echo alice-2 > {d}/K")\
        .returncode == 0
    assert users.sh("bob", f"echo bob-1 > {d}/T && mv {d}/T {d}/K").returncode == 0
    assert read_file(os.path.join(d, "K"), ) == b"bob-1"
    assert os.stat(os.path.join(d, "K")).st_uid == users.uid["bob"]
    rows = history(vault, "open", "K")
    assert [(n, by) for n, _, by, _ in rows] == [(1, users.uid["bob"])], \
        "only bob's own version"
    assert vault.cli("get", "--version", "2", "open", "K").returncode != 0
    # alice's secret, history included, waits in the trash for an admin.
    deleted = vault.cli("ls", "--deleted", "open").stdout.decode()
    assert "K" in deleted, deleted
    # An owner's own rename over (an editor's save) still continues it.
    assert users.sh("bob", f"echo bob-2 > {d}/T && mv {d}/T {d}/K").returncode == 0
    assert [n for n, *_ in history(vault, "open", "K")] == [2, 1]
    # So does root's, editing anyone's secret.
    write_file(os.path.join(d, "T"), "root-3")
    os.rename(os.path.join(d, "T"), os.path.join(d, "K"))
    assert [n for n, *_ in history(vault, "open", "K")] == [3, 2, 1]


# -- one user's open files can't starve the others ------------------------------

HOARD = r"""
import errno, os, resource, sys
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
fds = []
err = "none"
while len(fds) < int(sys.argv[2]):
    try:
        fds.append(os.open(sys.argv[1], os.O_RDONLY))
    except OSError as e:
        err = errno.errorcode[e.errno]
        break
print(len(fds), err, flush=True)
sys.stdin.read()          # hold them until told
"""


class Hoarder:
    """A user's process that opens one secret until refused and keeps every
    descriptor open until stop(), which returns once the daemon has released
    them all (its locked memory is back where it was)."""

    def __init__(self, users, role, path, limit=200000, daemon=None):
        import subprocess
        from torture import proc_status
        self.daemon = daemon
        self.lck = proc_status(daemon.pid)["VmLck"] if daemon else None
        self.proc = subprocess.Popen(
            ["setpriv", f"--reuid={users.name[role]}", f"--regid={users.name[role]}",
             "--init-groups", "--", "/usr/bin/python3", "-c", HOARD, path, str(limit)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            cwd="/")
        line = self.proc.stdout.readline().decode().split()
        assert len(line) == 2, self.proc.stderr.read().decode()
        self.count, self.error = int(line[0]), line[1]

    def stop(self, settle=True):
        from conftest import wait_for
        from torture import proc_status
        if not self.proc.stdin.closed:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)
        if self.daemon and settle:
            # RELEASE reaches the daemon after the process is gone; the
            # pool may keep a few pages locked for reuse.
            assert wait_for(lambda: proc_status(self.daemon.pid)["VmLck"] <=
                            self.lck + 16 * 4096, 30.0), \
                "the daemon still holds the hoarder's locked memory"


def own_secret(vault, users, role, inst="team", key=None):
    key = key or role.upper()
    p = vault.path(inst, key)
    assert users.sh(role, f"printf x > {p}").returncode == 0
    return p


def team_instance(vault):
    os.mkdir(vault.path("team"))
    os.chmod(vault.path("team"), 0o1777)


def others_still_work(vault, users, who):
    """What everyone else sees while a hoarder holds its share: their own
    reads and creates work."""
    for role in who:
        p = vault.path("team", role.upper())
        assert users.try_open(role, p) == "OK:x", f"{role} can't read its secret"
        r = users.sh(role, f"printf new > {vault.path('team', role.upper() + '_NEW')}")
        assert r.returncode == 0, f"{role} can't create: {r.stderr.decode()}"
    assert read_file(vault.path("team", "ROOT")) == b"root"
    write_file(vault.path("team", "ROOT_NEW"), "new")


def test_a_user_at_their_handle_limit_gets_emfile_and_nobody_else_does(vault, users):
    """With the defaults (user_handles = 1024)."""
    v = vault
    team_instance(v)
    mine = own_secret(v, users, "alice")
    own_secret(v, users, "bob")
    write_file(v.path("team", "ROOT"), "root")
    h = Hoarder(users, "alice", mine, daemon=v.proc)
    try:
        # alice sees "Too many open files" at her 1025th descriptor...
        assert (h.count, h.error) == (1024, "EMFILE")
        # ... bob and root read and create as before.
        others_still_work(v, users, ["bob"])
        assert users.try_open("alice", mine) == "EMFILE"
    finally:
        h.stop()
    assert users.try_open("alice", mine) == "OK:x", "her share is back once closed"


def test_a_user_at_their_memory_share_gets_enomem_and_nobody_else_does(vault_factory, users):
    v = vault_factory(config="[vault]\nuser_handles = 0\nuser_memlock = 1M\n")
    team_instance(v)
    mine = own_secret(v, users, "alice")
    own_secret(v, users, "bob")
    write_file(v.path("team", "ROOT"), "root")
    h = Hoarder(users, "alice", mine, daemon=v.proc)
    try:
        # One page of locked memory per open value: 1 MiB is 256 of them.
        assert h.error == "ENOMEM" and 200 <= h.count <= 256, (h.count, h.error)
        others_still_work(v, users, ["bob"])
    finally:
        h.stop()
    # Her closes reach the daemon just after her process exits.
    from conftest import wait_for
    assert wait_for(lambda: users.try_open("alice", mine) == "OK:x", 10.0), \
        "her share is not back once her files are closed"


def test_users_together_cannot_take_the_reserve_of_root_and_trusted_readers(
        vault_factory, users):
    """alice takes her whole share, bob what is left of the part of the budget
    for ordinary users: then root and carol, a configured reader (read_users
    of svc), still read and create, from the reserve nobody else may use."""
    v = vault_factory(config=(
        "[vault]\nuser_handles = 0\nmemlock_budget = 4M\nmemlock_reserve = 1M\n"
        "user_memlock = 2M\n"
        "[instance ops]\nmode = 1777\n"
        f"[instance svc]\nmode = 1777\nread_users = root, {users.name['carol']}\n"),
        mount=False)
    v.mount()
    a = own_secret(v, users, "alice", inst="ops")
    b = own_secret(v, users, "bob", inst="ops")
    c = own_secret(v, users, "carol", inst="svc")
    write_file(v.path("svc", "ROOT"), "root")
    hoarders = []
    try:
        hoarders.append(Hoarder(users, "alice", a, daemon=v.proc))
        hoarders.append(Hoarder(users, "bob", b, daemon=v.proc))
        alice, bob = hoarders
        # 4 KiB a value: alice's 2 MiB share is ~512 opens; bob gets only
        # the rest of the 3 MiB for ordinary users.
        assert alice.error == "ENOMEM" and 400 <= alice.count <= 512, alice.count
        assert bob.error == "ENOMEM" and bob.count <= 300, bob.count
        assert users.try_open("bob", b) == "ENOMEM"
        assert users.try_open("carol", c) == "OK:x"
        r = users.sh("carol", f"printf new > {v.path('svc', 'CAROL_NEW')}")
        assert r.returncode == 0, r.stderr.decode()
        assert read_file(v.path("svc", "ROOT")) == b"root"
        write_file(v.path("svc", "ROOT_NEW"), "new")
    finally:
        for h in reversed(hoarders):      # the first one's baseline is the daemon's
            h.stop(settle=h is hoarders[0])
    assert users.try_open("bob", b) == "OK:x"


# -- no plaintext page stays in the page cache -----------------------------------

MAPPER = r"""
import mmap, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
m = mmap.mmap(fd, 0, mmap.MAP_PRIVATE, mmap.PROT_READ)
sys.stdout.write(m[:].decode() + "\n")
sys.stdout.flush()
sys.stdin.read()          # keep the mapping until told
m.close()
os.close(fd)
"""


def cached_pages(fd):
    """Pages of fd's file in the page cache: the cachestat system call."""
    import ctypes
    import struct
    libc = ctypes.CDLL(None, use_errno=True)
    rng = struct.pack("QQ", 0, 0)          # the whole file
    out = ctypes.create_string_buffer(40)
    if libc.syscall(451, fd, ctypes.c_char_p(rng), out, 0) < 0:
        raise OSError(ctypes.get_errno(), "cachestat")
    return struct.unpack("5Q", out.raw)[0]


def test_a_private_mmap_leaves_no_page_cached_after_the_last_close(vault, users):
    import subprocess
    from conftest import wait_for
    os.mkdir(vault.path("app"))
    os.chown(vault.path("app"), users.uid["alice"], users.gid["alice"])
    p = vault.path("app", "TOKEN")
    assert users.sh("alice", f"printf sk-live-mapped > {p}").returncode == 0
    watch = os.open(p, os.O_RDONLY)       # root's window on the page cache
    try:
        assert cached_pages(watch) == 0, "read(2) never caches a value"
        proc = subprocess.Popen(
            ["setpriv", f"--reuid={users.name['alice']}", f"--regid={users.name['alice']}",
             "--init-groups", "--", "/usr/bin/python3", "-c", MAPPER, p],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd="/")
        # alice sees her value through the mapping, and while it lives the
        # page is cached (so the check below can see a cached page).
        assert proc.stdout.readline() == b"sk-live-mapped\n"
        assert cached_pages(watch) == 1
        proc.stdin.close()
        assert proc.wait(timeout=10) == 0
        # Her last close is the daemon's cue: the page goes (the release
        # reaches the daemon just after close() returns, so allow it a moment).
        assert wait_for(lambda: cached_pages(watch) == 0, 5.0), \
            "the value's page is still in the page cache after the last close"
        # Reading it with read(2) still works, and still caches nothing.
        assert users.try_open("alice", p) == "OK:sk-live-mapped"
        assert cached_pages(watch) == 0
    finally:
        os.close(watch)


# -- a revoke takes effect at every mount at once ------------------------------

class SecondMount:
    """Another daemon on the same vault: `vaultfs mount --instance INST`, as
    a container's mount would be, with attributes cached for an hour."""

    def __init__(self, vault, instance):
        import subprocess
        from conftest import MOUNT_TIMEOUT, clean_env, default_sigint, wait_for, VAULTFS_BIN
        self.mnt = os.path.join(vault.dir, "mnt-" + instance)
        os.mkdir(self.mnt, 0o755)
        self.log_path = os.path.join(vault.dir, "daemon-" + instance + ".log")
        argv = [VAULTFS_BIN, "mount"] + vault.base_opts() + \
            ["-f", "--instance", instance, self.mnt]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, env=clean_env(),
                                         preexec_fn=default_sigint)
        assert wait_for(lambda: os.path.ismount(self.mnt), MOUNT_TIMEOUT), \
            open(self.log_path).read()

    def path(self, *parts):
        return os.path.join(self.mnt, *parts)

    def stop(self):
        from conftest import force_unmount, run
        r = run(["fusermount3", "-u", self.mnt])
        rc = self.proc.wait(timeout=10)
        force_unmount(self.mnt)
        log = open(self.log_path).read()
        assert r.returncode == 0 and rc == 0, log
        assert "AddressSanitizer" not in log and "runtime error:" not in log, log


LONG_CACHE = "[vault]\nattr_timeout = 3600\n"


def test_a_revoke_through_one_mount_holds_at_the_other_at_once(vault_factory, users):
    """A whole-vault mount and a container's --instance mount, both caching
    attributes for an hour. Each revoke made through one (or the CLI) is
    obeyed by the other at the very next open: no sleep in between, the
    daemon decides from the stored row. A grant waits for the other
    kernel's cached mode to be dropped, which the change feed does within
    about 20 ms (README, Seeing changes): that kernel refuses on its own
    before asking the daemon."""
    from conftest import wait_for
    v = vault_factory(config=LONG_CACHE)
    os.mkdir(v.path("app"))
    os.chmod(v.path("app"), 0o755)
    write_file(v.path("app", "TOKEN"), "v1")
    os.chmod(v.path("app", "TOKEN"), 0o644)
    other = SecondMount(v, "app")
    try:
        tok = other.path("TOKEN")
        assert users.try_open("bob", tok) == "OK:v1"       # now cached at `other`
        # chmod 600 through the whole-vault mount: bob is refused there...
        os.chmod(v.path("app", "TOKEN"), 0o600)
        assert users.try_open("bob", tok) == "EACCES"
        # ... and `stat` at the other mount shows the new mode soon after
        # (its cache is dropped by the change feed, not by the hour passing).
        assert wait_for(lambda: stat.S_IMODE(os.stat(tok).st_mode) == 0o600, 5.0)

        # chown to bob with 0600 grants him, and alice (group) nothing.
        os.chmod(v.path("app", "TOKEN"), 0o640)
        os.chown(v.path("app", "TOKEN"), users.uid["bob"], users.gid["alice"])
        assert wait_for(lambda: users.try_open("alice", tok) == "OK:v1", 5.0)
        os.chown(v.path("app", "TOKEN"), users.uid["bob"], 0)
        assert users.try_open("alice", tok) == "EACCES"
        assert users.try_open("bob", tok) == "OK:v1"

        # The instance closed (chmod 700 on its directory): no more reads.
        os.chmod(v.path("app"), 0o700)
        assert users.try_open("bob", tok) == "EACCES"
        os.chmod(v.path("app"), 0o755)
        assert wait_for(lambda: users.try_open("bob", tok) == "OK:v1", 5.0)

        # A rotation with the CLI: the next read is the new value.
        v.set("app", "TOKEN", "v2")
        assert users.try_open("bob", tok) == "OK:v2"

        # rm with the CLI: the other mount's cached name goes too.
        assert v.cli("rm", "app", "TOKEN").returncode == 0
        assert users.try_open("bob", tok) == "ENOENT"
        assert wait_for(lambda: not os.path.exists(tok), 5.0)
    finally:
        other.stop()


def test_the_other_mount_enforces_a_sticky_bit_it_has_not_seen(vault_factory, users):
    """The sticky bit set through one mount binds at the other at once: the
    daemon checks it at unlink and rename from the stored mode while that
    kernel still has the old mode cached, and the kernel itself once the
    change feed (every 20 ms) has dropped its cache; bob is refused either
    way."""
    v = vault_factory(config=LONG_CACHE)
    os.mkdir(v.path("shared"))
    os.chmod(v.path("shared"), 0o777)
    other = SecondMount(v, "shared")
    try:
        assert users.sh("alice", f"printf a > {other.path('A')}").returncode == 0
        assert stat.S_IMODE(os.stat(other.mnt).st_mode) == 0o777    # cached
        os.chmod(v.path("shared"), 0o1777)
        r = users.sh("bob", f"rm -f {other.path('A')}")
        assert r.returncode != 0 and b"Operation not permitted" in r.stderr
        r = users.sh("bob", f"printf b > {other.path('B')} && mv {other.path('B')} "
                     f"{other.path('A')}")
        assert r.returncode != 0 and b"Operation not permitted" in r.stderr
        assert v.get("shared", "A") == b"a"
    finally:
        other.stop()
