"""Zero downtime: the holder keeps the FUSE connection while the serving
process (the worker) is killed or upgraded; readers and writers never see
it. Pauses are measured and printed, never asserted."""
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from conftest import (VAULTFS_BIN, read_file, run, serving_pid_changed, wait_for,
                      worker_pids, write_file)

KILLS = 20
READERS = 4
PAD = "x" * 40
# Whole values only: never empty (a shell redirect's value shows at its
# writer's final close), never a mix.
VALUE_RE = rb"^(init|w\d+-" + PAD.encode() + rb")$"

# A reader process: open, read, close in a loop until the stop file exists;
# counts failures by errno and values that are not whole, and measures the
# longest gap between two successful reads.
READER = r"""
import json, os, re, sys, time
path, stop, out = sys.argv[1:4]
pat = re.compile(sys.argv[4].encode())
reads = fails = torn = 0
errors = {}
last = time.monotonic(); longest = 0.0
while not os.path.exists(stop):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        fails += 1
        errors[str(e)] = errors.get(str(e), 0) + 1
        continue
    now = time.monotonic()
    longest = max(longest, now - last)
    last = now
    reads += 1
    if not pat.match(data):
        torn += 1
        errors["bad value %r" % data[:80]] = 1
json.dump({"reads": reads, "fails": fails, "torn": torn, "errors": errors,
           "longest": longest}, open(out, "w"))
"""


class Load:
    """READERS reader processes and a shell writer loop on app/K."""

    def __init__(self, v):
        self.v = v
        self.key = v.path("app", "K")
        self.stop_file = os.path.join(v.dir, "stop")
        self.readers = []
        self.written = 0
        self.failures = []
        self.longest_write = 0.0
        self.stop = threading.Event()
        self.writer = threading.Thread(target=self.write_loop)

    def start(self):
        for i in range(READERS):
            out = os.path.join(self.v.dir, f"reader-{i}.json")
            p = subprocess.Popen([sys.executable, "-c", READER, self.key, self.stop_file, out,
                                  VALUE_RE.decode()])
            self.readers.append((p, out))
        self.writer.start()

    def write_loop(self):
        i = 0
        while not self.stop.is_set():
            i += 1
            value = f"w{i}-{PAD}"
            t = time.monotonic()
            # What users do: a shell redirect; then read it back.
            r = run(["sh", "-c", f"printf %s '{value}' > '{self.key}'"])
            self.longest_write = max(self.longest_write, time.monotonic() - t)
            if r.returncode != 0:
                self.failures.append(f"write {i}: {r.stderr.decode(errors='replace')}")
                continue
            r = run(["cat", self.key])
            if r.returncode != 0 or r.stdout != value.encode():
                self.failures.append(f"write {i} acknowledged, read back "
                                     f"{r.returncode} {r.stdout[:80]!r} {r.stderr!r}")
            self.written = i

    def wait_progress(self, writes=2):
        """Waits until the writer completed `writes` more writes."""
        start = self.written
        assert wait_for(lambda: self.written >= start + writes or self.failures, 30), \
            f"the writer made no progress:\n{self.v.log()}"

    def finish(self):
        self.stop.set()
        self.writer.join(60)
        with open(self.stop_file, "w"):
            pass
        results = []
        for p, out in self.readers:
            p.wait(60)
            with open(out) as f:
                results.append(json.load(f))
        return results


def report(what, results, load):
    longest = max(r["longest"] for r in results)
    print(f"\n{what}: {sum(r['reads'] for r in results)} reads, {load.written} writes, "
          f"longest pause seen by a reader {longest * 1000:.1f} ms, by a writer "
          f"{load.longest_write * 1000:.1f} ms")


def check(results, load):
    for r in results:
        assert r["fails"] == 0 and r["torn"] == 0, \
            f"a reader saw failures: {r['errors']}\n{load.v.log()[-3000:]}"
        assert r["reads"] > 0
    assert not load.failures, "\n".join(load.failures[:10])
    # The last acknowledged write is the value now.
    assert read_file(load.key) == f"w{load.written}-{PAD}".encode()


@pytest.fixture
def busy_vault(vault):
    os.mkdir(vault.path("app"))
    write_file(vault.path("app", "K"), b"init")
    return vault


def test_kill9_of_the_worker_fails_no_reader_or_writer(busy_vault):
    v = busy_vault
    load = Load(v)
    load.start()
    try:
        for _ in range(KILLS):
            load.wait_progress()
            pid = v.worker_pid()
            os.kill(pid, signal.SIGKILL)
            # A new worker serves again (a generous bound, not a timing).
            serving_pid_changed(v, pid, timeout=10)
        load.wait_progress()
    finally:
        results = load.finish()
    report(f"{KILLS} kill -9", results, load)
    # Such a redirect's first close, done twice, emptied the value.
    again = re.findall(r"a (\w+) the previous worker handled was sent again: "
                       r"answered as then( \(the redirect's first close\))?", v.log())
    print(f"requests the kernel sent again that a dead worker had carried out: "
          f"{sorted(op + (' (limbo)' if limbo else '') for op, limbo in again)}")
    check(results, load)
    assert v.log().count("was killed by signal 9") == KILLS


def test_open_writer_survives_kill9_of_the_worker(busy_vault):
    """A file open for writing, written but not yet closed, when the worker
    dies: the next worker adopts it, and close() stores it."""
    v = busy_vault
    f = open(v.path("app", "K"), "wb", buffering=0)
    f.write(b"part one, ")
    pid = v.worker_pid()
    os.kill(pid, signal.SIGKILL)
    serving_pid_changed(v, pid)
    f.write(b"part two")
    f.close()
    assert read_file(v.path("app", "K")) == b"part one, part two"
    # And a reader opened before the kill still reads its own version.
    write_file(v.path("app", "K"), b"old value")
    r = open(v.path("app", "K"), "rb", buffering=0)
    assert r.read(4) == b"old "
    write_file(v.path("app", "K"), b"new value, longer")
    pid = v.worker_pid()
    os.kill(pid, signal.SIGKILL)
    serving_pid_changed(v, pid)
    assert r.read() == b"value", "a reader continues the value it opened, not a mix"
    r.close()


def test_request_inside_the_dying_worker_completes(vault_factory):
    """kill -9 while an open is inside the worker: the kernel resends it to
    the next worker and the reader gets its value, not ENOTCONN or EIO."""
    v = vault_factory(mount=False)
    v.set("app", "K", b"held-value")
    v.mount(["--test-hold-open", "1000"])
    reader = subprocess.Popen(["cat", v.path("app", "K")], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    try:
        assert wait_for(lambda: "holding an OPEN request" in v.log(), 10), v.log()
        pid = v.worker_pid()
        os.kill(pid, signal.SIGKILL)
        serving_pid_changed(v, pid)
        out, err = reader.communicate(timeout=30)
    finally:
        if reader.poll() is None:
            reader.kill()
    assert reader.returncode == 0, err
    assert out == b"held-value"


def test_redirects_first_close_sent_again_after_kill9_empties_nothing(vault_factory):
    """A shell's `cmd > key` closes its first descriptor (dup2) before cmd
    writes. The worker is killed after it handled that close and before its
    answer reached the kernel, so the kernel sends the same close again to
    the next worker: that must not count as the redirect's second close,
    which commits the empty value. Readers meanwhile read the old value,
    never an empty one, and what cmd writes then is stored."""
    v = vault_factory(mount=False)
    v.set("app", "K", b"old-value")
    v.mount(["--test-hold-reply", "1000"])
    path = v.path("app", "K")
    held = "holding the reply to FLUSH"
    writer = subprocess.Popen(["sh", "-c", f"{{ read go; printf %s new-value; }} > '{path}'"],
                              stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert wait_for(lambda: held in v.log(), 10), v.log()
        pid = v.worker_pid()
        os.kill(pid, signal.SIGKILL)
        serving_pid_changed(v, pid)
        # The next worker has handled the close sent again (and holds its reply).
        assert wait_for(lambda: v.log().count(held) >= 2, 10), v.log()
        assert read_file(path) == b"old-value", \
            "a reader saw an empty value while the redirect's command had yet to write"
        out, err = writer.communicate(b"go\n", timeout=30)
    finally:
        if writer.poll() is None:
            writer.kill()
    assert writer.returncode == 0, err
    assert read_file(path) == b"new-value"
    assert "killed by signal 9" in v.log()
    assert "was sent again: answered as then" in v.log()


def test_append_sent_again_after_kill9_is_stored_once(vault_factory):
    """`cmd >> key`: the worker is killed after it appended a write and
    before its answer reached the kernel, which sends the write again to
    the next worker: the text is appended once, not twice."""
    v = vault_factory(mount=False)
    v.set("app", "K", b"one,")
    v.mount(["--test-hold-reply", "1000"])
    path = v.path("app", "K")
    held = "holding the reply to WRITE"
    writer = subprocess.Popen(["sh", "-c", f"printf %s two >> '{path}'"],
                              stderr=subprocess.PIPE)
    try:
        assert wait_for(lambda: held in v.log(), 10), v.log()
        pid = v.worker_pid()
        os.kill(pid, signal.SIGKILL)
        serving_pid_changed(v, pid)
        _, err = writer.communicate(timeout=30)
    finally:
        if writer.poll() is None:
            writer.kill()
    assert writer.returncode == 0, err
    assert read_file(path) == b"one,two"
    assert "was sent again: answered as then" in v.log()


def test_new_key_created_once_across_kill9(busy_vault):
    """`cmd > newkey` while the worker dies after it created the key and
    before the kernel had its answer: the kernel sends the create again,
    and the next worker answers it with the file the dead one made, so the
    redirect succeeds (not "File exists") and the new key's value shows to
    everyone once written (not hidden forever as a key still being made)."""
    v = busy_vault
    v.unmount()
    v.mount(["--test-hold-reply", "1000"])
    path = v.path("app", "NEW")
    writer = subprocess.Popen(["sh", "-c", f"printf %s fresh > '{path}'"],
                              stderr=subprocess.PIPE)
    try:
        assert wait_for(lambda: "holding the reply to CREATE" in v.log(), 10), v.log()
        pid = v.worker_pid()
        os.kill(pid, signal.SIGKILL)
        serving_pid_changed(v, pid)
        _, err = writer.communicate(timeout=30)
    finally:
        if writer.poll() is None:
            writer.kill()
    assert writer.returncode == 0, err
    r = run(["cat", path])     # another process
    assert (r.returncode, r.stdout) == (0, b"fresh"), r.stderr
    assert "was sent again: answered as then" in v.log()


def test_new_key_being_written_survives_kill9_and_upgrade(busy_vault):
    """A new key exists only in its creator's handle until the first close:
    a worker killed after the create, and the one after it upgraded, each
    hand it on through the holder's record, and the close stores it whole
    with the audit entries of its creation and its write."""
    v = busy_vault
    path = v.path("app", "NEW")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, b"part1-")
        old = v.worker_pid()
        os.kill(old, signal.SIGKILL)
        old = serving_pid_changed(v, old)
        os.write(fd, b"part2-")
        r = run([VAULTFS_BIN, "reload", "--upgrade", v.mnt])
        assert r.returncode == 0, r.stderr.decode() + v.log()
        serving_pid_changed(v, old)
        os.write(fd, b"part3")
    finally:
        os.close(fd)
    r = run(["cat", path])     # another process
    assert (r.returncode, r.stdout) == (0, b"part1-part2-part3"), r.stderr
    assert v.get("app", "NEW") == b"part1-part2-part3"
    r = v.cli("audit", "--instance", "app", "--json")
    ops = [(e["op"], e["result"]) for e in map(json.loads, r.stdout.decode().splitlines())
           if e["key"] == "NEW" and e["op"] != "read"]
    assert ops == [("create", "ok"), ("write", "ok")], ops


def test_refused_write_still_refused_after_kill9(busy_vault):
    """A write refused (EFBIG) and then a crash: the next worker knows the
    file failed, so close() reports it and stores nothing, instead of
    storing what was written before the refused write."""
    v = busy_vault
    old = v.worker_pid()
    fd = os.open(v.path("app", "K"), os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(fd, b"first part")
        with pytest.raises(OSError) as e:
            os.pwrite(fd, b"x", 2 << 20)    # beyond max_value_size (1 MiB)
        assert e.value.errno == 27  # EFBIG
        os.kill(old, signal.SIGKILL)
        serving_pid_changed(v, old)
    finally:
        with pytest.raises(OSError) as e:
            os.close(fd)
    assert e.value.errno == 27
    assert read_file(v.path("app", "K")) == b"init"


def test_worker_dying_at_once_is_restarted_with_backoff(busy_vault):
    """A worker that dies before it serves (here: its key file is gone) is
    tried again after a growing pause, and the mount waits for it."""
    v = busy_vault
    os.rename(v.key, v.key + ".away")
    pid = v.worker_pid()
    os.kill(pid, signal.SIGKILL)
    assert wait_for(lambda: v.log().count("died before serving") >= 3, 30), v.log()
    os.rename(v.key + ".away", v.key)
    serving_pid_changed(v, pid, timeout=30)
    assert read_file(v.path("app", "K")) == b"init"
    pauses = [int(m) for m in re.findall(r"next try in (\d+) ms", v.log())]
    assert pauses[:3] == sorted(pauses[:3]) and pauses[2] > pauses[0], pauses


def test_sigterm_to_the_holder_stops_everything(busy_vault):
    v = busy_vault
    worker = v.worker_pid()
    proc, v.proc = v.proc, None
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0, v.log()
    assert not os.path.ismount(v.mnt)
    assert wait_for(lambda: not os.path.exists(f"/proc/{worker}"), 10), \
        "the worker is left behind"


UPGRADES = 5


def install_copy(src, dst):
    """Installs src at dst the way a package manager does: a new file
    renamed over the old one (the running binary is never written)."""
    tmp = dst + ".new"
    with open(src, "rb") as i, open(tmp, "wb") as o:
        o.write(i.read())
    os.chmod(tmp, 0o755)
    os.rename(tmp, dst)
    return os.stat(dst).st_ino


def test_upgrade_five_times_fails_nothing(vault_factory, monkeypatch):
    import conftest
    v = vault_factory(mount=False)
    binary = os.path.join(v.dir, "bin", "vaultfs")
    os.mkdir(os.path.dirname(binary))
    install_copy(VAULTFS_BIN, binary)
    monkeypatch.setattr(conftest, "VAULTFS_BIN", binary)
    v.mount()
    os.mkdir(v.path("app"))
    write_file(v.path("app", "K"), b"init")
    load = Load(v)
    load.start()
    try:
        for _ in range(UPGRADES):
            load.wait_progress()
            old = v.worker_pid()
            ino = install_copy(VAULTFS_BIN, binary)
            r = run([binary, "reload", "--upgrade", v.mnt])
            assert r.returncode == 0, r.stderr.decode() + v.log()
            new = serving_pid_changed(v, old)
            assert f"took over from {old}" in r.stdout.decode()
            # The new worker runs the file installed now, not the old one.
            assert os.stat(f"/proc/{new}/exe").st_ino == ino
            assert wait_for(lambda: not os.path.exists(f"/proc/{old}"), 10), \
                "the old worker retired"
        load.wait_progress()
    finally:
        results = load.finish()
    report(f"{UPGRADES} upgrades", results, load)
    check(results, load)
    assert "killed by signal" not in v.log(), "a retired worker exits by itself"


def test_status_shows_holder_worker_and_restarts(busy_vault):
    v = busy_vault

    def status():
        r = run([VAULTFS_BIN, "status", "--json", v.mnt])
        assert r.returncode == 0, r.stderr
        (s,) = json.loads(r.stdout)
        return s
    s = status()
    assert s["mountpoint"] == v.mnt and s["database"] == v.db
    assert s["holder_pid"] == v.proc.pid and s["worker_pid"] == v.worker_pid()
    assert s["restarts"] == 0 and s["uptime_seconds"] >= 0
    old = v.worker_pid()
    os.kill(old, signal.SIGKILL)
    new = serving_pid_changed(v, old)
    assert wait_for(lambda: status()["worker_pid"] == new, 10)
    assert status()["restarts"] == 1
    r = run([VAULTFS_BIN, "status"])
    assert v.mnt in r.stdout.decode() and f"worker:     {new}" in r.stdout.decode()
    r = run([VAULTFS_BIN, "status", v.dir])
    assert r.returncode != 0 and b"no vaultfs mount" in r.stderr


def test_reload_still_reloads_the_master_key(busy_vault):
    v = busy_vault
    r = run([VAULTFS_BIN, "reload", v.mnt])
    assert r.returncode == 0, r.stderr
    assert wait_for(lambda: "master key reloaded" in v.log(), 10), v.log()
    assert read_file(v.path("app", "K")) == b"init"


def test_holder_holds_no_key_no_value_and_few_privileges(busy_vault):
    """The holder keeps the connection and open writers' records, and
    nothing that opens a secret: no master key, no value, no database."""
    from torture import fragments, scan_memory
    v = busy_vault
    value = os.urandom(24).hex().encode()
    # A writer open across a crash: its record goes through the holder.
    f = open(v.path("app", "K"), "wb", buffering=0)
    f.write(value)
    old = v.worker_pid()
    os.kill(old, signal.SIGKILL)
    serving_pid_changed(v, old)
    f.close()
    assert read_file(v.path("app", "K")) == value
    holder = v.proc.pid
    with open(v.key, "rb") as k:
        key_hex = k.read().strip()
    needles = fragments(value) + [key_hex, bytes.fromhex(key_hex.decode())]
    assert scan_memory(holder, needles) == [], "the holder's memory holds the key or a value"
    opened = {os.path.realpath(f"/proc/{holder}/fd/{fd}") for fd in os.listdir(f"/proc/{holder}/fd")}
    assert not opened & {v.db, v.db + "-wal", v.key}, opened
    status = dict(line.split(":", 1) for line in open(f"/proc/{holder}/status"))
    bounding = int(status["CapBnd"], 16)
    for cap in (12, 16, 17, 19):   # NET_ADMIN, SYS_MODULE, SYS_RAWIO, SYS_PTRACE
        assert not bounding & (1 << cap), f"the holder keeps capability {cap}"
    assert int(status["CapEff"], 16) == bounding
    assert status["NoNewPrivs"].strip() == "1"


def test_fusermount_u_stops_holder_and_worker(busy_vault):
    v = busy_vault
    worker = v.worker_pid()
    v.unmount()    # fusermount3 -u; the holder must exit 0 with a clean log
    assert wait_for(lambda: not os.path.exists(f"/proc/{worker}"), 10), \
        "the worker is left behind"
    r = run([VAULTFS_BIN, "status", "--json"])
    assert r.returncode == 0, r.stderr
    assert v.mnt not in [s["mountpoint"] for s in json.loads(r.stdout)], \
        "the holder's status is gone with it"


def test_fusermount_u_while_no_worker_runs_stops_the_holder(busy_vault):
    """Between a worker that died before serving and the next try, nobody
    reads the device: the holder itself sees the unmount and exits."""
    v = busy_vault
    os.rename(v.key, v.key + ".away")
    os.kill(v.worker_pid(), signal.SIGKILL)
    assert wait_for(lambda: "died before serving" in v.log(), 30), v.log()
    proc = v.proc
    r = run(["fusermount3", "-u", v.mnt])
    assert r.returncode == 0, r.stderr
    try:
        assert proc.wait(10) == 0, v.log()
    finally:
        v.proc = None
        os.rename(v.key + ".away", v.key)
    assert not os.path.ismount(v.mnt)


def voluntary_switches(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("voluntary_ctxt_switches"):
                return int(line.split()[1])
    raise AssertionError("no voluntary_ctxt_switches")


def test_reads_do_not_wake_the_holder(busy_vault):
    """The holder sleeps while its worker serves: it used to poll the
    device, which wakes every poller at each request (three context
    switches of the holder per open+read+close)."""
    v = busy_vault
    path = v.path("app", "K")
    read_file(path)
    before = voluntary_switches(v.proc.pid)
    for _ in range(500):
        read_file(path)
    woken = voluntary_switches(v.proc.pid) - before
    assert woken < 50, f"the holder woke {woken} times during 500 reads"


def test_unrecorded_writer_fails_loudly_across_a_crash(busy_vault):
    """A value too large to record with the holder: if the worker dies while
    it is being written, close() says EIO and the old value stays, never a
    silent loss or a partial value."""
    v = busy_vault
    f = open(v.path("app", "K"), "wb", buffering=0)
    f.write(os.urandom(200 * 1024))
    old = v.worker_pid()
    os.kill(old, signal.SIGKILL)
    serving_pid_changed(v, old)
    with pytest.raises(OSError) as e:
        f.close()
    assert e.value.errno == 5  # EIO
    assert read_file(v.path("app", "K")) == b"init"
