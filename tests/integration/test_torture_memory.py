"""Secrets in memory: once a value has been written and read through the
mount and the files are closed, the daemon's memory holds no copy of it;
and the CLI holds none when it exits after `set`, `get` or `import`.

What a user relies on: a secret is in the clear only while someone has it
open (and a value replaced through an O_TRUNC open, kept aside to be put
back if the write fails, no longer than that file is open). A core dump that escapes the hardening, a debugger attached later,
or a memory-disclosure bug finds nothing of values no longer in use.

Root reads /proc/PID/mem of the non-dumpable daemon (CAP_SYS_PTRACE); the
CLI is traced from exec and read at its exit event, after its last
instruction and before its memory is torn down.
"""
import ctypes
import os
import secrets
import signal
import threading
import time

from conftest import VAULTFS_BIN, clean_env, read_file
from torture import fragments, report, scan_memory

PTRACE_TRACEME = 0
PTRACE_CONT = 7
PTRACE_SETOPTIONS = 0x4200
PTRACE_O_TRACEEXIT = 0x40
PTRACE_EVENT_EXIT = 6
SCAN_TIMEOUT = 15.0

libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
libc.ptrace.restype = ctypes.c_long


def unique_value(n):
    """n bytes nobody else has in memory: a random hex string with a tag."""
    head = b"vfsmem-"
    return head + secrets.token_hex(n).encode()[:n - len(head)]


def needles_of(values):
    """Fragments of every value, and for each the index of its value."""
    needles, index = [], []
    for vi, v in enumerate(values):
        for f in fragments(v):
            needles.append(f)
            index.append(vi)
    return needles, index


def scan_until_clean(pid, values, timeout=SCAN_TIMEOUT):
    """Scans until no fragment of values is found (RELEASE reaches the
    daemon after close() returns) or the time is up; returns the last hits
    as (value index, address, region)."""
    needles, index = needles_of(values)
    deadline = time.monotonic() + timeout
    while True:
        hits = [(index[i], addr, where) for i, addr, where in scan_memory(pid, needles)]
        if not hits or time.monotonic() > deadline:
            return hits
        time.sleep(0.2)


def format_hits(hits, values):
    return "\n".join(f"  {values[vi][:16]!r}... ({len(values[vi])} bytes) at {addr:#x} in "
                     f"{where}" for vi, addr, where in hits[:20])


def test_daemon_memory_holds_no_closed_value(vault):
    v = vault
    os.mkdir(v.path("app"))
    short = unique_value(40)        # under one cipher block
    medium = unique_value(100)
    large = unique_value(5000)      # several pages of FUSE request
    via_cli = unique_value(70)      # only ever decrypted by the daemon
    replaced = unique_value(60)     # kept aside by an O_TRUNC open, to put back
    values = [short, medium, large, via_cli, replaced]
    with open(v.path("app", "S"), "wb") as f:
        f.write(replaced)
    for name, val in (("S", short), ("M", medium), ("L", large)):
        with open(v.path("app", name), "wb") as f:
            f.write(val)
    v.set("app", "C", via_cli)
    for name, val in (("S", short), ("M", medium), ("L", large), ("C", via_cli)):
        assert read_file(v.path("app", name)) == val
    pid = v.worker_pid()
    # The scanner does see a value while a file holds it open: a clean scan
    # below means the copies are gone, not that the scan is blind.
    with open(v.path("app", "M"), "rb") as f:
        assert f.read() == medium
        open_hits = scan_memory(pid, [medium])
        assert open_hits, "the scan cannot see a value the daemon holds open"
    hits = scan_until_clean(pid, values)
    assert not hits, ("the daemon's memory still holds closed values:\n" +
                      format_hits(hits, values))
    report("memory-daemon", values=len(values), found_while_open=len(open_hits))


def traced_run(argv, stdin_data, needles):
    """Runs argv traced from exec; at its exit event scans its memory for
    needles. Returns (exit status, stdout, stderr, hits)."""
    r_in, w_in = os.pipe()
    r_out, w_out = os.pipe()
    r_err, w_err = os.pipe()
    # LeakSanitizer cannot run under a tracer; leaks are other tests' business.
    asan = os.environ.get("ASAN_OPTIONS", "")
    env = clean_env({"ASAN_OPTIONS": (asan + ":" if asan else "") + "detect_leaks=0"})
    pid = os.fork()
    if pid == 0:
        try:
            os.dup2(r_in, 0)
            os.dup2(w_out, 1)
            os.dup2(w_err, 2)
            for fd in (r_in, w_in, r_out, w_out, r_err, w_err):
                os.close(fd)
            libc.ptrace(PTRACE_TRACEME, 0, None, None)
            os.execve(argv[0], argv, env)
        finally:
            os._exit(127)
    for fd in (r_in, w_out, w_err):
        os.close(fd)
    out, err = [], []

    def feed():
        with os.fdopen(w_in, "wb") as f:
            try:
                f.write(stdin_data)
            except BrokenPipeError:
                pass

    def drain(fd, into):
        with os.fdopen(fd, "rb") as f:
            into.append(f.read())
    threads = [threading.Thread(target=feed), threading.Thread(target=drain, args=(r_out, out)),
               threading.Thread(target=drain, args=(r_err, err))]
    for t in threads:
        t.start()
    hits = None
    try:
        _, status = os.waitpid(pid, 0)          # stopped at exec
        assert os.WIFSTOPPED(status), status
        assert libc.ptrace(PTRACE_SETOPTIONS, pid, None,
                           ctypes.c_void_p(PTRACE_O_TRACEEXIT)) == 0
        libc.ptrace(PTRACE_CONT, pid, None, None)
        while True:
            _, status = os.waitpid(pid, 0)
            if os.WIFEXITED(status) or os.WIFSIGNALED(status):
                break
            sig = os.WSTOPSIG(status)
            if sig == signal.SIGTRAP and status >> 16 == PTRACE_EVENT_EXIT:
                hits = scan_memory(pid, needles)
                sig = 0
            libc.ptrace(PTRACE_CONT, pid, None, ctypes.c_void_p(sig))
    except BaseException:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise
    finally:
        for t in threads:
            t.join(30)
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -os.WTERMSIG(status)
    return code, b"".join(out), b"".join(err), hits


def test_cli_memory_holds_no_value_at_exit(vault_unmounted):
    v = vault_unmounted
    checked = 0
    # The database path is in the CLI's argv: the scan at exit must find it,
    # or a clean scan proves nothing.
    control = v.db.encode()
    for size in (40, 100, 5000):
        val = unique_value(size)
        needles, index = needles_of([val])
        needles.append(control)
        for cmd, stdin in (("set", val), ("get", b"")):
            argv = [VAULTFS_BIN, cmd] + v.base_opts() + ["app", f"K{size}"]
            code, out, err, hits = traced_run(argv, stdin, needles)
            assert code == 0, err.decode(errors="replace")
            assert hits is not None, "the exit event was never seen"
            assert any(i == len(needles) - 1 for i, _, _ in hits), \
                "the scan of the CLI at exit cannot see its own argv"
            leaks = [(index[i], a, w) for i, a, w in hits if i < len(index)]
            assert not leaks, (f"`vaultfs {cmd}` exits with the value still in its memory:\n" +
                               format_hits(leaks, [val]))
            if cmd == "get":
                assert out == val
            checked += 1
    # import reads a whole dotenv file into locked memory and parses it there.
    vals = [unique_value(50), unique_value(300)]
    text = b"# imported\nA=" + vals[0] + b'\nexport B="' + vals[1] + b'"\n'
    needles, index = needles_of(vals)
    needles.append(control)
    argv = [VAULTFS_BIN, "import"] + v.base_opts() + ["app", "--env", "-"]
    code, _, err, hits = traced_run(argv, text, needles)
    assert code == 0, err.decode(errors="replace")
    assert v.get("app", "A") == vals[0] and v.get("app", "B") == vals[1]
    assert any(i == len(needles) - 1 for i, _, _ in hits)
    leaks = [(index[i], a, w) for i, a, w in hits if i < len(index)]
    assert not leaks, ("`vaultfs import` exits with values still in its memory:\n" +
                       format_hits(leaks, vals))
    checked += 1
    report("memory-cli", runs=checked)
