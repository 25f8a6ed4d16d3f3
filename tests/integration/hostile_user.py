"""What an unprivileged user can throw at a mounted vault. Run as that user
by test_torture_hostile.py:

    python3 hostile_user.py PHASE DIR [N]

and prints one JSON object: for each operation tried, "OK" or the errno
name it failed with. It asserts nothing; the test judges the results.
"""
import ctypes
import errno
import json
import os
import resource
import sys

libc = ctypes.CDLL(None, use_errno=True)
results = {}


def name_of(e):
    return errno.errorcode.get(e, str(e))


def record(label, fn, *args):
    try:
        out = fn(*args)
        results[label] = "OK"
        return out
    except OSError as e:
        results[label] = name_of(e.errno)
    except ValueError:              # embedded NUL: Python refuses before the kernel
        results[label] = "ValueError"
    return None


def raw_open(path, flags, mode=0o600):
    """open(2) with the bytes exactly as given (a NUL ends the name there)."""
    fd = libc.open(ctypes.c_char_p(path), flags, mode)
    if fd < 0:
        raise OSError(ctypes.get_errno(), "open")
    return fd


def create(path):
    fd = raw_open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        os.write(fd, b"v")
    finally:
        os.close(fd)


HOSTILE_NAMES = (
    [b"", b"/", b".", b"..", b"...", b"a" * 255, b"a" * 256, b"a" * 1024, b"a" * 1025,
     b"a" * 4096, b"K\x00evil", b"\x00", b"a/b", b"a//b", b"./K", b"../K", b" ", b"K ",
     b" K", b"-rf", b"--help", b"*", b"?", b"$(id)", b"`id`", b"%s%n%x", b"%n" * 100,
     b"\\", b"K;rm", b"K|x", b"K'", b'K"', b"K\n", b"K\r\n", b"\x1b[31mred",
     b"\xff", b"\xfe\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80",
     b"\xc0\xaf", b"\xc3\xbc", b"\xe2\x80\x8b", b"K\xff", b"\xef\xbb\xbfK"]
    + [bytes([c]) for c in range(1, 32)] + [b"K" + bytes([c]) for c in (1, 9, 10, 31, 127)]
    + [b"\x7f", b"\x80", b"\xa0"]
)


def phase_names(d, top):
    """Every hostile name through every call that takes a name."""
    d = d.encode()
    ok = os.path.join(d, b"OK_SOURCE")
    if not top:
        create(ok)
    for i, n in enumerate(HOSTILE_NAMES):
        p = d + b"/" + n
        tag = f"{i}:{n[:40]!r}"
        if top:
            record(f"mkdir {tag}", os.mkdir, p)
            record(f"rmdir {tag}", os.rmdir, p)
            continue
        record(f"create {tag}", create, p)
        record(f"open-rdonly {tag}", lambda q: os.close(raw_open(q, os.O_RDONLY)), p)
        record(f"stat {tag}", os.lstat, p)
        record(f"rename-to {tag}", os.rename, ok, p)
        if results[f"rename-to {tag}"] == "OK":
            os.rename(p, ok)
        record(f"mkdir {tag}", os.mkdir, p)
        record(f"symlink {tag}", os.symlink, b"target", p)
        record(f"mknod {tag}", os.mknod, p)
        record(f"link {tag}", os.link, ok, p)
        record(f"setxattr {tag}", os.setxattr, p, "user.x", b"v")
        record(f"unlink {tag}", os.unlink, p)
    results["listing"] = sorted(x.decode(errors="backslashreplace") for x in os.listdir(d))


MAX = 1024 * 1024


def pwrite_at(path, data, off):
    """One pwrite() on a fresh descriptor, then close(): the first error."""
    fd = os.open(path, os.O_WRONLY)
    failed = None
    try:
        os.pwrite(fd, data, off)
    except OSError as e:
        failed = e
    try:
        os.close(fd)
    except OSError as e:
        failed = failed or e
    if failed:
        raise failed


def phase_sizes(d):
    """Writes, truncates and reads at sizes and offsets far past the limit.
    Each starts from the value b"intact"; "<op> value" tells what the key
    held afterwards."""
    k = os.path.join(d, "K")

    def reset():
        with open(k, "wb") as f:
            f.write(b"intact")

    def appends():
        fd = os.open(k, os.O_WRONLY | os.O_APPEND)
        try:
            for _ in range(300):
                os.write(fd, b"z" * 4096)
        finally:
            os.close(fd)

    def ftrunc(size):
        fd = os.open(k, os.O_RDWR)
        try:
            os.ftruncate(fd, size)
        finally:
            os.close(fd)

    ops = []
    for off in (MAX, MAX + 1, 1 << 31, 1 << 32, 1 << 40, 1 << 62, (1 << 63) - 2,
                (1 << 63) - 1, -1):
        ops.append((f"pwrite 1 byte at {off}", lambda o=off: pwrite_at(k, b"x", o)))
    for off in (MAX, 1 << 40, (1 << 63) - 1):
        ops.append((f"pwrite 0 bytes at {off}", lambda o=off: pwrite_at(k, b"", o)))
    ops.append(("write 2 MiB at once", lambda: pwrite_at(k, b"y" * (2 * MAX), 0)))
    ops.append(("write MAX+1 at once", lambda: pwrite_at(k, b"y" * (MAX + 1), 0)))
    ops.append(("append past the limit", appends))
    for size in (MAX + 1, 1 << 40, 1 << 62, -1):
        ops.append((f"truncate {size}", lambda z=size: os.truncate(k, z)))
        ops.append((f"ftruncate {size}", lambda z=size: ftrunc(z)))
    for label, fn in ops:
        reset()
        record(label, fn)
        data = open(k, "rb").read()
        results[f"{label} value"] = data.decode() if data == b"intact" else f"{len(data)} bytes"
    # At the limit exactly, and sparse: fine, and reads back with zeros.
    reset()
    record("pwrite 1 byte at MAX-1", pwrite_at, k, b"x", MAX - 1)
    data = open(k, "rb").read()
    results["pwrite 1 byte at MAX-1 value"] = "OK" if data == b"intact" + b"\0" * (
        MAX - 7) + b"x" else f"WRONG {len(data)} bytes"
    sparse = os.path.join(d, "SPARSE")
    fd = os.open(sparse, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.pwrite(fd, b"end", MAX - 3)
    os.pwrite(fd, b"start", 0)
    os.close(fd)
    data = open(sparse, "rb").read()
    results["sparse value"] = "OK" if data == b"start" + b"\0" * (MAX - 8) + b"end" else \
        f"WRONG {len(data)} bytes"
    # Reads at absurd offsets return nothing (or EINVAL past what off_t holds).
    fd = os.open(k, os.O_RDONLY)
    for off in (MAX, 1 << 40, (1 << 63) - 2, (1 << 63) - 1):
        got = record(f"pread at {off}", lambda o=off: os.pread(fd, 100, o))
        if got:
            results[f"pread at {off}"] = f"WRONG: {len(got)} bytes"
    os.close(fd)


XATTR_NAMES = (["user.a", "user." + "x" * 200, "user." + "x" * 250, "user." + "x" * 251,
                "user." + "x" * 300, "user.", "", "noprefix", "trusted.x", "security.x",
                "system.posix_acl_access", "system.nfs4_acl", "user.\x01\x7f", "user.%s%n",
                "user.K\u00fc"])
XATTR_SIZES = [0, 1, 255, 4096, 65535, 65536, 65537, 1 << 20]


def phase_xattrs(d):
    k = os.path.join(d, "X")
    with open(k, "wb") as f:
        f.write(b"x-value")
    for n in XATTR_NAMES:
        for size in XATTR_SIZES:
            val = bytes((i * 7 + size) % 256 for i in range(size))
            record(f"setxattr {n[:30]!r} {size}", os.setxattr, k, n, val)
            if results[f"setxattr {n[:30]!r} {size}"] == "OK":
                got = record(f"getxattr {n[:30]!r} {size}", os.getxattr, k, n)
                if got is not None and got != val:
                    results[f"getxattr {n[:30]!r} {size}"] = "WRONG"
        record(f"getxattr {n[:30]!r}", os.getxattr, k, n)
        record(f"removexattr {n[:30]!r}", os.removexattr, k, n)
        record(f"removexattr again {n[:30]!r}", os.removexattr, k, n)
    record("listxattr", os.listxattr, k)
    buf = ctypes.create_string_buffer(1)
    for size in (0, 1):
        r = libc.getxattr(k.encode(), b"user.a", buf, size)
        results[f"getxattr buffer {size}"] = "OK" if r >= 0 else name_of(ctypes.get_errno())
        r = libc.listxattr(k.encode(), buf, size)
        results[f"listxattr buffer {size}"] = "OK" if r >= 0 else name_of(ctypes.get_errno())
    for n in ("user.a", "user.x"):
        record(f"setxattr on dir {n}", os.setxattr, d, n, b"v")
    record("after xattrs", lambda: open(k, "rb").read())


def raise_nofile(want):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def phase_storm(d, n):
    """Open/close storms, then thousands of handles open at once."""
    errs = {}

    def err(label, e):
        key = f"{label}: {name_of(e.errno)}"
        errs[key] = errs.get(key, 0) + 1

    k = os.path.join(d, "S")
    with open(k, "wb") as f:
        f.write(b"storm-value")
    for _ in range(n):
        try:
            fd = os.open(k, os.O_RDONLY)
            os.read(fd, 64)
            os.close(fd)
        except OSError as e:
            err("open-read-close", e)
    for i in range(n // 10):
        try:
            fd = os.open(k, os.O_WRONLY | os.O_TRUNC)
            os.write(fd, b"storm-value-%d" % i)
            os.close(fd)
        except OSError as e:
            err("open-write-close", e)
    for i in range(n // 20):
        p = os.path.join(d, f"T{os.getpid()}_{i % 50}")
        try:
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.close(fd)
            os.unlink(p)
        except OSError as e:
            err("create-unlink", e)
    limit = raise_nofile(8192)
    held = []
    want = min(4096, limit - 64)
    for i in range(want):
        try:
            held.append(os.open(k, os.O_RDONLY if i % 8 else os.O_RDWR))
        except OSError as e:
            err("hold", e)
            if e.errno in (errno.EMFILE, errno.ENFILE):
                break
    for i, fd in enumerate(held):
        try:
            if i % 8 == 0:
                os.pwrite(fd, b"held-%06d" % i, 0)
            else:
                os.pread(fd, 64, 0)
        except OSError as e:
            err("use", e)
    for fd in held:
        try:
            os.close(fd)
        except OSError as e:
            err("close", e)
    results["held"] = len(held)
    results["errors"] = errs
    results["final"] = open(k, "rb").read().decode(errors="replace")


def main():
    phase, d = sys.argv[1], sys.argv[2]
    if phase == "names":
        phase_names(d, top=False)
    elif phase == "top-names":
        phase_names(d, top=True)
    elif phase == "sizes":
        phase_sizes(d)
    elif phase == "xattrs":
        phase_xattrs(d)
    elif phase == "storm":
        phase_storm(d, int(sys.argv[3]))
    json.dump(results, sys.stdout, default=repr)


if __name__ == "__main__":
    main()
