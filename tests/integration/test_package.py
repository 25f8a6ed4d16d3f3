"""The Debian package (make deb) in a clean root: this machine's OS booted
with systemd-nspawn on a throw-away overlay, the package installed with
apt, upgraded under a reader that must never fail, removed and purged
without touching the vault or its key."""
import os
import shutil
import tempfile

import pytest

from conftest import wait_for
from test_ops import make
from test_systemd_boot import Machine

NEWER = "0.1.0+test1"

SETUP = r"""
set -e
mkdir -p -m 0700 /etc/vaultfs /var/lib/vaultfs
cd /etc/vaultfs
vaultfs keygen --out master.key
vaultfs init --db /var/lib/vaultfs/vault.db --key-file master.key
cat > vaultfs.ini <<END
[vault]
db = /var/lib/vaultfs/vault.db
[instance billing]
mode = 0755
secret_mode = 0644
END
printf 'sk-pkg-1\n' | vaultfs set --config vaultfs.ini --key-file master.key billing API_KEY
systemd-creds encrypt --name=vaultfs.key master.key master.key.cred 2>/dev/null
shred -u master.key
"""

READER = r"""
rm -f /run/stop-reader /run/reader.out /run/reader.bad
( n=0; bad=0
  while [ ! -e /run/stop-reader ]; do
    v=$(cat /run/vault/billing/API_KEY 2>&1)
    if [ "$v" = sk-pkg-1 ]; then n=$((n+1)); else bad=$((bad+1)); echo "BAD: $v" >> /run/reader.bad; fi
    echo "reads=$n bad=$bad" > /run/reader.tmp && mv /run/reader.tmp /run/reader.out
  done ) >/dev/null 2>&1 &
"""


def counts(m):
    out = m.sh("cat /run/reader.out").stdout.decode().split()
    return dict(kv.split("=") for kv in out) if out else {"reads": "0", "bad": "0"}


def progress(m):
    start = int(counts(m)["reads"])
    assert wait_for(lambda: int(counts(m)["reads"]) >= start + 3, 30), counts(m)


@pytest.fixture(scope="module")
def debs():
    for tool in ("dpkg-buildpackage", "dh", "lintian"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is not installed (as root, make deb installs dpkg-dev, "
                        "debhelper and lintian)")
    out = tempfile.mkdtemp(prefix="vaultfs-debs-", dir="/var/tmp")
    try:
        for version, sub in (("", "old"), (NEWER, "new")):
            r = make("deb", f"DEB_DIR={out}/{sub}", f"DEB_VERSION={version}", timeout=600)
            assert r.returncode == 0, (r.stdout + r.stderr).decode()[-3000:]
        os.makedirs(f"{out}/all")
        for sub in ("old", "new"):
            for f in os.listdir(f"{out}/{sub}"):
                if f.endswith(".deb") and "dbgsym" not in f:
                    shutil.copy(f"{out}/{sub}/{f}", f"{out}/all/{f}")
        yield f"{out}/all"
    finally:
        shutil.rmtree(out, ignore_errors=True)


@pytest.fixture(scope="module")
def machine(debs):
    for tool in ("systemd-nspawn", "nsenter", "systemd-creds"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is not installed")
    base = tempfile.mkdtemp(prefix="vaultfs-pkg-", dir="/var/tmp")
    m = Machine(base)
    try:
        err = m.boot([(debs, "/debs")])
        if err:
            pytest.skip(err)
        yield m
    finally:
        m.shutdown()
        shutil.rmtree(base, ignore_errors=True)


def worker_of(m, main):
    return m.sh(f"pgrep -P {main} -f ' mount --worker='").stdout.decode().strip()


def test_install_upgrade_remove(machine):
    m = machine
    old, new = "/debs/vaultfs_0.1.0_amd64.deb", f"/debs/vaultfs_{NEWER}_amd64.deb"
    # The machine is a copy of this one: a vaultfs installed by hand in
    # /usr/local would shadow the package's.
    m.ok("rm -f /usr/local/bin/vaultfs /usr/local/lib/systemd/system/vaultfs*.service; "
         "systemctl daemon-reload")
    m.ok(f"DEBIAN_FRONTEND=noninteractive apt-get install -y -q {old}")
    assert m.ok("command -v vaultfs").strip() == "/usr/bin/vaultfs"
    m.ok("test -e /usr/share/man/man8/vaultfs.8.gz && test -e /usr/share/man/man5/vaultfs.ini.5.gz"
         " && test -e /usr/lib/systemd/system/vaultfs@.service")
    assert "/etc/vaultfs/vaultfs.ini" in m.ok("cat /var/lib/dpkg/info/vaultfs.conffiles")
    # Nothing enabled or started by surprise.
    assert m.sh("systemctl is-enabled vaultfs.service").stdout.decode().strip() == "disabled"
    assert m.sh("systemctl is-active vaultfs.service").stdout.decode().strip() == "inactive"
    # The admin's own config from here on: a changed conffile.
    m.ok(SETUP)
    m.ok("systemctl start vaultfs.service")
    try:
        assert m.ok("cat /run/vault/billing/API_KEY") == "sk-pkg-1"
        main = m.ok("systemctl show -p MainPID --value vaultfs").strip()
        worker = worker_of(m, main)
        m.ok(READER)
        progress(m)
        m.ok("DEBIAN_FRONTEND=noninteractive apt-get install -y -q "
             f"-o Dpkg::Options::=--force-confold {new}")
        assert m.ok("dpkg-query -W -f '${Version}' vaultfs") == NEWER
        # The upgrade handed the mount over: the same holder, a new worker
        # running the new /usr/bin/vaultfs, and no failed read.
        assert m.ok("systemctl show -p MainPID --value vaultfs").strip() == main
        new_worker = worker_of(m, main)
        assert new_worker and new_worker != worker, (worker, new_worker)
        assert m.ok(f"stat -L -c %i /proc/{new_worker}/exe") == \
            m.ok("stat -c %i /usr/bin/vaultfs")
        progress(m)
        m.ok("touch /run/stop-reader")
        assert counts(m)["bad"] == "0", m.sh("cat /run/reader.bad").stdout.decode()
        assert "[instance billing]" in m.ok("cat /etc/vaultfs/vaultfs.ini"), "conffile kept"
    finally:
        m.sh("touch /run/stop-reader; systemctl stop vaultfs.service")
    # Removing and purging never touch the vault or its key.
    m.ok("DEBIAN_FRONTEND=noninteractive apt-get purge -y -q vaultfs")
    assert m.sh("command -v vaultfs").returncode != 0
    m.ok("test -s /var/lib/vaultfs/vault.db && test -s /etc/vaultfs/master.key.cred")
    assert m.sh("pgrep -f '[v]aultfs mount'").returncode != 0
