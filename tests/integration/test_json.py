"""Every --json output (status, export, audit) is read back by a JSON parser,
whatever the names and texts in it: quotes, backslashes, control characters,
UTF-8, and bytes that are not UTF-8."""
import json
import os
import time

from conftest import VAULTFS_BIN, run
from test_doctor import doctor, verdict

ODD_DIR = 'mnt "quoted" \\ back é✓'


def odd_mount(vault_factory):
    """A vault mounted on a directory whose name needs escaping in JSON and
    in /proc/self/mountinfo (a space is \\040 there)."""
    v = vault_factory(mount=False)
    v.mnt = os.path.join(v.dir, ODD_DIR)
    os.mkdir(v.mnt, 0o755)
    v.mount()
    return v


def test_status_json_with_two_mounts_and_an_odd_name(vault_factory):
    plain = vault_factory()
    odd = odd_mount(vault_factory)
    r = run([VAULTFS_BIN, "status", "--json"])
    assert r.returncode == 0, r.stderr
    mounts = {s["mountpoint"]: s for s in json.loads(r.stdout)}
    assert mounts[odd.mnt]["database"] == odd.db
    assert mounts[plain.mnt]["database"] == plain.db
    assert mounts[odd.mnt]["worker_pid"] == odd.worker_pid()
    r = run([VAULTFS_BIN, "status", "--json", odd.mnt])
    (only,) = json.loads(r.stdout)
    assert only["mountpoint"] == odd.mnt


def test_doctor_names_an_odd_mount_point_as_it_is(vault_factory):
    """doctor reads the mount point from mountinfo, where it is escaped."""
    odd = odd_mount(vault_factory)
    code, checks = doctor(odd)
    assert code == 0, checks
    assert verdict(checks, f"mount {odd.mnt}:")[0] == "secure"


def test_export_json_keeps_every_text(vault):
    os.mkdir(vault.path("app"))
    with open(vault.path("app", "K"), "w") as f:
        f.write("v")
    text = 'line "two" \\ back, tab-free é✓ 日本 {"not": "json"}'
    os.setxattr(vault.path("app", "K"), "user.description", text.encode())
    os.setxattr(vault.path("app", "K"), "user.type", b"api/token+v2")
    for args in (("export", "--json"), ("export", "--json", "app")):
        r = vault.cli(*args)
        assert r.returncode == 0, r.stderr
        data = json.loads(r.stdout.decode("utf-8"))
        (inst,) = data["instances"]
        (key,) = inst["keys"]
        assert (inst["name"], key["name"]) == ("app", "K")
        assert key["description"] == text
        assert key["type"] == "api/token+v2"


def test_audit_json_of_a_process_named_in_bytes_not_utf8(vault):
    """A process picks its own name, any bytes: audit --json stays valid
    UTF-8 JSON, with the name's other bytes still there."""
    os.mkdir(vault.path("app"))
    with open(vault.path("app", "K"), "w") as f:
        f.write("v")
    script = ("import ctypes, sys\n"
              "ctypes.CDLL(None).prctl(15, b'ev\\xff\\xfeil\\x01\"x', 0, 0, 0)\n"
              "open(sys.argv[1], 'rb').read()\n")
    r = run(["/usr/bin/python3", "-c", script, vault.path("app", "K")])
    assert r.returncode == 0, r.stderr
    for _ in range(100):
        r = vault.cli("audit", "--json", "--key", "K")
        rows = [json.loads(line) for line in r.stdout.decode("utf-8").splitlines()]
        odd = [e["comm"] for e in rows if e["op"] == "read" and e["comm"].startswith("ev")]
        if odd:
            break
        time.sleep(0.1)
    assert odd, rows
    # Each byte that is not UTF-8 is U+FFFD; the rest is as the process set it.
    assert odd[0] == 'ev\ufffd\ufffdil\x01"x', odd


def test_audit_json_of_every_kind_of_event(vault):
    os.mkdir(vault.path("app"))
    with open(vault.path("app", "K"), "w") as f:
        f.write("v")
    with open(vault.path("app", "K")) as f:
        f.read()
    os.rename(vault.path("app", "K"), vault.path("app", "L"))
    os.chmod(vault.path("app", "L"), 0o600)
    os.unlink(vault.path("app", "L"))
    r = vault.cli("audit", "--json")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.decode("utf-8").splitlines()]
    ops = {row["op"] for row in rows}
    assert {"create", "write", "read", "rename", "chmod", "delete"} <= ops, ops
