"""on_change hooks and `vaultfs watch`: what applications and scripts see when
secrets change, by any path, with names only and never a value."""
import json
import os
import signal
import subprocess
import tempfile
import threading
import time

import pytest

from conftest import VAULTFS_BIN, clean_env, read_text, run, stop_process, wait_for, \
    write_file

SECRET = "s3cr3t-hook-value"


def hook_dir():
    """A directory a hook's user (nobody, alice) can write its records to."""
    d = tempfile.mkdtemp(prefix="vaultfs-hook-", dir="/tmp")
    os.chmod(d, 0o1777)
    return d


def lines(path):
    try:
        with open(path) as f:
            return [l for l in f.read().splitlines() if l]
    except FileNotFoundError:
        return []


def settle(path, want, timeout=10.0):
    """Waits until path has at least want lines, then long enough for one
    more debounced run (quiet 200 ms, well passed) to have shown."""
    assert wait_for(lambda: len(lines(path)) >= want, timeout), \
        f"expected {want} hook runs, saw {lines(path)}"
    time.sleep(1.0)
    return lines(path)


def audit_lines(v):
    r = v.cli("audit")
    assert r.returncode == 0, r.stderr.decode()
    return [l for l in r.stdout.decode().splitlines() if " hook " in l]


# Records each run: one line, then its environment and argv in a file of its own.
RECORD = ('n=$(date +%s%N); echo "$n $(id -u) $VAULTFS_EVENT $VAULTFS_KEY '
          '$VAULTFS_VERSION" >> {d}/runs; env > {d}/env.$n; '
          'tr "\\0" " " < /proc/$$/cmdline > {d}/argv.$n')


def test_hook_runs_once_per_burst_of_ten_shell_writes_and_sees_names_only(
        vault_factory, users):
    d = hook_dir()
    v = vault_factory(config=f"[instance app]\non_change = {RECORD.format(d=d)}\n"
                             f"on_change_user = {users.name['alice']}\n")
    os.makedirs(v.path("app"), exist_ok=True)
    key = v.path("app", "db_password")
    # The key exists before the burst: a run reports the last change it saw,
    # and a burst that began by creating the key may be seen whole
    # ("created") or in steps ("written"), as the scans fall.
    write_file(key, "first\n")
    before = len(settle(f"{d}/runs", 1))
    for i in range(10):
        r = run(["sh", "-c", f"echo {SECRET}-{i} > {key}"])
        assert r.returncode == 0, r.stderr
    runs = settle(f"{d}/runs", before + 1)
    assert len(runs) == before + 1, f"one run for a burst of ten writes: {runs}"
    stamp, uid, event, name, version = runs[-1].split()
    assert int(uid) == users.uid["alice"], "the hook runs as on_change_user"
    assert (event, name, version) == ("written", "db_password", "11")
    env = read_text(f"{d}/env.{stamp}")
    argv = read_text(f"{d}/argv.{stamp}")
    assert "VAULTFS_INSTANCE=app" in env and "VAULTFS_KEY=db_password" in env
    assert SECRET not in env and SECRET not in argv, "a hook never sees a value"
    assert "VAULTFS_KEY" not in os.environ
    # The next burst is another run.
    write_file(key, "other\n")
    assert len(settle(f"{d}/runs", before + 2)) == before + 2
    assert any("app ok (exit 0)" in l for l in audit_lines(v))


def test_hook_defaults_to_nobody(vault_factory):
    d = hook_dir()
    v = vault_factory(config=f"[instance app]\non_change = {RECORD.format(d=d)}\n")
    os.makedirs(v.path("app"), exist_ok=True)
    write_file(v.path("app", "K"), "x")
    runs = settle(f"{d}/runs", 1)
    assert int(runs[0].split()[1]) == 65534, "never root unless on_change_user says so"


def test_failing_and_hanging_hooks_neither_block_nor_undo_writes(vault_factory):
    d = hook_dir()
    v = vault_factory(config=(
        "[instance app]\n"
        "on_change.fails = exit 3\n"
        f"on_change.hangs = echo $$ >> {d}/runs; sleep 600 & echo $! > {d}/child; wait\n"
        "on_change_timeout = 1\n"
        "on_change_user = root\n"))
    os.makedirs(v.path("app"), exist_ok=True)
    write_file(v.path("app", "fails"), "one")
    write_file(v.path("app", "hangs"), "one")
    assert wait_for(lambda: len(lines(f"{d}/runs")) == 1, 5), "the hanging hook started"
    hook_pid = int(lines(f"{d}/runs")[0])
    # While the hook hangs, writes go through and stay, in several bursts:
    # they make exactly one more run once this one is over.
    for value in ("two", "three", "four"):
        write_file(v.path("app", "hangs"), value)
        assert os.path.exists(f"/proc/{hook_pid}"), "the hook is still running"
        assert open(v.path("app", "hangs")).read() == value
        time.sleep(0.3)
    write_file(v.path("app", "fails"), "two")
    assert open(v.path("app", "fails")).read() == "two"
    assert v.get("app", "hangs") == b"four" and v.get("app", "fails") == b"two"
    # Killed at its timeout, with what it started; then one more run.
    child = int(lines(f"{d}/child")[0])
    assert wait_for(lambda: not os.path.exists(f"/proc/{child}"), 5), \
        "the hook's process group is killed at the timeout"
    runs = settle(f"{d}/runs", 2, timeout=10)
    assert wait_for(lambda: len([l for l in audit_lines(v) if "app/hangs" in l]) >= 2, 10)
    time.sleep(0.5)
    assert len(lines(f"{d}/runs")) == 2, f"a burst during a run makes one more: {runs}"
    hooks = audit_lines(v)
    assert any("app/fails" in l and "exit 3" in l for l in hooks), hooks
    assert any("app/hangs" in l and "timed out" in l for l in hooks), hooks
    assert "exit 3" in v.log() or "on_change" in v.log()


def test_hooks_fire_for_every_path(vault_factory, tmp_path):
    d = hook_dir()
    v = vault_factory(config=f"[instance app]\non_change = {RECORD.format(d=d)}\n"
                             "on_change_user = root\n")
    os.makedirs(v.path("app"), exist_ok=True)
    runs = f"{d}/runs"
    seen = 0

    def expect(what, key, event=None):
        nonlocal seen
        seen += 1
        assert wait_for(lambda: len(lines(runs)) >= seen, 10), f"no hook after {what}"
        last = lines(runs)[seen - 1].split()
        if key is None:     # the instance's own event: VAULTFS_KEY is empty
            assert last[2] == event and len(last) == 4, f"{what}: {last}"
        else:
            assert last[3] == key, f"{what}: {last}"

    v.set("app", "K", "v1")
    expect("vaultfs set", "K")
    backup = str(tmp_path / "b.db")
    assert v.cli("backup", backup).returncode == 0
    env = tmp_path / "in.env"
    env.write_text("IMPORTED=x\n")
    assert v.cli("import", "app", "--env", str(env)).returncode == 0
    expect("vaultfs import", "IMPORTED")
    v.set("app", "K", "v2")
    expect("vaultfs set", "K")
    assert v.cli("rollback", "app", "K", "1").returncode == 0
    expect("vaultfs rollback", "K")
    assert v.cli("rm", "app", "IMPORTED").returncode == 0
    expect("vaultfs rm", "IMPORTED")
    assert v.cli("undelete", "app", "IMPORTED").returncode == 0
    expect("vaultfs undelete", "IMPORTED")
    r = v.cli("restore", backup)
    assert r.returncode == 0, r.stderr.decode()
    expect("vaultfs restore", "IMPORTED")   # the backup had no IMPORTED: gone
    r = v.cli("rotate-key", "--instance", "app")
    assert r.returncode == 0, r.stderr.decode()
    expect("vaultfs rotate-key --instance", None, "rotated")
    for l in lines(runs):
        assert "v1" not in l.split()[1:3] and "v2" not in l


def test_a_template_whose_key_changed_runs_its_hook(vault_factory):
    """A hook on a rendered file runs when a key the template names
    changes (its rendering changed), and not for a key it doesn't name."""
    d = hook_dir()
    v = vault_factory(config=f"[instance app]\non_change.app_env = {RECORD.format(d=d)}\n"
                             "on_change_user = root\n")
    v.set("app", "DB_PASSWORD", "first")
    v.set("app", "OTHER", "x")
    r = v.cli("template", "set", "app", "app_env", input=b"P={{ DB_PASSWORD | env }}\n")
    assert r.returncode == 0, r.stderr.decode()
    runs = f"{d}/runs"
    settle(runs, 1)             # the template itself was written
    v.set("app", "OTHER", "y")
    time.sleep(1.0)
    assert len(lines(runs)) == 1, "a key the template does not name ran its hook"
    v.set("app", "DB_PASSWORD", "second")
    got = settle(runs, 2)
    assert len(got) == 2, got
    assert got[1].split()[2:4] == ["written", "app_env"], got[1]
    for l in got:
        assert "first" not in l and "second" not in l


def start_watch(v, *args):
    argv = [VAULTFS_BIN, "watch"] + v.base_opts() + list(args)
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=clean_env())
    line = p.stderr.readline().decode()
    assert "watching" in line, line + p.stderr.read().decode()
    return p


def busy_writer(v, n):
    p = v.path("app", "K")
    for i in range(n):
        r = run(["sh", "-c", f"echo {SECRET}-{i} > {p}"])
        assert r.returncode == 0
    final = int(os.getxattr(p, "user.vaultfs.version"))
    # Apart by more than watch's poll, or it sees only the end: K gone.
    time.sleep(0.2)
    os.rename(p, v.path("app", "K2"))
    time.sleep(0.2)
    os.unlink(v.path("app", "K2"))
    return final


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_watch_under_a_busy_writer(vault, fmt):
    os.makedirs(vault.path("app"), exist_ok=True)
    write_file(vault.path("app", "K"), "start")
    p = start_watch(vault, *(["--json"] if fmt == "json" else []), "app")
    final = []
    t = threading.Thread(target=lambda: final.append(busy_writer(vault, 40)))
    t.start()
    vault.set("app", "other", SECRET)
    t.join()
    time.sleep(0.5)
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=10)
    text = out.decode()
    assert SECRET not in text, "watch never prints a value"
    events = []
    for line in text.splitlines():
        if fmt == "json":
            e = json.loads(line)
            assert set(e) >= {"time", "instance", "key", "event", "version", "by"}
            events.append((e["key"], e["event"], e["version"], e["by"], e.get("from")))
        else:
            f = line.split()
            kv = dict(x.split("=", 1) for x in f[4:])
            events.append((f[2], f[3], int(kv.get("version", 0)),
                           int(kv["by"]) if "by" in kv else None, kv.get("from")))
    writes = [e for e in events if e[0] == "K" and e[1] == "written"]
    assert writes, events
    versions = [e[2] for e in writes]
    assert versions == sorted(versions), "versions only go up"
    assert versions[-1] == final[0], "the last write shows (bursts show as their end)"
    assert ("other", "created") in [(e[0], e[1]) for e in events]
    assert any(e[1] == "renamed" and e[0] == "K2" and e[4] == "K" for e in events), events
    assert any(e[0] == "K2" and e[1] == "deleted" and e[3] == 0 for e in events), events
    assert all(e[3] in (None, 0) for e in events), "root wrote everything"


def test_counted_reads_show_in_watch_but_run_no_hook(vault_factory):
    d = hook_dir()
    v = vault_factory(config=f"[instance app]\non_change = {RECORD.format(d=d)}\n"
                             "on_change_user = root\n")
    os.makedirs(v.path("app"), exist_ok=True)
    assert v.cli("set", "--max-reads", "2", "app", "T", input=SECRET).returncode == 0
    assert len(settle(f"{d}/runs", 1)) == 1
    p = start_watch(v, "--json", "app", "T")
    assert open(v.path("app", "T")).read() == SECRET
    time.sleep(0.5)
    p.send_signal(signal.SIGTERM)
    out = p.communicate(timeout=10)[0].decode()
    events = [json.loads(l) for l in out.splitlines()]
    assert [e["event"] for e in events] == ["counted"], events
    assert SECRET not in out
    assert len(lines(f"{d}/runs")) == 1, "a counted read is not a change of the value"


@pytest.mark.parametrize("text, why", [
    ("on_change.bad/name = true\n", "bad key name"),
    ("on_change = true\non_change = false\n", "a second on_change"),
    ("on_change.K = \n", "empty command"),
    ("on_change_user = no-such-user-here\n", "unknown user"),
    ("on_change_timeout = 0\n", "on_change_timeout"),
    ("on_change_timeout = 1e9\n", "on_change_timeout"),
    ("on_changes = x\n", "unknown setting"),
])
def test_bad_hook_settings_are_refused_with_file_and_line(vault_unmounted, text, why):
    v = vault_unmounted
    v.config = v.write_config("[instance app]\nmode = 0750\n" + text)
    r = v.cli("ls")
    err = r.stderr.decode()
    assert r.returncode != 0 and why in err and "vaultfs.ini:" in err, err


def test_a_daemon_that_gave_up_root_runs_hooks_as_itself(users, vault_factory):
    d = hook_dir()
    alice = users.name["alice"]
    v = vault_factory(config=f"[vault]\nuser = {alice}\n[instance app]\nmode = 0755\n"
                             f"on_change = {RECORD.format(d=d)}\n", mount=False)
    for p in v.db_files():
        if os.path.exists(p):
            os.chown(p, users.uid["alice"], -1)
    v.mount()
    os.makedirs(v.path("app"), exist_ok=True)
    write_file(v.path("app", "K"), SECRET)
    runs = settle(f"{d}/runs", 1)
    assert int(runs[0].split()[1]) == users.uid["alice"]
    v.unmount()
    # It can't honour another user: hooks are off, said so, writes go on.
    v.config = v.write_config(f"[vault]\nuser = {alice}\n[instance app]\nmode = 0755\n"
                              f"on_change = {RECORD.format(d=d)}\n"
                              f"on_change_user = {users.name['bob']}\n")
    v.mount()
    write_file(v.path("app", "K"), "again")
    time.sleep(1.0)
    assert len(lines(f"{d}/runs")) == 1
    assert "can't run hooks as" in v.log() and "hooks are off" in v.log()
    assert v.get("app", "K") == b"again"


def test_watch_refuses_what_it_cant_follow(vault):
    r = vault.cli("watch", "nosuch")
    assert r.returncode == 1 and b"no such instance: nosuch" in r.stderr
    r = vault.cli("watch", "bad/name")
    assert r.returncode == 2 and b"invalid instance name" in r.stderr
    r = vault.cli("watch", "a", "b", "c")
    assert r.returncode == 2


def test_a_key_hook_runs_for_its_key_only(vault_factory):
    d = hook_dir()
    v = vault_factory(config=f"[instance app]\non_change.tls_key = {RECORD.format(d=d)}\n"
                             "on_change_user = root\n")
    os.makedirs(v.path("app"), exist_ok=True)
    write_file(v.path("app", "other"), "x")
    write_file(v.path("app", "tls_key"), SECRET)
    runs = settle(f"{d}/runs", 1)
    assert len(runs) == 1 and runs[0].split()[3] == "tls_key", runs
    write_file(v.path("app", "other"), "y")
    time.sleep(1.0)
    assert len(lines(f"{d}/runs")) == 1, "another key's change runs no key hook"
    # Renamed away: a change of the key it watches.
    os.rename(v.path("app", "tls_key"), v.path("app", "tls_key.old"))
    runs = settle(f"{d}/runs", 2)
    assert runs[1].split()[2:4] == ["renamed", "tls_key.old"], runs


def test_an_instance_mount_beside_the_whole_one_runs_no_hook_twice(vault_factory):
    d = hook_dir()
    v = vault_factory(config=f"[instance app]\non_change = {RECORD.format(d=d)}\n"
                             "on_change_user = root\n")
    os.makedirs(v.path("app"), exist_ok=True)
    mnt2 = os.path.join(v.dir, "mnt-app")
    os.mkdir(mnt2)
    p = subprocess.Popen([VAULTFS_BIN, "mount", "-f"] + v.base_opts() +
                         ["--instance", "app", mnt2], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, env=clean_env())
    try:
        assert wait_for(lambda: os.path.ismount(mnt2), 10)
        write_file(os.path.join(mnt2, "K"), "through the container's mount")
        v.set("app", "K2", "and the CLI")
        runs = settle(f"{d}/runs", 1)
        assert len(runs) == 1, f"one run, by the whole vault's daemon: {runs}"
    finally:
        run(["fusermount3", "-u", mnt2])
        assert p.wait(timeout=10) == 0
