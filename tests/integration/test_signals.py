"""A stop signal ends the daemon whichever of its threads it is sent to.

libfuse's handlers only end the session loop when the signal interrupts one
of libfuse's own threads; the daemon's helper threads (audit writer, key
reload, cache invalidation) must block such signals so the kernel delivers
them to a libfuse thread. Before that, a SIGINT or SIGTERM that landed on a
helper thread left the daemon running (a rare hang seen in CI)."""
import os
import signal

from conftest import write_file

HELPERS = ("vaultfs-audit", "vaultfs-reload", "vaultfs-inval")
STOP = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def threads(pid):
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/status") as f:
            st = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
        out[int(tid)] = (st["Name"], int(st["SigBlk"], 16))
    return out


def test_helper_threads_leave_stop_signals_to_libfuse(vault):
    os.mkdir(vault.path("app"))
    write_file(vault.path("app", "K"), b"v")
    seen = set()
    for tid, (name, blocked) in threads(vault.worker_pid()).items():
        if name in HELPERS:
            seen.add(name)
            for sig in STOP:
                assert blocked & (1 << (sig - 1)), \
                    f"thread {name} ({tid}) would take {sig.name}: SigBlk={blocked:x}"
    assert seen == set(HELPERS), f"helper threads found: {seen}"
    # And libfuse's threads take them: at least one thread blocks none.
    assert any(not (b & (1 << (signal.SIGTERM - 1))) for _, b in threads(vault.worker_pid()).values())
