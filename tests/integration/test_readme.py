"""The README's quick start, run as written: `make demo`, then every command
it prints. `make check` is only checked to exist: running it here would run
this test again. The demo goes to a temporary directory and mount point
(DEMO_DIR, DEMO_MNT) so that it never touches a real /run/vault."""
import os
import re
import subprocess

import pytest

from conftest import force_unmount, run, wait_for
from test_ops import REPO, make_env


def readme_section(title):
    with open(os.path.join(REPO, "README.md")) as f:
        text = f.read()
    m = re.search(rf"^## {re.escape(title)}.*?$(.*?)(?=^## )", text, re.M | re.S)
    assert m, f"README has no section '{title}'"
    return m.group(1)


def code_blocks(section):
    """Indented code blocks: lists of command lines, comments stripped."""
    blocks, cur = [], []
    for line in section.splitlines():
        if line.startswith("    "):
            cur.append(line[4:].split("  #")[0].rstrip())
        elif line.strip() == "" and cur:
            continue
        elif cur:
            blocks.append(cur)
            cur = []
    if cur:
        blocks.append(cur)
    return blocks


def test_quick_start_commands_work_as_written(tmp_path):
    blocks = code_blocks(readme_section("Quick start"))
    assert blocks[0] == ["make demo", "make check"], blocks[0]
    readme_cmds = blocks[1]

    demo_dir, mnt = tmp_path / "demo", tmp_path / "mnt"
    os.chmod(tmp_path, 0o755)
    try:
        r = run(["make", "--no-print-directory", "-C", REPO, "demo",
                 f"DEMO_DIR={demo_dir}", f"DEMO_MNT={mnt}"], env=make_env(), timeout=600)
        assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
        assert os.path.ismount(mnt), "make demo must leave the vault mounted"
        out = r.stdout.decode()
        printed = [l[2:].split("  #")[0].rstrip() for l in
                   out.split("A demo vault is mounted", 1)[1].splitlines()[1:]
                   if l.startswith("  ")]
        assert [c.replace("/run/vault", str(mnt)) for c in readme_cmds] == printed, \
            "the README's quick start and what make demo prints differ"

        results = []
        for cmd in printed:
            p = subprocess.run(["/bin/sh", "-c", cmd], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, timeout=30)
            assert p.returncode == 0, f"`{cmd}` failed: {p.stderr.decode()}"
            results.append((cmd, p.stdout.decode()))
            if cmd.startswith("cat "):
                assert p.stdout == b"hello from vaultfs"
            if cmd.startswith("echo "):
                r = run([os.path.join(REPO, "vaultfs"), "get", "--config",
                         str(demo_dir / "demo.ini"), "--db", str(demo_dir / "vault.db"),
                         "--key-file", str(demo_dir / "master.key"), "demo", "API_KEY"])
                assert r.stdout == b"sk-test-123"
            if cmd.startswith("rm "):
                # still mounted, and the key is gone from it
                assert os.path.ismount(mnt)
                assert "API_KEY" not in os.listdir(mnt / "demo")
                assert not os.path.exists(mnt / "demo" / "API_KEY")
        assert "GREETING" in results[0][1]
        assert any(c.startswith("rm ") for c, _ in results)
        assert wait_for(lambda: not os.path.ismount(mnt), 10), "fusermount3 -u must unmount"
    finally:
        force_unmount(str(mnt))


def test_make_check_is_a_target():
    r = run(["make", "-n", "-C", REPO, "check"], env=make_env())
    assert r.returncode == 0, r.stderr.decode()
    assert b"pytest" in r.stdout or b"check-integration" in r.stdout
