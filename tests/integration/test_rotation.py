"""Key rotation: the master key (re-wrapping data keys) and an instance's data
key (re-sealing values), while mounted, and interrupted."""
import fcntl
import json
import os
import shutil
import signal
import subprocess
import termios
import threading

import pytest

from conftest import VAULTFS_BIN, clean_env, read_file, run, wait_for, write_file

PIPE_SIZE = 4096


class Writer(threading.Thread):
    """Writes numbered values to one file until told to stop; keeps the last
    value whose close() succeeded, and any failure."""

    def __init__(self, path):
        super().__init__(daemon=True)
        self.path = path
        self.acked = None
        self.failures = []
        self.stop = False
        self.n = 0

    def run(self):
        while not self.stop:
            val = f"w-{self.n}".encode()
            try:
                write_file(self.path, val)
                self.acked = val
            except OSError as e:
                self.failures.append(e)
            self.n += 1

    def finish(self):
        self.stop = True
        self.join(timeout=60)
        assert not self.is_alive()


class Reader(threading.Thread):
    """Reads every file of the mount over and over, comparing with what it
    should hold; counts reads and failures. Stops when told, after at least
    `rounds_after` more full rounds."""

    def __init__(self, files):
        super().__init__(daemon=True)
        self.files = files
        self.reads = 0
        self.failures = []
        self.stop_after = None
        self.rounds = 0

    def run(self):
        while self.stop_after is None or self.rounds < self.stop_after:
            for path, want in self.files.items():
                try:
                    got = read_file(path)
                    if got != want:
                        self.failures.append((path, got))
                except OSError as e:
                    self.failures.append((path, e))
                self.reads += 1
            self.rounds += 1

    def finish(self, more_rounds=3):
        self.stop_after = self.rounds + more_rounds
        self.join(timeout=60)
        assert not self.is_alive()


def fill(v, instances=3, keys=4):
    files = {}
    for i in range(instances):
        os.mkdir(v.path(f"app{i}"))
        for k in range(keys):
            val = f"secret-{i}-{k}".encode()
            write_file(v.path(f"app{i}", f"K{k}"), val)
            files[v.path(f"app{i}", f"K{k}")] = val
    return files


def new_key(v, name="new.key"):
    path = os.path.join(v.dir, name)
    r = run([VAULTFS_BIN, "keygen", "--out", path])
    assert r.returncode == 0, r.stderr.decode()
    return path


def cli_with_key(v, key, *args):
    return run([VAULTFS_BIN, args[0], "--db", v.db, "--key-file", key] + list(args[1:]))


def assert_opens_with(v, key, files_by_key):
    for (inst, k), want in files_by_key.items():
        r = cli_with_key(v, key, "get", inst, k)
        assert r.returncode == 0, r.stderr.decode()
        assert r.stdout == want


def assert_refused(v, key):
    r = cli_with_key(v, key, "ls")
    assert r.returncode == 1
    assert b"wrong master key" in r.stderr, r.stderr


def by_key(files, v):
    return {tuple(os.path.relpath(p, v.mnt).split("/")): val for p, val in files.items()}


def test_master_rotation_while_reading(vault):
    v = vault
    files = fill(v)
    old = os.path.join(v.dir, "old.key")
    shutil.copy(v.key, old)
    nk = new_key(v)
    new_hex = read_file(nk)
    reader = Reader(files)
    writer = Writer(v.path("app2", "W"))
    reader.start()
    writer.start()
    assert wait_for(lambda: reader.rounds >= 2 and writer.n >= 2, 30)
    r = v.cli("rotate-key", "--new-key-file", nk)
    assert r.returncode == 0, r.stderr.decode()
    out = r.stdout.decode()
    assert "re-wrapped 3 data keys" in out and "told 1 mount daemon" in out, out
    reader.finish()
    n = writer.n
    assert wait_for(lambda: writer.n >= n + 2, 30)
    writer.finish()
    assert reader.failures == [], f"reads failed during the rotation: {reader.failures[:5]}"
    assert writer.failures == [], f"writes failed during the rotation: {writer.failures[:5]}"
    assert read_file(v.path("app2", "W")) == writer.acked

    # The new key took the key file's place; the old one opens nothing.
    assert read_file(v.key) == new_hex and not os.path.exists(nk)
    assert os.stat(v.key).st_mode & 0o777 == 0o600
    assert_refused(v, old)
    assert_opens_with(v, v.key, by_key(files, v))
    assert wait_for(lambda: "master key reloaded" in v.log(), 10), v.log()

    # The daemon wraps new instances with the new key: after a remount with
    # only the new key, they open.
    os.mkdir(v.path("later"))
    write_file(v.path("later", "K"), "made after the rotation")
    write_file(v.path("app0", "K0"), "written after the rotation")
    v.remount()
    assert read_file(v.path("later", "K")) == b"made after the rotation"
    assert read_file(v.path("app0", "K0")) == b"written after the rotation"


def test_daemon_never_wraps_with_a_stale_key(vault):
    """A daemon whose key source still holds the old key after a rotation
    refuses to create an instance rather than wrap its key with the old one,
    and picks up the new key as soon as it is there."""
    v = vault
    files = fill(v, instances=1, keys=1)
    daemon_key = os.path.join(v.dir, "daemon.key")
    cli_key = os.path.join(v.dir, "cli.key")
    shutil.copy(v.key, cli_key)
    v.unmount()
    shutil.move(v.key, daemon_key)
    v.key = daemon_key
    v.mount()
    assert read_file(v.path("app0", "K0")) == files[v.path("app0", "K0")]
    nk = new_key(v)
    # The CLI's key file is replaced; the daemon's still holds the old key.
    r = cli_with_key(v, cli_key, "rotate-key", "--new-key-file", nk)
    assert r.returncode == 0, r.stderr.decode()
    assert wait_for(lambda: "keeping the key in use" in v.log(), 10), v.log()
    assert read_file(v.path("app0", "K0")) == files[v.path("app0", "K0")], \
        "cached data keys keep serving"
    with pytest.raises(OSError):
        os.mkdir(v.path("fresh"))
    assert "fresh" not in os.listdir(v.mnt)
    shutil.copy(cli_key, daemon_key)
    os.mkdir(v.path("fresh"))
    write_file(v.path("fresh", "K"), "ok")
    v.remount()
    assert read_file(v.path("fresh", "K")) == b"ok"


def test_instance_rotation_while_reading(vault):
    v = vault
    files = fill(v)
    p = v.path("app1", "K1")
    write_file(p, "second")
    files[p] = b"second"
    write_file(v.path("app1", "GONE"), "deleted-value")
    os.unlink(v.path("app1", "GONE"))
    reader = Reader(files)
    reader.start()
    assert wait_for(lambda: reader.rounds >= 2, 30)
    r = v.cli("rotate-key", "--instance", "app1")
    assert r.returncode == 0, r.stderr.decode()
    assert "generation 2" in r.stdout.decode() and "re-sealed 5 keys" in r.stdout.decode()
    reader.finish()
    assert reader.failures == [], f"reads failed during the rotation: {reader.failures[:5]}"
    # Old versions and deleted keys were re-sealed too.
    assert v.cli("get", "--version", "1", "app1", "K1").stdout == b"secret-1-1"
    assert v.cli("undelete", "app1", "GONE").returncode == 0
    assert read_file(v.path("app1", "GONE")) == b"deleted-value"
    data = json.loads(v.cli("export", "app1").stdout)
    assert data["instances"][0]["generation"] == 2
    # Writes through the mount after the rotation use the new data key.
    write_file(p, "third")
    v.remount()
    assert read_file(p) == b"third"
    r = v.cli("rotate-key", "--instance", "nope")
    assert r.returncode == 1 and b"no such instance: nope" in r.stderr


def start_blocked(argv):
    """Runs argv with its stderr into a small pipe that is never read, and
    returns once the pipe is full: the process is stuck inside its work."""
    rd, wr = os.pipe()
    fcntl.fcntl(wr, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=wr, env=clean_env())
    os.close(wr)

    def full():
        buf = bytearray(4)
        fcntl.ioctl(rd, termios.FIONREAD, buf)
        return int.from_bytes(buf, "little") > PIPE_SIZE - 100 or proc.poll() is not None

    assert wait_for(full, 30)
    assert proc.poll() is None, "it finished before the pipe filled: make more work"
    return proc, rd


def kill_blocked(proc, rd):
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=10) == -signal.SIGKILL
    os.close(rd)


def test_interrupted_master_rotation(vault):
    v = vault
    files = {}
    for i in range(150):
        os.mkdir(v.path(f"inst-{i:03d}"))
        write_file(v.path(f"inst-{i:03d}", "K"), f"value-{i}")
        files[(f"inst-{i:03d}", "K")] = f"value-{i}".encode()
    old_hex = read_file(v.key)
    nk = new_key(v)
    proc, rd = start_blocked([VAULTFS_BIN, "rotate-key", "--db", v.db, "--key-file", v.key,
                              "--new-key-file", nk, "--verbose"])
    kill_blocked(proc, rd)
    # Killed inside the transaction: the old key opens everything, the new
    # key nothing, and no key file moved.
    assert read_file(v.key) == old_hex and os.path.exists(nk)
    assert_refused(v, nk)
    assert_opens_with(v, v.key, files)
    assert read_file(v.path("inst-042", "K")) == b"value-42", "the mount keeps serving"
    # Run again, it completes.
    old = os.path.join(v.dir, "old.key")
    shutil.copy(v.key, old)
    r = v.cli("rotate-key", "--new-key-file", nk)
    assert r.returncode == 0, r.stderr.decode()
    assert_refused(v, old)
    assert_opens_with(v, v.key, files)


def test_rotation_cut_short_before_installing_the_key(vault_unmounted):
    """The vault is re-wrapped but the key file can't be replaced: exactly
    the new key opens it, and running the command again finishes."""
    v = vault_unmounted
    v.set("app", "K", "v")
    old = os.path.join(v.dir, "old.key")
    shutil.copy(v.key, old)
    nk = new_key(v)
    assert run(["chattr", "+i", v.key]).returncode == 0
    try:
        r = v.cli("rotate-key", "--new-key-file", nk)
    finally:
        run(["chattr", "-i", v.key])
    assert r.returncode == 1
    assert b"the vault needs the new key now" in r.stderr and b"run this command again" \
        in r.stderr, r.stderr
    assert_refused(v, old)
    assert_opens_with(v, nk, {("app", "K"): b"v"})
    r = v.cli("rotate-key", "--new-key-file", nk)
    assert r.returncode == 0, r.stderr.decode()
    assert b"finishing it" in r.stdout
    assert_opens_with(v, v.key, {("app", "K"): b"v"})
    assert not os.path.exists(nk)


def test_new_key_on_another_filesystem_is_copied(vault_unmounted):
    v = vault_unmounted
    v.set("app", "K", "v")
    nk = os.path.join("/dev/shm", f"vaultfs-test-{os.getpid()}.key")
    r = run([VAULTFS_BIN, "keygen", "--out", nk])
    assert r.returncode == 0
    try:
        new_hex = read_file(nk)
        r = v.cli("rotate-key", "--new-key-file", nk)
        assert r.returncode == 0, r.stderr.decode()
        assert read_file(v.key) == new_hex
        assert not os.path.exists(nk), "no copy of the new key is left behind"
        assert os.stat(v.key).st_mode & 0o777 == 0o600
    finally:
        if os.path.exists(nk):
            os.unlink(nk)
    assert v.get("app", "K") == b"v"


def test_interrupted_instance_rotation(vault_unmounted):
    v = vault_unmounted
    env = "".join(f"KEY_{i:04d}=value-{i}\n" for i in range(300))
    r = v.cli("import", "big", "--env", "-", input=env)
    assert r.returncode == 0, r.stderr.decode()
    proc, rd = start_blocked([VAULTFS_BIN, "rotate-key", "--db", v.db, "--key-file", v.key,
                              "--instance", "big", "-v"])
    kill_blocked(proc, rd)
    data = json.loads(v.cli("export", "big").stdout)
    assert data["instances"][0]["generation"] == 1, "nothing of the rotation stayed"
    for i in (0, 150, 299):
        assert v.get("big", f"KEY_{i:04d}") == f"value-{i}".encode()
    r = v.cli("rotate-key", "--instance", "big")
    assert r.returncode == 0, r.stderr.decode()
    assert json.loads(v.cli("export", "big").stdout)["instances"][0]["generation"] == 2
    for i in (0, 150, 299):
        assert v.get("big", f"KEY_{i:04d}") == f"value-{i}".encode()


def test_rotate_key_refusals(vault_unmounted):
    v = vault_unmounted
    v.set("app", "K", "v")
    r = v.cli("rotate-key")
    assert r.returncode == 2 and b"want --new-key-file FILE or --instance NAME" in r.stderr
    r = v.cli("rotate-key", "--new-key-file", v.key)
    assert r.returncode == 1 and b"is the key file in use" in r.stderr
    same = os.path.join(v.dir, "same.key")
    shutil.copy(v.key, same)
    r = v.cli("rotate-key", "--new-key-file", same)
    assert r.returncode == 1 and b"the new key is the key in use" in r.stderr
    bad = os.path.join(v.dir, "bad.key")
    write_file(bad, "not a key")
    os.chmod(bad, 0o600)
    r = v.cli("rotate-key", "--new-key-file", bad)
    assert r.returncode == 1 and b"not a master key" in r.stderr
    # A wrong current key changes nothing.
    other = new_key(v, "other.key")
    nk = new_key(v)
    r = cli_with_key(v, other, "rotate-key", "--new-key-file", nk)
    assert r.returncode == 1 and b"wrong master key" in r.stderr
    assert v.get("app", "K") == b"v" and os.path.exists(nk)
