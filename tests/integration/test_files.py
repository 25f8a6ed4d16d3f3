"""Everyday file operations on a mounted vault, with ordinary tools and syscalls."""
import errno
import os
import stat
import subprocess
import time

from conftest import errname, oserror, read_file, sh, write_file

PEM = (
    "-----BEGIN PRIVATE KEY-----\n"
    "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj\n"
    "MzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6dVMvDuictGeurT8jNbvJZHtCSuYEvu\n"
    "NMoSfm76oqFvAp8Gy0iz5sxjZmSnXyCdPEovGhLa0VzMaQ8s+CLOyS56YyCFGeJZ\n"
    "-----END PRIVATE KEY-----\n"
)


def mkinst(v, name="app"):
    os.mkdir(v.path(name))
    return v.path(name)


def test_echo_cat_roundtrip(vault):
    d = mkinst(vault)
    r = sh(f"echo sk-live-123 > {d}/API_KEY && cat {d}/API_KEY")
    assert r.returncode == 0, r.stderr
    # The user sees exactly the value, without the newline echo added.
    assert r.stdout == b"sk-live-123"
    assert os.listdir(d) == ["API_KEY"]


def test_printf_exact_bytes(vault):
    d = mkinst(vault)
    r = sh(f"printf 'abc' > {d}/K")
    assert r.returncode == 0, r.stderr
    assert read_file(f"{d}/K") == b"abc"
    assert os.stat(f"{d}/K").st_size == 3


def test_append_with_echo(vault):
    d = mkinst(vault)
    r = sh(f"echo a > {d}/K; echo b >> {d}/K")
    assert r.returncode == 0, r.stderr
    # Appending turns a single-line value into a multi-line one, kept as written.
    assert read_file(f"{d}/K") == b"a\nb\n"


def test_o_append_syscall(vault):
    d = mkinst(vault)
    write_file(f"{d}/K", b"one")
    fd = os.open(f"{d}/K", os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, b"-two")
    finally:
        os.close(fd)
    assert read_file(f"{d}/K") == b"one-two"


def test_write_at_offset(vault):
    d = mkinst(vault)
    write_file(f"{d}/K", b"abcdef")
    fd = os.open(f"{d}/K", os.O_RDWR)
    try:
        assert os.pwrite(fd, b"XY", 2) == 2
        assert os.pread(fd, 100, 0) == b"abXYef", "a handle reads its own pending write"
    finally:
        os.close(fd)
    assert read_file(f"{d}/K") == b"abXYef"
    # Writing past the end leaves a hole of zero bytes.
    fd = os.open(f"{d}/K", os.O_WRONLY)
    try:
        os.pwrite(fd, b"Z", 8)
    finally:
        os.close(fd)
    assert read_file(f"{d}/K") == b"abXYef\0\0Z"


def test_read_at_offset_and_in_small_chunks(vault):
    d = mkinst(vault)
    value = bytes(range(256)) * 40  # 10 KiB, binary
    write_file(f"{d}/BIN", value)
    fd = os.open(f"{d}/BIN", os.O_RDONLY)
    try:
        assert os.pread(fd, 10, 1000) == value[1000:1010]
        assert os.pread(fd, 100, len(value) - 5) == value[-5:]
        assert os.pread(fd, 100, len(value) + 10) == b""
        chunks = []
        while True:
            c = os.read(fd, 333)
            if not c:
                break
            chunks.append(c)
    finally:
        os.close(fd)
    assert b"".join(chunks) == value


def test_cp_in_and_out(vault, tmp_path):
    d = mkinst(vault)
    src = tmp_path / "token.txt"
    src.write_bytes(b"line1\nline2\n\x00\xff binary tail")
    r = sh(f"cp {src} {d}/TOKEN && cp {d}/TOKEN {tmp_path}/out && cmp {src} {tmp_path}/out")
    assert r.returncode == 0, (r.stdout + r.stderr).decode()
    assert read_file(f"{d}/TOKEN") == src.read_bytes()


def test_pem_roundtrip_byte_for_byte(vault, tmp_path):
    d = mkinst(vault)
    pem = tmp_path / "key.pem"
    pem.write_text(PEM)
    r = sh(f"cp {pem} {d}/TLS_KEY && cmp {pem} {d}/TLS_KEY")
    assert r.returncode == 0, "a PEM file must come back byte for byte: " + \
        (r.stdout + r.stderr).decode()
    assert os.stat(f"{d}/TLS_KEY").st_size == len(PEM)
    assert vault.get("app", "TLS_KEY") == PEM.encode()


def test_tee_and_overwrite_shorter(vault):
    d = mkinst(vault)
    r = sh(f"printf 'a-long-old-value' | tee {d}/K >/dev/null && printf 'new' > {d}/K")
    assert r.returncode == 0, r.stderr
    # `>` truncates: no tail of the old value survives.
    assert read_file(f"{d}/K") == b"new"


def test_mv_over_existing_key_is_atomic_replace(vault):
    d = mkinst(vault)
    write_file(f"{d}/OLD", b"old-value")
    write_file(f"{d}/NEW.tmp", b"new-value")
    r = sh(f"mv {d}/NEW.tmp {d}/OLD")
    assert r.returncode == 0, r.stderr
    assert read_file(f"{d}/OLD") == b"new-value"
    assert not os.path.exists(f"{d}/NEW.tmp"), "the source name must disappear"
    assert sorted(os.listdir(d)) == ["OLD"]
    assert vault.get("app", "OLD") == b"new-value"
    assert vault.cli("get", "app", "NEW.tmp").returncode != 0


def test_rename_to_new_name(vault):
    d = mkinst(vault)
    write_file(f"{d}/A", b"value-a")
    os.rename(f"{d}/A", f"{d}/B")
    assert sorted(os.listdir(d)) == ["B"]
    assert read_file(f"{d}/B") == b"value-a"
    # The value is bound to its name: it must still decrypt after the rename,
    # also after a remount (nothing served from a cache).
    vault.remount()
    assert read_file(f"{d}/B") == b"value-a"


def test_rename_editor_style_temp_file(vault):
    """vim/sed -i style: write a temp file, fsync, rename it over the key."""
    d = mkinst(vault)
    write_file(f"{d}/CONF", b"v1")
    fd = os.open(f"{d}/.CONF.swp", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, b"v2")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(f"{d}/.CONF.swp", f"{d}/CONF")
    assert read_file(f"{d}/CONF") == b"v2"
    assert sorted(os.listdir(d)) == ["CONF"]
    r = sh(f"sed -i 's/v2/v3/' {d}/CONF")
    assert r.returncode == 0, r.stderr
    assert read_file(f"{d}/CONF") == b"v3"
    assert sorted(os.listdir(d)) == ["CONF"]


def test_rename_across_instances_refused(vault):
    a = mkinst(vault, "a")
    b = mkinst(vault, "b")
    write_file(f"{a}/K", b"va")
    e = oserror(os.rename, f"{a}/K", f"{b}/K")
    assert e is not None, "rename across instances must be refused (mv then copies)"
    assert read_file(f"{a}/K") == b"va"
    assert not os.path.exists(f"{b}/K")


def test_redirect_without_output_empties_key(vault):
    d = mkinst(vault)
    write_file(f"{d}/K", b"old")
    r = sh(f": > {d}/K; cat {d}/K")
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"", "`: > key` empties the key, visible right away"
    assert read_file(f"{d}/K") == b""
    assert vault.get("app", "K") == b""
    # open(O_TRUNC) and close without a write: the same, and committed by the
    # time close() returns (FUSE sends RELEASE after close() has returned, so
    # a commit left to release races with the next reader: repeat to catch it).
    for i in range(200):
        write_file(f"{d}/K", b"old")
        os.close(os.open(f"{d}/K", os.O_WRONLY | os.O_TRUNC))
        got = read_file(f"{d}/K")
        assert got == b"", f"round {i}: read {got!r} after open(O_TRUNC)+close returned"
    assert os.stat(f"{d}/K").st_size == 0


def test_redirect_failed_write_puts_back_old_value(vault):
    """`cmd > key`: the shell opens with O_TRUNC, dup2()s and closes the first
    descriptor before cmd writes. Readers keep reading the old value (the
    empty one is never shown); if cmd's writes then fail, nothing is
    committed: a failed rotation loses nothing."""
    d = mkinst(vault)
    write_file(f"{d}/K", b"old")
    fd = os.open(f"{d}/K", os.O_WRONLY | os.O_TRUNC)
    fd2 = os.dup(fd)
    os.close(fd)
    assert read_file(f"{d}/K") == b"old", "the first close commits nothing"
    assert os.stat(f"{d}/K").st_size == 3, "and stat shows the old size"
    e = oserror(os.pwrite, fd2, b"x", 2 * 1024 * 1024)
    assert e == errno.EFBIG, errname(e)
    e = oserror(os.close, fd2)
    assert e == errno.EFBIG, f"close() reports the failed write: {errname(e)}"
    assert read_file(f"{d}/K") == b"old", "the value from before the redirect is back"
    assert vault.get("app", "K") == b"old"


def test_redirect_rotates_value(vault):
    d = mkinst(vault)
    write_file(f"{d}/K", b"old")
    fd = os.open(f"{d}/K", os.O_WRONLY | os.O_TRUNC)
    fd2 = os.dup(fd)
    os.close(fd)
    os.write(fd2, b"new\n")
    os.close(fd2)
    assert read_file(f"{d}/K") == b"new"


def test_truncate(vault):
    d = mkinst(vault)
    write_file(f"{d}/K", b"abcdef")
    r = sh(f"truncate -s 3 {d}/K")
    assert r.returncode == 0, r.stderr
    assert read_file(f"{d}/K") == b"abc"
    assert os.stat(f"{d}/K").st_size == 3
    os.truncate(f"{d}/K", 5)
    assert read_file(f"{d}/K") == b"abc\0\0"
    r = sh(f"truncate -s 0 {d}/K")
    assert r.returncode == 0, r.stderr
    assert read_file(f"{d}/K") == b""
    assert os.stat(f"{d}/K").st_size == 0
    assert vault.get("app", "K") == b""


def test_ftruncate_on_open_handle(vault):
    d = mkinst(vault)
    write_file(f"{d}/K", b"0123456789")
    fd = os.open(f"{d}/K", os.O_RDWR)
    try:
        os.ftruncate(fd, 4)
        assert os.pread(fd, 100, 0) == b"0123"
    finally:
        os.close(fd)
    assert read_file(f"{d}/K") == b"0123"


def test_fsync_commits_before_close(vault):
    d = mkinst(vault)
    fd = os.open(f"{d}/K", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, b"committed-by-fsync")
        os.fsync(fd)
        # The CLI reads the database: it sees the value while the file is open.
        assert vault.get("app", "K") == b"committed-by-fsync"
    finally:
        os.close(fd)


def test_rm(vault):
    d = mkinst(vault)
    write_file(f"{d}/K", b"v")
    r = sh(f"rm {d}/K")
    assert r.returncode == 0, r.stderr
    assert os.listdir(d) == []
    assert oserror(os.stat, f"{d}/K") == errno.ENOENT
    assert vault.cli("get", "app", "K").returncode != 0, "the row must be deleted"
    assert oserror(os.unlink, f"{d}/K") == errno.ENOENT
    r = sh(f"rm {d}/K")
    assert r.returncode != 0


def test_read_missing_key_enoent(vault):
    d = mkinst(vault)
    assert oserror(open, f"{d}/NOPE", "rb") == errno.ENOENT


def test_mkdir_rmdir_instances(vault):
    os.mkdir(vault.path("inst1"))
    os.mkdir(vault.path("inst2"))
    assert sorted(os.listdir(vault.mnt)) == ["inst1", "inst2"]
    st = os.stat(vault.path("inst1"))
    assert stat.S_ISDIR(st.st_mode)
    assert st.st_uid == 0, "mkdir makes an instance owned by the caller"
    assert oserror(os.mkdir, vault.path("inst1")) == errno.EEXIST
    r = vault.cli("ls")
    assert r.returncode == 0, r.stderr
    assert {"inst1", "inst2"} <= set(r.stdout.decode().split())
    # Non-empty: refused and kept.
    write_file(vault.path("inst1", "K"), b"v")
    assert oserror(os.rmdir, vault.path("inst1")) == errno.ENOTEMPTY
    assert read_file(vault.path("inst1", "K")) == b"v"
    os.rmdir(vault.path("inst2"))
    assert sorted(os.listdir(vault.mnt)) == ["inst1"]
    assert oserror(os.rmdir, vault.path("inst2")) == errno.ENOENT
    os.unlink(vault.path("inst1", "K"))
    os.rmdir(vault.path("inst1"))
    assert os.listdir(vault.mnt) == []


def test_layout_is_two_levels(vault):
    d = mkinst(vault)
    e = oserror(os.mkdir, f"{d}/sub")
    assert e is not None, "no directories inside an instance"
    assert os.listdir(d) == []
    e = oserror(write_file, vault.path("FILE_AT_ROOT"), b"v")
    assert e is not None, "no secrets at the root, only instances"
    assert os.listdir(vault.mnt) == ["app"]


def test_ls_l_shows_regular_files(vault):
    d = mkinst(vault)
    for k in ("A", "B", "C"):
        write_file(f"{d}/{k}", k.lower() * 3)
    assert sorted(os.listdir(d)) == ["A", "B", "C"]
    for k in ("A", "B", "C"):
        st = os.lstat(f"{d}/{k}")
        assert stat.S_ISREG(st.st_mode)
        assert st.st_size == 3
    r = sh(f"ls -l {d}")
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().count("-rw-------") == 3, r.stdout.decode()


def test_stat_owner_mode_size_mtime(vault):
    d = mkinst(vault)
    os.chown(d, 0, 4242)
    before = time.time_ns()
    r = sh(f"echo hello > {d}/K")
    assert r.returncode == 0, r.stderr
    st = os.stat(f"{d}/K")
    assert stat.S_IMODE(st.st_mode) == 0o600, "echo x > k gives 0600 by default"
    assert st.st_uid == 0, "owner is the caller"
    assert st.st_gid == 4242, "group is the instance directory's group"
    assert st.st_size == 5, "size is the plaintext length (trailing newline dropped)"
    assert before - 2_000_000_000 <= st.st_mtime_ns <= time.time_ns() + 2_000_000_000
    m1 = st.st_mtime_ns

    time.sleep(0.05)
    read_file(f"{d}/K")
    assert os.stat(f"{d}/K").st_mtime_ns == m1, "reading does not change mtime"

    time.sleep(0.05)
    write_file(f"{d}/K", b"a-longer-value")
    st2 = os.stat(f"{d}/K")
    assert st2.st_mtime_ns > m1, "a new value changes mtime"
    assert st2.st_size == 14


def test_chmod_chown_persist_across_remount(vault):
    d = mkinst(vault)
    write_file(f"{d}/K", b"v")
    os.chmod(f"{d}/K", 0o640)
    os.chown(f"{d}/K", 1234, 5678)
    os.chmod(d, 0o710)
    os.chown(d, 2345, 6789)
    st = os.stat(f"{d}/K")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o640, 1234, 5678)
    vault.remount()
    st = os.stat(f"{d}/K")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o640, 1234, 5678), \
        "chmod/chown of a secret must survive a remount"
    st = os.stat(d)
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o710, 2345, 6789), \
        "chmod/chown of an instance must survive a remount"
    assert read_file(f"{d}/K") == b"v"


def test_chown_keeps_value_and_partial_chown(vault):
    d = mkinst(vault)
    write_file(f"{d}/K", b"v")
    os.chown(f"{d}/K", 1234, -1)
    st = os.stat(f"{d}/K")
    assert st.st_uid == 1234 and st.st_gid == os.stat(d).st_gid
    os.chown(f"{d}/K", -1, 777)
    st = os.stat(f"{d}/K")
    assert (st.st_uid, st.st_gid) == (1234, 777)
    assert read_file(f"{d}/K") == b"v"


def test_values_survive_remount(vault):
    d = mkinst(vault)
    write_file(f"{d}/K", b"durable")
    vault.remount()
    assert os.listdir(vault.mnt) == ["app"]
    assert read_file(f"{d}/K") == b"durable"


def test_statfs(vault):
    st = os.statvfs(vault.mnt)
    assert st.f_bsize > 0
    assert st.f_namemax in (0, 255)
    r = subprocess.run(["df", vault.mnt], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert r.returncode == 0, r.stderr
    assert vault.mnt in r.stdout.decode()


def test_many_keys_listed(vault):
    d = mkinst(vault)
    names = [f"KEY_{i:03d}" for i in range(150)]
    for n in names:
        write_file(f"{d}/{n}", n)
    assert sorted(os.listdir(d)) == names, "readdir must list every key, across pages"
    assert read_file(f"{d}/KEY_149") == b"KEY_149"


def test_open_excl_on_existing_fails(vault):
    d = mkinst(vault)
    write_file(f"{d}/K", b"v")
    e = oserror(os.open, f"{d}/K", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    assert e == errno.EEXIST, errname(e)
    assert read_file(f"{d}/K") == b"v"


def test_empty_file_created_by_touch(vault):
    d = mkinst(vault)
    r = sh(f"touch {d}/EMPTY")
    assert r.returncode == 0, r.stderr
    assert os.listdir(d) == ["EMPTY"]
    assert os.stat(f"{d}/EMPTY").st_size == 0
    assert read_file(f"{d}/EMPTY") == b""


def test_two_writers_last_close_wins_whole(vault):
    d = mkinst(vault)
    write_file(f"{d}/K", b"orig")
    fd1 = os.open(f"{d}/K", os.O_WRONLY | os.O_TRUNC)
    fd2 = os.open(f"{d}/K", os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(fd1, b"AAAAAAAA")
        os.write(fd2, b"BB")
    finally:
        os.close(fd1)
        assert read_file(f"{d}/K") == b"AAAAAAAA"
        os.close(fd2)
    # Each close commits its handle's whole value: never "BBAAAAAA".
    assert read_file(f"{d}/K") == b"BB"


def test_write_to_key_renamed_while_open(vault):
    d = mkinst(vault)
    write_file(f"{d}/K", b"v1")
    fd = os.open(f"{d}/K", os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(fd, b"v2")
        os.rename(f"{d}/K", f"{d}/K2")
    finally:
        os.close(fd)
    # The value follows the key to its new name, and still decrypts there.
    assert sorted(os.listdir(d)) == ["K2"]
    assert read_file(f"{d}/K2") == b"v2"
    assert vault.get("app", "K2") == b"v2"


def test_write_to_key_deleted_while_open(vault):
    d = mkinst(vault)
    write_file(f"{d}/K", b"v1")
    fd = os.open(f"{d}/K", os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(fd, b"v2")
        r = vault.cli("rm", "app", "K")
        assert r.returncode == 0, r.stderr
    finally:
        try:
            os.close(fd)  # like a write to an unlinked file: may succeed
        except OSError:
            pass
    assert os.listdir(d) == [], "a deleted key must not come back from an open handle"
    assert vault.cli("get", "app", "K").returncode != 0


def test_read_handle_survives_unlink(vault):
    d = mkinst(vault)
    write_file(f"{d}/K", b"still-readable")
    with open(f"{d}/K", "rb", buffering=0) as f:
        os.unlink(f"{d}/K")
        assert f.read() == b"still-readable"
    assert os.listdir(d) == []


def test_links_and_special_files_refused(vault):
    d = mkinst(vault)
    write_file(f"{d}/K", b"v")
    assert oserror(os.link, f"{d}/K", f"{d}/K2") is not None, "no hard links"
    assert oserror(os.symlink, "/etc/passwd", f"{d}/L") is not None, "no symlinks"
    assert oserror(os.mkfifo, f"{d}/F") is not None, "no fifos"
    assert sorted(os.listdir(d)) == ["K"]


def test_read_only_open_with_truncation_refused(vault):
    """open(O_RDONLY|O_TRUNC) empties the file on Linux filesystems; here the
    caller, though allowed to write, gets EINVAL and the value stays."""
    d = mkinst(vault)
    write_file(f"{d}/K", b"keep-me")
    e = oserror(os.open, f"{d}/K", os.O_RDONLY | os.O_TRUNC)
    assert e == errno.EINVAL, errname(e)
    assert read_file(f"{d}/K") == b"keep-me"
    assert os.stat(f"{d}/K").st_size == 7


def test_new_key_appears_with_its_first_value(vault):
    """Between a creating open and its writer's close, other processes find
    no key (never an empty one); the creator itself can use it."""
    d = mkinst(vault)
    fd = os.open(f"{d}/NEW", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        r = sh(f"cat {d}/NEW")
        assert r.returncode == 1 and b"No such file or directory" in r.stderr, r
        os.write(fd, b"first")
        r = sh(f"cat {d}/NEW")
        assert r.returncode == 1, "nothing is visible before the creator's close"
    finally:
        os.close(fd)
    r = sh(f"cat {d}/NEW")
    assert r.returncode == 0 and r.stdout == b"first", r
    # a key created empty on purpose (touch) is there once touch returns
    r = sh(f"touch {d}/EMPTY && cat {d}/EMPTY && echo ok")
    assert r.returncode == 0 and r.stdout == b"ok\n", r


def test_shell_rotation_keeps_old_value_until_command_writes(vault):
    """`slow > key`: while the command runs, before and after its first
    write, others read the old value whole and stat shows its size."""
    d = mkinst(vault)
    write_file(f"{d}/K", b"old-value")
    p = subprocess.Popen(["sh", "-c", 'read go; printf new-value-1; read go; '
                          'printf -- -more', "sh"], stdin=subprocess.PIPE,
                         stdout=open(f"{d}/K", "wb"))
    try:
        assert sh(f"cat {d}/K").stdout == b"old-value"
        assert os.stat(f"{d}/K").st_size == 9
        p.stdin.write(b"go\n")
        p.stdin.flush()
        assert sh(f"cat {d}/K").stdout == b"old-value"
        p.stdin.write(b"go\n")
        p.stdin.close()
        assert p.wait(20) == 0
    finally:
        p.kill()
    assert sh(f"cat {d}/K").stdout == b"new-value-1-more"
    assert os.stat(f"{d}/K").st_size == 16


def test_two_writers_creating_one_key_both_succeed(vault):
    """Two processes run `cmd > NEW` at once: the second opens the key the
    first is creating, instead of being told it does not exist."""
    d = mkinst(vault)
    fd = os.open(f"{d}/NEW", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        r = sh(f"printf second > {d}/NEW && echo ok")
        assert r.returncode == 0 and r.stdout == b"ok\n", r
    finally:
        os.close(fd)
    assert read_file(f"{d}/NEW") == b"second"
