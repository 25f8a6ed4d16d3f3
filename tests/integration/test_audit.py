"""The audit log: what is recorded, that values never are, and that the hash
chain shows a deleted, edited or moved entry (tampering with sqlite3, as
someone holding the database file would)."""
import errno
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import time

import pytest

from conftest import VAULTFS_BIN, oserror, read_file, run, sh, wait_for, write_file

CONFIG = """\
[instance app]
owner = {alice}
group = {team}
mode = 0755
secret_mode = 0644
read_users = {bob}
"""


def entries(v, *args, db=None):
    """The audit log as dicts, via `vaultfs audit --json`."""
    opts = ["--db", db] if db else []
    r = v.cli("audit", "--json", *args, *opts, db=db is None)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    return [json.loads(line) for line in r.stdout.decode().splitlines()]


def wait_entries(v, pred, *args):
    """Reads are stored in the background: poll until pred(entries) holds."""
    found = []

    def check():
        found[:] = entries(v, *args)
        return pred(found)

    assert wait_for(check, 10.0), f"audit entries never matched; got {found}"
    return found


def find(rows, **kw):
    return [r for r in rows if all(r[k] == val for k, val in kw.items())]


def verify(v, db=None):
    opts = ["--db", db] if db else []
    r = v.cli("audit", "--verify", *opts, db=db is None)
    return r.returncode, r.stdout.decode() + r.stderr.decode()


def test_reads_writes_and_denials_recorded(users, vault_factory):
    v = vault_factory(config=CONFIG.format(alice=users.name["alice"], bob=users.name["bob"],
                                           team=users.team))
    p = v.path("app", "K")
    r = users.sh("alice", f"printf s3cret-value > {p}")
    assert r.returncode == 0, r.stderr
    r = users.run("bob", ["cat", p])
    assert r.returncode == 0 and r.stdout == b"s3cret-value", r.stderr
    assert users.try_open("carol", p) == "EACCES"

    rows = wait_entries(v, lambda rows: find(rows, op="read", comm="cat"))
    alice, bob, carol = (users.uid[n] for n in ("alice", "bob", "carol"))
    created = find(rows, op="create", key="K")
    assert created and created[0]["uid"] == alice and created[0]["result"] == "ok"
    assert created[0]["comm"] == "sh" and created[0]["pid"] > 0
    written = find(rows, op="write", key="K", uid=alice)
    assert written and written[0]["result"] == "ok" and written[0]["instance"] == "app"
    read = find(rows, op="read", uid=bob)
    assert len(read) == 1 and read[0]["result"] == "ok" and read[0]["comm"] == "cat"
    assert read[0]["gid"] == users.gid["bob"]
    denied = find(rows, op="read", uid=carol)
    assert len(denied) == 1, rows
    assert denied[0]["result"] == "EACCES" and denied[0]["errno"] == errno.EACCES
    assert denied[0]["comm"] == "python3"
    assert "read_users" in denied[0]["detail"], "the entry says which rule refused"
    assert [r["seq"] for r in rows] == list(range(1, len(rows) + 1))
    # Nothing of the value anywhere in the log.
    with sqlite3.connect(v.db) as c:
        dump = "\n".join(c.iterdump())
    c.close()
    assert "s3cret-value" not in dump
    assert "s3cret-value" not in json.dumps(rows)


def test_changes_recorded(vault):
    v = vault
    os.mkdir(v.path("app"))
    write_file(v.path("app", "A"), b"v")
    os.rename(v.path("app", "A"), v.path("app", "B"))
    os.chmod(v.path("app", "B"), 0o640)
    os.chown(v.path("app", "B"), 1234, 5678)
    os.truncate(v.path("app", "B"), 0)
    os.unlink(v.path("app", "B"))
    os.rmdir(v.path("app"))
    rows = entries(v)    # all of these wait until stored
    ops = [(r["op"], r["key"], r["result"]) for r in rows]
    assert ops == [("mkdir", "", "ok"), ("create", "A", "ok"), ("write", "A", "ok"),
                   ("rename", "A", "ok"), ("chmod", "B", "ok"), ("chown", "B", "ok"),
                   ("truncate", "B", "ok"), ("delete", "B", "ok"), ("rmdir", "", "ok")], ops
    assert rows[3]["detail"] == "to B"
    assert rows[4]["detail"] == "mode 0640"
    assert rows[5]["detail"] == "uid 1234 gid 5678"
    assert {r["uid"] for r in rows} == {0}
    assert all(r["comm"] == "python3" for r in rows[1:8]), [r["comm"] for r in rows]
    code, out = verify(v)
    assert code == 0 and "audit log intact: 9 entries" in out, out


def test_max_mode_denial_recorded(vault_factory):
    v = vault_factory(config="[instance app]\nmax_mode = 0600\n")
    write_file(v.path("app", "K"), b"v")
    assert oserror(os.chmod, v.path("app", "K"), 0o644) == errno.EPERM
    rows = entries(v, "--key", "K")
    denied = find(rows, op="chmod")
    assert len(denied) == 1 and denied[0]["result"] == "EPERM"
    assert "max_mode 0600" in denied[0]["detail"] and "mode 0644" in denied[0]["detail"]


def test_tamper_failure_recorded(vault_unmounted):
    v = vault_unmounted
    v.set("app", "K", b"value-to-tamper-with")
    with sqlite3.connect(v.db) as c:
        blob = bytearray(c.execute("SELECT blob FROM secrets WHERE name = 'K'").fetchone()[0])
        blob[-1] ^= 1
        c.execute("UPDATE secrets SET blob = ? WHERE name = 'K'", (bytes(blob),))
    c.close()
    v.mount()
    r = subprocess.run(["cat", v.path("app", "K")], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE)
    assert r.returncode != 0 and b"Input/output error" in r.stderr
    rows = entries(v, "--key", "K")    # a failure is stored before cat hears of it
    fail = find(rows, op="authfail")
    assert len(fail) == 1, rows
    assert fail[0]["result"] == "EBADMSG" and fail[0]["comm"] == "cat"
    assert fail[0]["uid"] == 0 and fail[0]["instance"] == "app"
    read = find(rows, op="read", comm="cat")
    assert len(read) == 1 and read[0]["result"] == "EIO"
    # The CLI's own attempt is recorded too.
    assert v.cli("get", "app", "K").returncode != 0
    rows = entries(v, "--key", "K")
    assert len(find(rows, op="authfail", comm="vaultfs")) == 1


def test_cli_reads_and_writes_recorded(vault_unmounted):
    v = vault_unmounted
    v.set("app", "K", b"x")
    assert v.get("app", "K") == b"x"
    assert v.cli("rm", "app", "K").returncode == 0
    rows = entries(v)
    assert [(r["op"], r["result"], r["comm"]) for r in rows] == [
        ("write", "ok", "vaultfs"), ("read", "ok", "vaultfs"), ("delete", "ok", "vaultfs")]
    assert rows[0]["detail"] == "vaultfs CLI"


def _made_log(v):
    """A vault whose log has a few entries, unmounted so the file is whole."""
    os.mkdir(v.path("app"))
    for k in ("A", "B", "C"):
        write_file(v.path("app", k), k.encode())
    read_file(v.path("app", "A"))
    v.unmount()
    n = len(entries(v))
    assert n >= 7
    code, out = verify(v)
    assert code == 0 and f"intact: {n} entries" in out, out
    return n


def _tampered_copy(v, name, sql):
    d = os.path.join(v.dir, name)
    os.mkdir(d)
    db = os.path.join(d, "vault.db")
    for suffix in ("", "-wal"):
        if os.path.exists(v.db + suffix):
            shutil.copy(v.db + suffix, db + suffix)
    c = sqlite3.connect(db)
    with c:
        c.executescript(sql)
    c.close()
    return db


@pytest.mark.parametrize("case,sql,bad,says", [
    ("delete", "DELETE FROM audit WHERE seq = 3;", 3, "entry 3 is missing"),
    ("edit", "UPDATE audit SET uid = 4321, comm = 'innocent' WHERE seq = 4;", 4,
     "entry 4 was altered"),
    ("swap", "UPDATE audit SET seq = -1 WHERE seq = 2; UPDATE audit SET seq = 2 WHERE seq = 5;"
             "UPDATE audit SET seq = 5 WHERE seq = -1;", 2, "entry 2 was altered"),
    ("swap-values", "UPDATE audit SET key = CASE seq WHEN 3 THEN 'B' ELSE 'A' END "
                    "WHERE seq IN (3, 5);", 3, "entry 3 was altered"),
    ("cut-end", "DELETE FROM audit WHERE seq = (SELECT max(seq) FROM audit);", None,
     "cut off the end"),
])
def test_verify_names_the_bad_entry(vault, case, sql, bad, says):
    v = vault
    n = _made_log(v)
    db = _tampered_copy(v, case, sql)
    code, out = verify(v, db=db)
    assert code == 1, f"--verify must fail after {case}: {out}"
    bad = n if bad is None else bad
    # What the user sees: the first bad entry by number, and why.
    assert f"audit log BROKEN at entry {bad}: " in out, out
    assert says in out, out
    # The untouched original still verifies.
    assert verify(v)[0] == 0


def test_filters(vault_unmounted):
    v = vault_unmounted
    v.set("one", "K", b"1")
    v.set("two", "K", b"2")
    v.set("two", "L", b"3")
    assert len(entries(v)) == 3
    assert [r["instance"] for r in entries(v, "--instance", "two")] == ["two", "two"]
    assert [r["key"] for r in entries(v, "--key", "K")] == ["K", "K"]
    assert len(entries(v, "--instance", "two", "--key", "L")) == 1
    assert len(entries(v, "--since", "1h")) == 3
    assert entries(v, "--since", "2999-01-01") == []
    assert len(entries(v, "--since", "@0")) == 3
    r = v.cli("audit")
    lines = r.stdout.decode().splitlines()
    assert len(lines) == 3 and " write two/L ok " in lines[2] + " ", lines
    r = v.cli("audit", "--since", "last tuesday")
    assert r.returncode == 2
    assert b"bad time 'last tuesday' for --since" in r.stderr


def test_retention_prunes_and_chain_still_verifies(vault_factory):
    v = vault_factory(config="[vault]\naudit_retention = 1s\n", mount=False)
    v.set("app", "OLD1", b"1")
    v.set("app", "OLD2", b"2")
    time.sleep(1.2)    # make them older than the retention; no timing is asserted
    v.set("app", "NEW", b"3")
    r = v.cli("audit", "--prune")
    assert r.returncode == 0 and b"removed entries up to 2" in r.stdout, r.stdout
    rows = entries(v)
    assert [r["key"] for r in rows] == ["NEW"] and rows[0]["seq"] == 3
    code, out = verify(v)
    assert code == 0 and "intact: 1 entries (3 to 3)" in out, out
    # Deleting the kept anchor breaks the chain at its start.
    with sqlite3.connect(v.db) as c:
        c.execute("DELETE FROM meta WHERE key = 'audit_anchor'")
    c.close()
    code, out = verify(v)
    assert code == 1 and "BROKEN at entry 1" in out, out


def test_prune_without_retention_refused(vault_unmounted):
    r = vault_unmounted.cli("audit", "--prune")
    assert r.returncode == 1
    assert b"no audit_retention in the config" in r.stderr


def test_audit_off(vault_factory):
    v = vault_factory(config="[vault]\naudit = no\n")
    os.mkdir(v.path("app"))
    write_file(v.path("app", "K"), b"v")
    assert read_file(v.path("app", "K")) == b"v"
    assert entries(v) == []
    assert verify(v)[0] == 0


@pytest.fixture
def syslog_vault(vault_factory):
    """A vault whose daemon sends to a datagram socket of the test's own
    (syslog_socket in the config), standing in for syslog: the host's
    /dev/log, whoever reads it, is left alone."""
    d = tempfile.mkdtemp(prefix="vaultfs-syslog-", dir="/tmp")
    path = os.path.join(d, "log.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(0.1)
    try:
        yield vault_factory(config=f"[vault]\nsyslog_socket = {path}\n"), s
    finally:
        s.close()
        shutil.rmtree(d, ignore_errors=True)


def test_entries_go_to_syslog(syslog_vault):
    vault, devlog = syslog_vault
    os.mkdir(vault.path("app"))
    write_file(vault.path("app", "K"), b"syslog-secret-value")
    assert read_file(vault.path("app", "K")) == b"syslog-secret-value"
    got = []

    def saw_read():
        try:
            while True:
                got.append(devlog.recv(4096).decode(errors="replace"))
        except socket.timeout:
            pass
        return any("op=read" in m for m in got)

    assert wait_for(saw_read, 10.0), got
    audit = [m for m in got if " audit seq=" in m]
    assert any("op=write instance=app key=K result=ok" in m for m in audit), audit
    read = [m for m in audit if "op=read" in m][0]
    assert "uid=0" in read and 'comm="python3"' in read and "key=K" in read
    assert read.startswith("<86>"), "authpriv.info"
    assert not any("syslog-secret-value" in m for m in got)


def test_tampered_rename_recorded(vault_unmounted):
    v = vault_unmounted
    v.set("app", "K", b"value-to-tamper-with")
    with sqlite3.connect(v.db) as c:
        blob = bytearray(c.execute("SELECT blob FROM secrets WHERE name = 'K'").fetchone()[0])
        blob[-1] ^= 1
        c.execute("UPDATE secrets SET blob = ? WHERE name = 'K'", (bytes(blob),))
    c.close()
    v.mount()
    assert oserror(os.rename, v.path("app", "K"), v.path("app", "K2")) == errno.EIO
    assert os.listdir(v.path("app")) == ["K"]
    rows = entries(v, "--key", "K")
    # The failure is recorded once the rename's transaction is over (it held
    # the store's write lock, which the audit log needs).
    assert [(r["op"], r["result"]) for r in rows[-2:]] == [("authfail", "EBADMSG"),
                                                           ("rename", "EIO")], rows
    assert "could not be stored" not in v.log()


FLOOD = """\
import errno, sys, threading, time
path, threads, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
counts = [0] * threads
def flood(i):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            open(path, "rb").close()
            sys.exit("opened a secret it may not read")
        except OSError as e:
            assert e.errno == errno.EACCES, e
            counts[i] += 1
ts = [threading.Thread(target=flood, args=(i,)) for i in range(threads)]
for t in ts: t.start()
for t in ts: t.join()
print(sum(counts))
"""


def test_denial_flood_is_folded_and_the_wal_shrinks_back(users, vault_factory):
    """carol, who may not read app/K, opens it from 16 threads for 3 s while
    alice keeps writing her own key: the log gets a handful of entries
    whose counts add up to every attempt, the chain verifies, and once it is
    quiet the WAL is checkpointed and no longer than its limit."""
    v = vault_factory(config=CONFIG.format(alice=users.name["alice"], bob=users.name["bob"],
                                           team=users.team))
    p = v.path("app", "K")
    r = users.sh("alice", f"printf s3cret-value > {p}")
    assert r.returncode == 0, r.stderr
    writer = subprocess.Popen(
        ["setpriv", f"--reuid={users.name['alice']}", f"--regid={users.name['alice']}",
         "--init-groups", "--", "/bin/sh", "-c",
         f"i=0; while [ $i -lt 400 ]; do echo value-$i > {v.path('app', 'W')}; "
         f"i=$((i+1)); done"], stderr=subprocess.PIPE)
    r = users.run("carol", ["/usr/bin/python3", "-c", FLOOD, p, "16", "3"])
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    attempts = int(r.stdout)
    assert attempts > 200, "too few attempts to call it a flood"
    assert writer.wait(60) == 0, writer.stderr.read()
    carol = users.uid["carol"]

    def denied(rows):
        return [e for e in rows if e["uid"] == carol and e["op"] == "read"]

    rows = wait_entries(v, lambda rows: sum(e["count"] for e in denied(rows)) >= attempts)
    flood = denied(rows)
    assert sum(e["count"] for e in flood) == attempts, "each attempt counted exactly once"
    assert len(flood) <= 8, f"{attempts} denials in {len(flood)} entries"
    for e in flood:
        assert e["result"] == "EACCES" and e["key"] == "K" and e["comm"] == "python3"
        assert e["first_time_ns"] <= e["time_ns"]
    assert any(e["count"] > 1 and e["first_time_ns"] < e["time_ns"] for e in flood)
    text = v.cli("audit", "--instance", "app", "--key", "K").stdout.decode()
    assert " times from " in text
    code, out = verify(v)
    assert code == 0, out
    # --verify counts what the entries it checked record, folded ones too.
    m = re.search(r"\(\d+ to (\d+)\) recording (\d+) events", out)
    assert m, out
    upto, events = int(m.group(1)), int(m.group(2))
    assert events == sum(e["count"] for e in entries(v) if e["seq"] <= upto)
    # alice's 400 writes went through the WAL; quiet now, its pages are
    # checkpointed into the database (which alone then holds W's last
    # version), and the file is no longer than journal_size_limit.
    wal = v.db + "-wal"
    version = int(os.getxattr(v.path("app", "W"), "user.vaultfs.version"))

    def checkpointed():
        # A copy taken while the checkpoint writes the file may be torn:
        # then look again.
        shutil.copy(v.db, v.db + ".alone")
        c = sqlite3.connect(v.db + ".alone")
        try:
            row = c.execute("SELECT version FROM secrets WHERE name = 'W'").fetchone()
        except sqlite3.DatabaseError:
            row = None
        finally:
            c.close()
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(v.db + ".alone" + suffix):
                    os.unlink(v.db + ".alone" + suffix)
        return row is not None and row[0] == version
    assert wait_for(checkpointed, 15.0), "the WAL was not checkpointed after a quiet spell"
    assert not os.path.exists(wal) or os.path.getsize(wal) <= 4 * 1024 * 1024, \
        f"the WAL is still {os.path.getsize(wal)} bytes after a quiet spell"


def test_reused_pid_gets_its_own_process_name(vault_factory, tmp_path):
    """The daemon keeps process names between opens; a process that gets the
    pid of one that read before it (forced with ns_last_pid) is logged with
    its own name, not its predecessor's. (No folding here: each read is an
    entry with its own pid.)"""
    vault = vault_factory(config="[vault]\naudit_fold = 0\n")
    os.mkdir(vault.path("app"))
    p = vault.path("app", "K")
    write_file(p, b"v")
    alpha, beta = str(tmp_path / "alphacat"), str(tmp_path / "betacat")
    for name in (alpha, beta):
        shutil.copy("/bin/cat", name)
    first = subprocess.run([alpha, p], stdout=subprocess.PIPE)
    assert first.stdout == b"v"
    # The pid alphacat had, found in the log.
    rows = wait_entries(vault, lambda rows: find(rows, comm="alphacat"))
    pid = find(rows, comm="alphacat")[0]["pid"]
    reused = False
    for _ in range(50):
        with open("/proc/sys/kernel/ns_last_pid", "w") as f:
            f.write(str(pid - 1))
        second = subprocess.Popen([beta, p], stdout=subprocess.PIPE)
        out, _ = second.communicate()
        assert out == b"v"
        if second.pid == pid:
            reused = True
            break
    assert reused, "could not get the kernel to hand out the same pid again"
    rows = wait_entries(vault, lambda rows: find(rows, comm="betacat"))
    assert find(rows, comm="betacat", pid=pid), rows
    assert len(find(rows, comm="alphacat")) == 1, "alphacat read once, and only alphacat"


FLOOD_UNTIL_GONE = """\
import errno, sys, threading
path, threads = sys.argv[1], int(sys.argv[2])
seen, lock = {}, threading.Lock()
def flood():
    while True:
        try:
            open(path, "rb").close()
            sys.exit("opened a secret it may not read")
        except OSError as e:
            with lock:
                seen[e.errno] = seen.get(e.errno, 0) + 1
            if e.errno != errno.EACCES:
                return
ts = [threading.Thread(target=flood) for i in range(threads)]
print("started", flush=True)
for t in ts: t.start()
for t in ts: t.join()
print(" ".join("%s=%d" % (errno.errorcode.get(k, k), n) for k, n in sorted(seen.items())))
"""


def test_daemon_stops_cleanly_while_denials_wait(users, vault_factory):
    """A flood's later denials are answered late, from a queue: stopping the
    daemon meanwhile answers every one of them (EACCES, never a hang), and
    the daemon exits 0."""
    v = vault_factory(config=CONFIG.format(alice=users.name["alice"], bob=users.name["bob"],
                                           team=users.team))
    p = v.path("app", "K")
    r = users.sh("alice", f"printf s3cret-value > {p}")
    assert r.returncode == 0, r.stderr
    flooder = subprocess.Popen(
        ["setpriv", f"--reuid={users.name['carol']}", f"--regid={users.name['carol']}",
         "--init-groups", "--", "/usr/bin/python3", "-c", FLOOD_UNTIL_GONE, p, "16"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd="/")
    assert flooder.stdout.readline() == b"started\n"
    # Past the first window (2 s): answers have been coming late for a while.
    assert wait_for(lambda: any(e["count"] > 1 for e in entries(v, "--key", "K")), 10.0)
    proc, v.proc = v.proc, None
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0, read_file(v.log_path).decode(errors="replace")
    out, err = flooder.communicate(timeout=10)
    assert flooder.returncode == 0, err.decode(errors="replace")
    counts = dict(kv.split("=") for kv in out.decode().split())
    assert int(counts.get("EACCES", 0)) > 16 * 2, counts
    # Once the daemon is gone, the kernel answers the next opens.
    assert set(counts) <= {"EACCES", "ECONNABORTED", "ENOTCONN", "ENOENT"}, counts
    v.check_log(v.log())


def test_json_keeps_a_utf8_process_name(vault):
    """A process named in UTF-8 comes out of `audit --json` as itself (one
    JSON writer for every --json output, valid UTF-8 in and out)."""
    os.mkdir(vault.path("app"))
    write_file(vault.path("app", "K"), b"v")
    script = ("import ctypes, sys\n"
              "ctypes.CDLL(None).prctl(15, 'caf\\u00e9-\\u20ac'.encode(), 0, 0, 0)\n"
              "open(sys.argv[1], 'rb').read()\n")
    r = run(["/usr/bin/python3", "-c", script, vault.path("app", "K")])
    assert r.returncode == 0, r.stderr
    found = wait_entries(vault, lambda es: any(e["op"] == "read" and e["comm"] != "python3"
                                               for e in es))
    comms = {e["comm"] for e in found if e["op"] == "read"}
    assert "caf\u00e9-\u20ac" in comms, comms
