"""What the performance work relies on, checked for correctness: readers
that skip FLUSH, values served from reused locked buffers, reads beside
writes, and the answers that let ls -l stop asking for attributes we don't
have. (How fast is measured by `make bench`, never here.)"""
import errno
import os
import threading

from conftest import oserror, read_file, run, sh, write_file


def mkinst(vault, name="app"):
    os.mkdir(vault.path(name))
    return vault.path(name)


def test_other_xattr_namespaces_are_not_supported(vault):
    d = mkinst(vault)
    write_file(f"{d}/K", b"v")
    for p in (f"{d}/K", d, vault.mnt):
        for name in ("security.selinux", "system.posix_acl_access", "trusted.x"):
            assert oserror(os.getxattr, p, name) == errno.ENOTSUP, (p, name)
    # user.* is ours: a missing one is ENODATA, not ENOTSUP.
    assert oserror(os.getxattr, f"{d}/K", "user.description") == errno.ENODATA


def test_ls_l_lists_every_key_with_its_attributes(vault):
    d = mkinst(vault)
    for i in range(300):
        write_file(f"{d}/K{i:03d}", b"x" * (i % 7 + 1))
    os.chmod(f"{d}/K007", 0o400)
    r = run(["ls", "-l", d], env={"LC_ALL": "C", "PATH": os.environ["PATH"]})
    assert r.returncode == 0, r.stderr
    lines = r.stdout.decode().splitlines()[1:]
    assert len(lines) == 300
    by_name = {line.split()[-1]: line.split() for line in lines}
    assert by_name["K007"][0] == "-r--------"
    assert by_name["K012"][4] == str(12 % 7 + 1)
    # Listed again, in pages and in full: the same names.
    assert sorted(os.listdir(d)) == sorted(by_name)


def test_reused_buffers_never_show_another_value(vault):
    d = mkinst(vault)
    values = {f"K{i}": (b"%d-" % i) * (i + 1) for i in range(40)}
    for k, v in values.items():
        write_file(f"{d}/{k}", v)
    for _ in range(3):
        for k, v in values.items():
            assert read_file(f"{d}/{k}") == v, k
    # A shorter value after a longer one in the same buffer: no stale tail.
    write_file(f"{d}/K39", b"s")
    assert read_file(f"{d}/K39") == b"s"
    assert read_file(f"{d}/K38") == values["K38"]


def test_many_readers_and_a_writer(vault):
    d = mkinst(vault)
    write_file(f"{d}/K", b"v0")
    seen, errors = set(), []
    stop = threading.Event()

    def reader():
        try:
            while not stop.is_set():
                v = read_file(f"{d}/K")
                if v not in {b"v%d" % i for i in range(51)}:
                    errors.append(v)
                seen.add(v)
        except OSError as e:
            errors.append(e)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    for i in range(1, 51):
        write_file(f"{d}/K", b"v%d" % i)
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    assert read_file(f"{d}/K") == b"v50", "the last commit is what the next open reads"
    assert vault.get("app", "K") == b"v50"


def test_read_only_open_then_close_commits_nothing(vault):
    d = mkinst(vault)
    write_file(f"{d}/K", b"keep")
    version = os.getxattr(f"{d}/K", "user.vaultfs.version")
    for _ in range(20):
        fd = os.open(f"{d}/K", os.O_RDONLY)
        assert os.read(fd, 100) == b"keep"
        os.close(fd)
    r = sh(f"cat {d}/K {d}/K > /dev/null")
    assert r.returncode == 0
    assert os.getxattr(f"{d}/K", "user.vaultfs.version") == version, \
        "a reader's close must not commit a new version"
    assert vault.get("app", "K") == b"keep"
