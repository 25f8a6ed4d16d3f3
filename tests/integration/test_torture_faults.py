"""Faults under a running mount: a full disk, a database that may no longer
be written or is taken away, a damaged database, a daemon stopped with
files open.

What a user relies on: a write that can't be stored fails at close() with
an errno that says why, the old value stays, nothing crashes, and the vault
works again when the cause goes away; a damaged database is refused at
mount with a message that says so, and never yields wrong bytes.
"""
import errno
import os
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

from conftest import (EXIT_TIMEOUT, VAULTFS_BIN, clean_env, errname, force_unmount,
                      oserror, read_file, stop_process, wait_for, write_file)
from torture import integrity_check, report

OLD = b"old-value-must-survive"


@pytest.fixture
def small_fs():
    """small_fs(kind, size) -> directory on a new, size-limited filesystem:
    "tmpfs", or "ext4" (a loop-mounted image, for chattr +i). Unmounted after
    the test (after the vaults, which are set up later and torn down first)."""
    made = []

    def make(kind="tmpfs", size_mb=4):
        d = tempfile.mkdtemp(prefix=f"vaultfs-{kind}-", dir="/tmp")
        img = None
        if kind == "tmpfs":
            argv = ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0755", "tmpfs", d]
        else:
            img = d + ".img"
            with open(img, "wb") as f:
                f.truncate(size_mb << 20)
            r = subprocess.run(["mkfs.ext4", "-q", "-F", img], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
            assert r.returncode == 0, r.stdout.decode(errors="replace")
            argv = ["mount", "-o", "loop", img, d]
        made.append((d, img))
        r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a {kind} here: {r.stdout.decode(errors='replace')}")
        os.chmod(d, 0o755)
        return d

    yield make
    for d, img in made:
        for root, _dirs, files in os.walk(d):
            for f in files:
                subprocess.run(["chattr", "-i", os.path.join(root, f)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(50):
            if not os.path.ismount(d) or subprocess.run(["umount", d]).returncode == 0:
                break
            time.sleep(0.1)
        if os.path.ismount(d):
            subprocess.run(["umount", "-l", d])
        os.rmdir(d)
        if img:
            os.unlink(img)


def move_db(v, directory):
    """Puts a (not mounted) vault's database on another filesystem."""
    assert v.proc is None
    new = os.path.join(directory, "vault.db")
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(v.db + suffix):
            shutil.move(v.db + suffix, new + suffix)
    v.db = new


def fill(directory):
    """Fills a filesystem to the last byte; returns the filler's path."""
    path = os.path.join(directory, "filler")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 20, 64 << 10, 4096, 512, 1):
            block = b"\0" * size
            while True:
                try:
                    os.write(fd, block)
                except OSError as e:
                    assert e.errno == errno.ENOSPC, e
                    break
    finally:
        os.close(fd)
    return path


def write_errno(path, data):
    """Writes a value as `echo > key` would; the errno close() (or write())
    failed with, or None."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
    except OSError as e:
        os.close(fd)
        return e.errno
    try:
        os.close(fd)
    except OSError as e:
        return e.errno
    return None


def mount_refused(v, timeout=EXIT_TIMEOUT * 3):
    """Runs `vaultfs mount -f` expecting a refusal: returns its stderr.
    Fails (and cleans up) if it mounts instead."""
    argv = [VAULTFS_BIN, "mount"] + v.base_opts() + ["-f", v.mnt]
    err_path = os.path.join(v.dir, "refused.log")
    with open(err_path, "wb") as err_file:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=err_file,
                                stderr=subprocess.STDOUT, env=clean_env())
    ended = wait_for(lambda: proc.poll() is not None or os.path.ismount(v.mnt), timeout)
    mounted = os.path.ismount(v.mnt)
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    force_unmount(v.mnt)
    with open(err_path, "rb") as f:
        err = f.read().decode(errors="replace")
    assert ended, f"vaultfs mount -f neither mounted nor exited within {timeout}s"
    assert not mounted, f"a damaged or missing database was mounted: {err}"
    assert proc.returncode != 0, f"refused, but exit status {proc.returncode}: {err}"
    v.check_log(err)
    return err


# -- a full disk ----------------------------------------------------------------

def test_disk_full_fails_at_close_with_enospc_and_keeps_old_value(small_fs, vault_factory):
    fsdir = small_fs("tmpfs", 4)
    v = vault_factory(mount=False)
    move_db(v, fsdir)
    v.mount()
    os.mkdir(v.path("app"))
    write_file(v.path("app", "K"), OLD)
    filler = fill(fsdir)
    big = os.urandom(300 * 1024).hex().encode()      # 600 KiB: the WAL must grow
    e = write_errno(v.path("app", "K"), big)
    assert e == errno.ENOSPC, f"close() on a full disk: expected ENOSPC, got {errname(e)}"
    assert read_file(v.path("app", "K")) == OLD, "a failed write keeps the old value"
    assert v.get("app", "K") == OLD
    # Other changes while the disk is full fail cleanly or succeed; nothing crashes.
    for op in (lambda: write_file(v.path("app", "NEW"), big),
               lambda: os.mkdir(v.path("inst2")),
               lambda: os.chmod(v.path("app", "K"), 0o640)):
        e = oserror(op)
        assert e in (None, errno.ENOSPC), f"on a full disk: {errname(e)}"
    assert os.listdir(v.path("app")) in (["K"], ["K", "NEW"], ["NEW", "K"])
    # Space comes back: the handle that failed did not commit later behind the
    # caller's back, and new writes work.
    os.unlink(filler)
    assert read_file(v.path("app", "K")) == OLD
    write_file(v.path("app", "K"), big)
    assert read_file(v.path("app", "K")) == big
    assert v.get("app", "K") == big
    v.unmount()
    assert integrity_check(v.db) == ["ok"]
    assert "No space left on device" in v.log(), "the daemon logs why the commit failed"


# -- the database file taken away or made read-only -------------------------------

def test_database_immutable_under_mount_gives_erofs_then_recovers(small_fs, vault_factory):
    fsdir = small_fs("ext4", 16)
    v = vault_factory(mount=False)
    move_db(v, fsdir)
    v.mount()
    os.mkdir(v.path("app"))
    write_file(v.path("app", "K"), OLD)
    files = [v.db, v.db + "-wal"]
    r = subprocess.run(["chattr", "+i"] + files, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert r.returncode == 0, r.stdout
    try:
        e = write_errno(v.path("app", "K"), b"new-value")
        assert e == errno.EROFS, f"database may not be written: expected EROFS, got {errname(e)}"
        assert read_file(v.path("app", "K")) == OLD
        assert v.get("app", "K") == OLD, "the CLI still reads a read-only vault"
        r = v.cli("set", "app", "K", input=b"cli-value")
        assert r.returncode != 0
        assert r.stderr.decode().startswith("vaultfs: "), r.stderr
        assert b"nothing was changed" in r.stderr, r.stderr
        assert v.proc.poll() is None, "the daemon survives"
    finally:
        subprocess.run(["chattr", "-i"] + files)
    write_file(v.path("app", "K"), b"new-value")
    assert read_file(v.path("app", "K")) == b"new-value"
    assert v.get("app", "K") == b"new-value"
    v.unmount()
    assert integrity_check(v.db) == ["ok"]


def test_database_renamed_away_refuses_writes_until_it_is_back(vault):
    v = vault
    os.mkdir(v.path("app"))
    write_file(v.path("app", "K"), OLD)
    os.rename(v.db, v.db + ".away")
    try:
        e = write_errno(v.path("app", "K"), b"lost-if-accepted")
        assert e == errno.EROFS, f"a write to a moved database: expected EROFS, got {errname(e)}"
        assert oserror(os.mkdir, v.path("other")) == errno.EROFS
        assert read_file(v.path("app", "K")) == OLD, "reads go on"
    finally:
        os.rename(v.db + ".away", v.db)
    write_file(v.path("app", "K"), b"after")
    assert read_file(v.path("app", "K")) == b"after"
    assert v.get("app", "K") == b"after", "the write reached the file on disk"
    assert "was removed or replaced" in v.log()


def test_database_removed_under_mount(vault):
    v = vault
    os.mkdir(v.path("app"))
    write_file(v.path("app", "K"), OLD)
    for f in v.db_files():
        if os.path.exists(f):
            os.unlink(f)
    e = write_errno(v.path("app", "K"), b"would-vanish")
    assert e == errno.EROFS, f"a write to a deleted database: expected EROFS, got {errname(e)}"
    assert oserror(os.unlink, v.path("app", "K")) == errno.EROFS
    assert read_file(v.path("app", "K")) == OLD
    r = v.cli("get", "app", "K")
    assert r.returncode != 0 and b"no such vault" in r.stderr, r.stderr
    v.unmount()     # exits 0, clean log
    err = mount_refused(v)
    assert "no such vault" in err, err


# -- damaged database files --------------------------------------------------------

def damaged_variants(data, page=4096):
    """(name, bytes) of ways a database file gets damaged."""
    n = len(data)
    out = [("empty", b""), ("one byte", data[:1]), ("header only", data[:100]),
           ("half a page", data[:page // 2]), ("text", b"not a database\n" * 300),
           ("zeros", b"\0" * n), ("random", os.urandom(n)),
           ("header zeroed", b"\0" * 100 + data[100:]),
           ("header garbage", os.urandom(100) + data[100:])]
    # The schema version SQLite keeps at offset 60: never negative, not from
    # the future, and not older than the tables it describes.
    cur = int.from_bytes(data[60:64], "big", signed=True)
    for ver in (-1, -(1 << 31), cur - 1, cur + 1, (1 << 31) - 1):
        out.append((f"user_version {ver}", data[:60] + ver.to_bytes(4, "big", signed=True) +
                    data[64:]))
    for cut in range(page, n, page):
        out.append((f"truncated at {cut}", data[:cut]))
    for cut in (n // 3 + 17, n - 1):
        out.append((f"truncated at {cut}", data[:cut]))
    for pg in range(1, n // page):
        out.append((f"page {pg} random", data[:pg * page] + os.urandom(page) +
                    data[(pg + 1) * page:]))
    return out


def test_damaged_database_refused_at_mount(vault_factory):
    v = vault_factory(mount=False)
    values = {f"K{i}": os.urandom(1500).hex().encode() for i in range(24)}
    for k, val in values.items():
        v.set("app", k, val)
    with open(v.db, "rb") as f:
        good = f.read()
    assert not os.path.exists(v.db + "-wal") or os.path.getsize(v.db + "-wal") == 0
    tried = 0
    for name, data in damaged_variants(good):
        with open(v.db, "wb") as f:
            f.write(data)
        for suffix in ("-wal", "-shm"):
            if os.path.exists(v.db + suffix):
                os.unlink(v.db + suffix)
        err = mount_refused(v)
        assert err.startswith("vaultfs: ") and v.db in err, f"{name}: {err}"
        assert any(w in err for w in ("damaged", "not a vaultfs database",
                                      "not an initialized vault", "newer than this vaultfs")), \
            f"{name}: {err}"
        assert "\n" not in err.strip(), f"{name}: one line, please: {err}"
        # The CLI may still read what is intact, but never returns wrong bytes.
        for k in ("K0", "K23"):
            r = v.cli("get", "app", k)
            assert r.returncode != 0 or r.stdout == values[k], f"{name}: {k} read back wrong"
            v.check_log(r.stderr.decode(errors="replace"))
        tried += 1
    report("damaged-db", variants=tried)


# -- the daemon stopped with files open ---------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_stop_with_a_value_half_written_keeps_old_value(vault, sig):
    """A signal stops the daemon while a writer is between write() and
    close(): the half-written value is not committed, its locked buffer is
    freed (an ASan build would report a leak), and the daemon exits 0."""
    v = vault
    os.mkdir(v.path("app"))
    write_file(v.path("app", "K"), OLD)
    fd = os.open(v.path("app", "K"), os.O_WRONLY | os.O_TRUNC)
    os.write(fd, b"half-of-a-new")
    fd2 = os.open(v.path("app", "K"), os.O_RDONLY)     # a reader, too
    proc, v.proc = v.proc, None
    try:
        rc = stop_process(proc, sig)
        assert rc == 0, f"exit status after {sig.name}: {rc}; log:\n{v.log()}"
        assert wait_for(lambda: not os.path.ismount(v.mnt), EXIT_TIMEOUT)
        v.check_log(v.log())
    finally:
        e = oserror(os.close, fd)
        oserror(os.close, fd2)
    assert e is not None, "close() after the daemon stopped cannot report success"
    v.mount()
    assert read_file(v.path("app", "K")) == OLD
