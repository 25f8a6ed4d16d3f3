"""Templates and apply: a file rendered from several keys at each open, and
several keys replaced in one transaction. Real mounts, real readers
(python-dotenv, docker, openssl), real other users."""
import errno
import os
import stat
import subprocess

import pytest

from conftest import oserror, read_file, run, wait_for, write_file
from test_docker import docker  # noqa: F401  (dockerd, as test_docker starts it)
from test_systemd_boot import machine  # noqa: F401  (systemd booted in nspawn)

# Values that break naive quoting: every one must come back byte for byte.
HOSTILE = {
    "SPACES": b"  two  leading and trailing  ",
    "QUOTES": b"it's a \"quoted\" 'mix'",
    "HASH": b"pa#ss # not a comment",
    "DOLLAR": b"$HOME $(id) `id` $1",
    "BACKSLASH": b"a\\nb\\tc\\\\d\\\"e",
    "EQUALS": b"a=b==c",
    "UNICODE": "caf\u00e9 \U0001f511 \u00fc".encode(),
    "TAB": b"a\tb",
    "MULTILINE": b"-----BEGIN KEY-----\nAAA+/=\n\"x\" 'y' $z\n-----END KEY-----\n",
    "EMPTY": b"",
    "NEWLINE_ONLY_END": b"ends with a newline\n",
}
# A single line: what docker's --env-file can carry at all.
DOCKER_HOSTILE = {k: v for k, v in HOSTILE.items() if b"\n" not in v}


def tset(v, inst, name, text):
    return v.cli("template", "set", inst, name, input=text)


def put_keys(v, inst, values):
    for k, val in values.items():
        v.set(inst, k, val)


def test_render_cli_and_mount_agree_and_the_file_is_read_only(vault):
    v = vault
    put_keys(v, "app", {"USER": b"bob", "PW": b"p w'\"$x"})
    src = (b"# made by vaultfs\nUSER={{ USER }}\nPW={{ PW | env }}\n"
           b"J={{PW|json}} S={{ PW | sh }} B={{ USER | base64 }} {not a tag}\n"
           b'{{ "{{" }} literal }}\n')
    r = tset(v, "app", "app.env", src)
    assert r.returncode == 0, r.stderr
    want = (b"# made by vaultfs\nUSER=bob\nPW=\"p w'\\\"$x\"\n"
            b"J=\"p w'\\\"$x\" S='p w'\\''\"$x' B=Ym9i {not a tag}\n"
            b"{{ literal }}\n")
    assert read_file(v.path("app", "app.env")) == want
    assert v.cli("render", "app", "app.env").stdout == want
    assert v.cli("template", "get", "app", "app.env").stdout == src
    # export says which keys are templates.
    import json
    keys = {k["name"]: k for k in json.loads(v.cli("export", "--json").stdout)
            ["instances"][0]["keys"]}
    assert keys["app.env"].get("template") is True and "template" not in keys["USER"]
    # cat, as a program sees it; and stat says the file is read-only.
    assert run(["cat", v.path("app", "app.env")]).stdout == want
    st = os.stat(v.path("app", "app.env"))
    assert stat.S_IMODE(st.st_mode) & 0o222 == 0
    assert st.st_size == 1 << 20, "the most a rendering can be: max_value_size"
    # Not even root writes or truncates it, by any route.
    assert oserror(open, v.path("app", "app.env"), "ab") == errno.EACCES
    r = run(["sh", "-c", f"echo x > {v.path('app', 'app.env')}"])
    assert r.returncode != 0 and b"Permission denied" in r.stderr
    assert oserror(os.truncate, v.path("app", "app.env"), 0) == errno.EACCES
    assert v.cli("template", "get", "app", "app.env").stdout == src
    # set refuses to turn a template into a value; the template stays.
    r = v.cli("set", "app", "app.env", input=b"x")
    assert r.returncode == 1 and b"is a template" in r.stderr
    assert read_file(v.path("app", "app.env")) == want
    # Each open renders the values current at that open.
    v.set("app", "USER", b"alice")
    assert b"USER=alice\n" in read_file(v.path("app", "app.env"))
    # A new source is a new version, kept in the history.
    assert tset(v, "app", "app.env", b"only {{ USER }}").returncode == 0
    assert read_file(v.path("app", "app.env")) == b"only alice"
    assert v.cli("get", "--version", "1", "app", "app.env").stdout == src
    r = v.cli("rollback", "app", "app.env", "1")
    assert r.returncode == 0, r.stderr
    assert read_file(v.path("app", "app.env")).startswith(b"# made by vaultfs\nUSER=alice")
    assert read_file(v.path("app", "app.env")).endswith(b"{{ literal }}\n")


def test_reader_across_a_worker_crash_gets_eio_never_other_values(vault):
    """A value's reader reads its version again from a new worker; a
    rendering has no version to read again, so its reader gets EIO, and a
    new open renders afresh."""
    import signal
    from conftest import serving_pid_changed
    v = vault
    put_keys(v, "app", {"A": b"a1"})
    assert tset(v, "app", "t", b"A={{ A }}").returncode == 0
    fd = os.open(v.path("app", "t"), os.O_RDONLY)
    try:
        assert os.pread(fd, 100, 0) == b"A=a1"
        v.set("app", "A", b"a2")
        old = v.worker_pid()
        os.kill(old, signal.SIGKILL)
        serving_pid_changed(v, old)
        assert oserror(os.pread, fd, 100, 0) == errno.EIO
    finally:
        os.close(fd)
    assert read_file(v.path("app", "t")) == b"A=a2"


SYNTAX_ERRORS = [
    (b"A={{ A", "1:3: unclosed {{"),
    (b"ok\nB={{ B | yaml }}\n", "2:10: unknown filter"),
    (b"\n\n  {{ }}", "3:6: expected a key name"),
    (b"{{ A B }}", "1:6: expected '|' or '}}'"),
    (b"{{ A |\n}}", "1:7: expected a filter name"),
]


@pytest.mark.parametrize("src,msg", SYNTAX_ERRORS)
def test_syntax_error_refused_with_line_and_column(vault, src, msg):
    r = tset(vault, "app", "t", src)
    assert r.returncode == 1
    assert f"(standard input):{msg}".encode() in r.stderr, r.stderr
    assert b"nothing was changed" in r.stderr
    assert not os.path.exists(vault.path("app", "t"))


def test_template_set_refuses_to_replace_a_secret(vault):
    vault.set("app", "TOKEN", b"v1")
    r = tset(vault, "app", "TOKEN", b"{{ X }}")
    assert r.returncode == 1 and b"is a secret, not a template" in r.stderr
    assert vault.get("app", "TOKEN") == b"v1"
    r = vault.cli("render", "app", "TOKEN")
    assert r.returncode == 1 and b"not a template" in r.stderr and b"v1" not in r.stdout


def test_missing_key_fails_the_open_naming_the_key(vault):
    v = vault
    put_keys(v, "app", {"PRESENT": b"present-value-1"})
    assert tset(v, "app", "conf", b"a={{ PRESENT }}\nb={{ ABSENT | env }}\n").returncode == 0
    # The open fails, nothing is read: "Required key not available".
    assert oserror(open, v.path("app", "conf"), "rb") == errno.ENOKEY
    r = run(["cat", v.path("app", "conf")])
    assert r.returncode == 1 and b"Required key not available" in r.stderr
    assert r.stdout == b""
    r = v.cli("render", "app", "conf")
    assert r.returncode == 1 and b"key ABSENT: no such key" in r.stderr
    assert r.stdout == b""
    log = v.log()
    assert "app/conf: key ABSENT: no such key" in log
    assert "present-value-1" not in log
    v.set("app", "ABSENT", b"now")
    assert read_file(v.path("app", "conf")) == b"a=present-value-1\nb=now\n"
    # A value a filter can't write fails the same way, naming key and filter.
    v.set("app", "ABSENT", b"two\nlines")
    assert tset(v, "app", "dock", b"X={{ ABSENT | docker }}").returncode == 0
    assert oserror(open, v.path("app", "dock"), "rb") == errno.EINVAL
    assert "app/dock: the value of ABSENT can't be written by | docker" in v.log()
    assert "two" not in v.log().replace("holds a line break", "")


def test_python_dotenv_reads_hostile_values_byte_for_byte(vault):
    dotenv = pytest.importorskip("dotenv", reason="Debian package python3-dotenv")
    put_keys(vault, "app", HOSTILE)
    src = "".join(f"{k}={{{{ {k} | env }}}}\n" for k in HOSTILE).encode()
    assert tset(vault, "app", ".env", src).returncode == 0
    path = vault.path("app", ".env")
    # The mount drops a single trailing newline of a one-line value (the
    # instance's newline policy): the template renders what `cat` shows.
    want = {k: vault.get("app", k).decode() for k in HOSTILE}
    assert want["MULTILINE"].endswith("-----\n")
    got = dotenv.dotenv_values(path)
    assert got == want
    # ${NAME} is python-dotenv's own expansion, done on quoted values too:
    # such a value reads back only with interpolate=False (README says so).
    vault.set("app", "BRACES", b"${HOME} and ${X:-y}")
    assert tset(vault, "app", "b.env", b"B={{ BRACES | env }}\n").returncode == 0
    assert dotenv.dotenv_values(vault.path("app", "b.env"), interpolate=False) == \
        {"B": "${HOME} and ${X:-y}"}


def test_python_dotenv_reads_random_hostile_values(vault):
    """Several hundred values drawn from the bytes dotenv quoting trips on,
    through one template, read back by python-dotenv."""
    import random
    dotenv = pytest.importorskip("dotenv", reason="Debian package python3-dotenv")
    rng = random.Random(1616)
    alphabet = ["\\", '"', "'", "$", "{", "}", "#", " ", "\n", "\t", "=", "a", "`",
                "\u00e9", "\\n", '\\"', "\\'"]
    values = {}
    while len(values) < 300:
        v = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        if v.endswith("\\"):
            continue        # refused by | env, see the test of refusals
        values["V%03d" % len(values)] = v.encode()
    env = os.path.join(vault.dir, "values.env")
    # Stored with import, which reads its own double-quoted form.
    with open(env, "wb") as f:
        for k, v in values.items():
            q = v.replace(b"\\", b"\\\\").replace(b'"', b'\\"').replace(b"$", b"\\$")
            f.write(k.encode() + b'="' + q + b'"\n')
    assert vault.cli("import", "app", "--env", env).returncode == 0
    src = "".join(f"{k}={{{{ {k} | env }}}}\n" for k in values).encode()
    assert tset(vault, "app", "r.env", src).returncode == 0
    # A one-line value loses one trailing newline (the newline policy), as
    # `cat` of the key shows it.
    want = {k: (v[:-1] if v.endswith(b"\n") and b"\n" not in v[:-1] else v).decode()
            for k, v in values.items()}
    got = dotenv.dotenv_values(vault.path("app", "r.env"), interpolate=False)
    assert got == want


def test_docker_run_env_file(vault, docker):
    put_keys(vault, "app", DOCKER_HOSTILE)
    names = sorted(DOCKER_HOSTILE)
    src = "".join(f"{k}={{{{ {k} | docker }}}}\n" for k in names).encode()
    assert tset(vault, "app", "docker.env", src).returncode == 0
    want = {k: vault.get("app", k) for k in names}
    # The container prints each variable between markers, as bytes.
    script = "".join(f'printf "<%s>" "${k}"; ' for k in names)
    code, out = docker.sh(script, "--env-file", vault.path("app", "docker.env"))
    assert code == 0, out
    got = out.encode()
    assert got == b"".join(b"<" + want[k] + b">" for k in names)
    # | env writes plain values so that docker reads them as well.
    vault.set("app", "PLAIN", b"plain-1.2:3/x@y")
    assert tset(vault, "app", "e.env", b"PLAIN={{ PLAIN | env }}\n").returncode == 0
    code, out = docker.sh('printf "<%s>" "$PLAIN"', "--env-file", vault.path("app", "e.env"))
    assert (code, out) == (0, "<plain-1.2:3/x@y>")


# -- access -------------------------------------------------------------------

ACCESS_CONFIG = """\
[instance shop]
owner = root
group = {team}
mode = 0755
"""


def test_template_access_rule(users, vault_factory):
    v = vault_factory(config=ACCESS_CONFIG.format(team=users.team))
    v.set("shop", "ROOT_ONLY", b"root-only-value")            # root 0600
    v.set("shop", "ALICE_KEY", b"alice-value")
    os.chown(v.path("shop", "ALICE_KEY"), users.uid["alice"], users.gid["alice"])
    os.chmod(v.path("shop", "ALICE_KEY"), 0o400)
    v.set("shop", "TEAM_KEY", b"team-value")
    os.chown(v.path("shop", "TEAM_KEY"), 0, users.team_gid)
    os.chmod(v.path("shop", "TEAM_KEY"), 0o440)

    def template(name, owner, mode, src):
        assert tset(v, "shop", name, src).returncode == 0
        os.chown(v.path("shop", name), users.uid[owner], users.gid[owner])
        os.chmod(v.path("shop", name), mode)

    # alice's template over her own key: bob reads it through the template
    # (the reader needs the template's permission only)...
    template("alice.env", "alice", 0o444, b"A={{ ALICE_KEY }}\n")
    assert users.try_open("bob", v.path("shop", "alice.env")) == "OK:A=alice-value\n"
    assert users.try_open("bob", v.path("shop", "ALICE_KEY")) == "EACCES"
    # The audit log says that bob read ALICE_KEY, and through which template.
    from test_audit import wait_entries
    rows = wait_entries(v, lambda rows: [r for r in rows if r["key"] == "ALICE_KEY" and
                                         r["uid"] == users.uid["bob"] and r["result"] == "ok"])
    via = [r for r in rows if r["key"] == "ALICE_KEY" and r["uid"] == users.uid["bob"] and
           r["result"] == "ok"]
    assert via[0]["op"] == "read" and via[0]["detail"] == "template alice.env", via
    assert [r for r in rows if r["key"] == "alice.env" and r["uid"] == users.uid["bob"]]
    # ...but never one she could not read herself, whoever reads it, root too.
    template("steal.env", "alice", 0o444, b"A={{ ALICE_KEY }}\nR={{ ROOT_ONLY }}\n")
    for who in ("alice", "bob"):
        assert users.try_open(who, v.path("shop", "steal.env")) == "EACCES"
    assert oserror(open, v.path("shop", "steal.env"), "rb") == errno.EACCES
    assert "shop/steal.env: key ROOT_ONLY: the template's owner may not read it" in v.log()
    assert "root-only-value" not in v.log() and "alice-value" not in v.log()
    # Group bits count for the owner's groups: alice is in the team, bob not.
    template("team-a.env", "alice", 0o444, b"T={{ TEAM_KEY }}")
    template("team-b.env", "bob", 0o444, b"T={{ TEAM_KEY }}")
    assert users.try_open("carol", v.path("shop", "team-a.env")) == "OK:T=team-value"
    assert users.try_open("carol", v.path("shop", "team-b.env")) == "EACCES"
    # The template's own mode bits still decide who reads it.
    template("private.env", "alice", 0o400, b"A={{ ALICE_KEY }}")
    assert users.try_open("alice", v.path("shop", "private.env")) == "OK:A=alice-value"
    assert users.try_open("bob", v.path("shop", "private.env")) == "EACCES"
    # The rule is checked at each open: alice loses her key, the file fails.
    os.chmod(v.path("shop", "ALICE_KEY"), 0o000)
    assert users.try_open("bob", v.path("shop", "alice.env")) == "EACCES"
    # Only `vaultfs template set` (the master key's holder) makes a template:
    # its owner can't write its source, and a value written through the
    # mount is never rendered, whatever it holds.
    assert users.try_open("alice", v.path("shop", "alice.env"), "w") == "EACCES"
    r = run(["sh", "-c", f"echo '{{{{ ROOT_ONLY }}}}' > {v.path('shop', 'mine.env')}"])
    assert r.returncode == 0
    assert read_file(v.path("shop", "mine.env")) == b"{{ ROOT_ONLY }}"


# -- apply ----------------------------------------------------------------------

def make_pair(workdir, tag):
    """A self-signed certificate and its key (PEM), openssl's own."""
    key = os.path.join(workdir, f"{tag}.key")
    crt = os.path.join(workdir, f"{tag}.crt")
    r = run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", crt,
             "-days", "2", "-subj", f"/CN={tag}"])
    assert r.returncode == 0, r.stderr
    return read_file(crt), read_file(key)


def bundle_matches(path):
    """openssl's answer: does the PEM bundle's certificate match its key?"""
    a = run(["openssl", "x509", "-noout", "-pubkey", "-in", path])
    b = run(["openssl", "pkey", "-pubout", "-in", path])
    assert a.returncode == 0 and b.returncode == 0, (a.stderr, b.stderr)
    return a.stdout == b.stdout


READER = r"""
import os, sys
path, stop, outdir, me, quota = sys.argv[1:6]
seen = {}
n = fails = 0
# Until this reader has its quota of reads and the applier has made its
# changes: counts, not time, so a busy machine makes the test slower,
# never weaker.
while n < int(quota) or not os.path.exists(stop):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        fails += 1
        continue
    n += 1
    if data not in seen:
        seen[data] = len(seen)
        with open(os.path.join(outdir, f"{me}-{seen[data]}.pem"), "wb") as f:
            f.write(data)
print(n, fails, len(seen))
"""


def test_apply_swaps_cert_and_key_together_under_readers(vault):
    v = vault
    work = os.path.join(v.dir, "pairs")
    os.mkdir(work, 0o700)
    pairs = [make_pair(work, t) for t in ("one", "two")]
    dirs = []
    for i, (crt, key) in enumerate(pairs):
        d = os.path.join(work, f"dir{i}")
        os.mkdir(d, 0o700)
        write_file(os.path.join(d, "TLS_CERT"), crt)
        write_file(os.path.join(d, "TLS_KEY"), key)
        dirs.append(d)
    assert v.cli("apply", "app", "--dir", dirs[0]).returncode == 1  # no instance yet
    v.set("app", "OTHER", b"x")
    r = v.cli("apply", "app", "--dir", dirs[0])
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"vaultfs: applied 2 keys to app in one transaction\n"
    assert tset(v, "app", "bundle.pem", b"{{ TLS_CERT }}{{ TLS_KEY }}").returncode == 0
    path = v.path("app", "bundle.pem")
    assert bundle_matches(path)
    # A mixed bundle is what openssl must catch (so the check means something).
    mixed = os.path.join(work, "mixed.pem")
    write_file(mixed, pairs[0][0] + pairs[1][1])
    assert not bundle_matches(mixed)

    stop = os.path.join(work, "stop")
    outdir = os.path.join(work, "seen")
    os.mkdir(outdir)
    readers = [subprocess.Popen(["/usr/bin/python3", "-c", READER, path, stop, outdir,
                                 str(i), "1000"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
               for i in range(3)]
    # apply alternates the pairs for as long as any reader reads, and at
    # least 20 times; then tells them they may stop at their quota.
    applies = 0
    while applies < 20 or any(p.poll() is None for p in readers):
        r = v.cli("apply", "app", "--dir", dirs[(applies + 1) % 2])
        assert r.returncode == 0, r.stderr
        applies += 1
        if applies == 20:
            write_file(stop, b"")
    total = failed = 0
    for p in readers:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        n, fails, _ = map(int, out.split())
        total += n
        failed += fails
    print(f"{total} reads during {applies} applies, {len(os.listdir(outdir))} contents seen")
    assert applies >= 20
    assert total >= 3000, f"only {total} reads during {applies} applies"
    assert failed == 0
    # Every distinct content any reader saw is one of the two whole pairs,
    # and openssl agrees that its certificate matches its key.
    wanted = {crt + key for crt, key in pairs}
    seen = sorted(os.listdir(outdir))
    assert seen
    for name in seen:
        p = os.path.join(outdir, name)
        assert read_file(p) in wanted, f"{name}: a mix of the two pairs"
        assert bundle_matches(p), name
    assert {read_file(os.path.join(outdir, n)) for n in seen} == wanted


def test_render_command_sees_whole_pairs_during_apply(vault):
    """vaultfs render, as the mount, reads one state: run while apply
    alternates the pairs, every output is a whole pair."""
    import threading
    v = vault
    work = os.path.join(v.dir, "pairs")
    os.mkdir(work, 0o700)
    pairs = [(b"C1-" + b"c" * 3000, b"K1-" + b"k" * 3000), (b"C2-" + b"d" * 10, b"K2-")]
    dirs = []
    for i, (crt, key) in enumerate(pairs):
        d = os.path.join(work, f"dir{i}")
        os.mkdir(d, 0o700)
        write_file(os.path.join(d, "TLS_CERT"), crt)
        write_file(os.path.join(d, "TLS_KEY"), key)
        dirs.append(d)
    v.set("app", "X", b"x")
    assert v.cli("apply", "app", "--dir", dirs[0]).returncode == 0
    assert tset(v, "app", "b", b"{{ TLS_CERT }}|{{ TLS_KEY }}").returncode == 0
    stop = threading.Event()
    applied = []

    def applier():
        i = 1
        while not stop.is_set():
            assert v.cli("apply", "app", "--dir", dirs[i % 2]).returncode == 0
            applied.append(i)
            i += 1
    t = threading.Thread(target=applier)
    t.start()
    outs = []
    try:
        # Counts, not time: at least 60 renders over at least 10 applies.
        while len(outs) < 60 or len(applied) < 10:
            r = v.cli("render", "app", "b")
            assert r.returncode == 0, r.stderr
            outs.append(r.stdout)
    finally:
        stop.set()
        t.join()
    wanted = {c + b"|" + k for c, k in pairs}
    assert all(o in wanted for o in outs)
    assert len(applied) >= 10


def test_apply_is_all_or_nothing(vault):
    v = vault
    put_keys(v, "app", {"A": b"a1", "B": b"b1"})
    assert tset(v, "app", "t", b"{{A}}/{{B}}").returncode == 0
    env = os.path.join(v.dir, "in.env")
    write_file(env, "A=a2\nB\n")               # line 2 has no '='
    r = v.cli("apply", "app", "--env", env)
    assert r.returncode == 1 and b"nothing was changed" in r.stderr
    assert read_file(v.path("app", "t")) == b"a1/b1"
    write_file(env, "A=a2\nt=not-a-template\n")
    r = v.cli("apply", "app", "--env", env, "--any-name")
    assert r.returncode == 1 and b"app/t is a template" in r.stderr
    assert read_file(v.path("app", "t")) == b"a1/b1"
    write_file(env, "A=a2\nB='b 2'\n")
    r = v.cli("apply", "app", "--env", env)
    assert r.returncode == 0, r.stderr
    assert read_file(v.path("app", "t")) == b"a2/b 2"
    # Keys it does not name stay.
    assert v.get("app", "A") == b"a2" and v.cli("template", "get", "app", "t").returncode == 0


def test_import_names_the_template_it_will_not_replace(vault):
    v = vault
    put_keys(v, "app", {"A": b"a1"})
    assert tset(v, "app", "t", b"{{A}}").returncode == 0
    env = os.path.join(v.dir, "in.env")
    write_file(env, "A=a2\nt=not-a-template\n")
    r = v.cli("import", "app", "--env", env, "--any-name")
    # The user is told which key is a template, not strerror(EMEDIUMTYPE).
    assert r.returncode == 1, r.stderr
    assert b"app/t is a template" in r.stderr and b"nothing was imported" in r.stderr
    assert b"medium" not in r.stderr
    assert v.get("app", "A") == b"a1", "all or nothing: A is unchanged"
    assert read_file(v.path("app", "t")) == b"a1"


def test_apply_refuses_a_hostile_directory(vault):
    v = vault
    v.set("app", "A", b"kept")
    d = os.path.join(v.dir, "hostile")
    os.mkdir(d, 0o755)
    write_file(os.path.join(d, "A"), b"new")
    os.symlink("/etc/shadow", os.path.join(d, "SHADOW"))
    os.mkfifo(os.path.join(d, "FIFO"))
    r = v.cli("apply", "app", "--dir", d, timeout=20)
    assert r.returncode == 1
    err = r.stderr.decode()
    assert "SHADOW: a symbolic link that leads outside the directory" in err
    assert "FIFO: a fifo" in err
    assert "nothing was changed" in err
    assert v.get("app", "A") == b"kept"
    os.unlink(os.path.join(d, "SHADOW"))
    os.unlink(os.path.join(d, "FIFO"))
    with open(os.path.join(d, "HUGE"), "wb") as f:
        f.truncate(64 << 20)
    r = v.cli("apply", "app", "--dir", d)
    assert r.returncode == 1 and b"HUGE: larger than max_value_size" in r.stderr
    assert v.get("app", "A") == b"kept"


# -- systemd's EnvironmentFile= ---------------------------------------------------

def test_systemd_environment_file_reads_hostile_values(machine):
    """A unit under a real systemd (the nspawn machine of test_systemd_boot)
    takes EnvironmentFile= straight from the mount, and gets every value."""
    import base64
    m = machine
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    src = "".join(f"{k}={{{{ {k} | env }}}}\n" for k in HOSTILE).encode()
    script = ("set -e; V=/usr/local/bin/vaultfs; C='--config /etc/vaultfs/vaultfs.ini'; "
              "export VAULTFS_KEY=$(systemd-creds decrypt --name=vaultfs.key "
              "/etc/vaultfs/master.key.cred -); ")
    for k, val in HOSTILE.items():
        script += f"echo '{b64(val)}' | base64 -d | $V set $C billing {k}; "
    script += f"echo '{b64(src)}' | base64 -d | $V template set $C billing app.env; "
    script += "systemctl start vaultfs"
    m.ok(script)
    assert wait_for(lambda: m.sh("test -r /run/vault/billing/app.env").returncode == 0, 30)
    r = m.sh("systemd-run --quiet --wait --pipe -p EnvironmentFile=/run/vault/billing/app.env "
             "/usr/bin/env -0")
    assert r.returncode == 0, r.stderr.decode()
    env = dict(item.split(b"=", 1) for item in r.stdout.split(b"\0") if b"=" in item)
    for k in HOSTILE:
        want = m.sh(f"VAULTFS_KEY=$(systemd-creds decrypt --name=vaultfs.key "
                    f"/etc/vaultfs/master.key.cred -) /usr/local/bin/vaultfs get "
                    f"--config /etc/vaultfs/vaultfs.ini billing {k}").stdout
        assert env.get(k.encode()) == want, k


def test_rendering_longer_than_max_value_size_fails_whole(vault_factory):
    v = vault_factory(config="[vault]\nmax_value_size = 100\n")
    v.set("app", "A", b"x" * 60)
    assert tset(v, "app", "twice", b"{{ A }}{{ A }}").returncode == 0
    assert oserror(open, v.path("app", "twice"), "rb") == errno.EFBIG
    assert "app/twice: the rendered file would be larger than max_value_size" in v.log()
    assert tset(v, "app", "once", b"{{ A }}").returncode == 0
    assert read_file(v.path("app", "once")) == b"x" * 60


def test_sh_and_json_filters_read_back_by_a_shell_and_python(vault):
    """| sh output sourced by dash and bash, | json output parsed by Python's
    json module: every hostile value comes back as stored."""
    import json
    put_keys(vault, "app", HOSTILE)
    names = sorted(HOSTILE)
    want = {k: vault.get("app", k) for k in names}
    src = "".join(f"{k}={{{{ {k} | sh }}}}\n" for k in names).encode()
    assert tset(vault, "app", "vars.sh", src).returncode == 0
    script = ". " + vault.path("app", "vars.sh") + "; " + \
        "".join(f'printf "<%s>" "${k}"; ' for k in names)
    for shell in ("/bin/sh", "/bin/bash"):
        r = run([shell, "-c", script])
        assert r.returncode == 0, r.stderr
        assert r.stdout == b"".join(b"<" + want[k] + b">" for k in names), shell
    src = ("{" + ", ".join(f'"{k}": {{{{ {k} | json }}}}' for k in names) + "}\n").encode()
    assert tset(vault, "app", "conf.json", src).returncode == 0
    got = json.loads(read_file(vault.path("app", "conf.json")))
    assert got == {k: v.decode() for k, v in want.items()}
    # bash's `.` reads st_size bytes: stat gives the most a rendering can
    # be, so a longer value is sourced whole the next time too.
    vault.set("app", "SPACES", b"y" * 5000)
    r = run(["/bin/bash", "-c", script])
    assert r.returncode == 0 and b"<" + b"y" * 5000 + b">" in r.stdout
    assert r.stdout.endswith(b"<" + want["UNICODE"] + b">")


# -- whoever can write the database ------------------------------------------------

def _sql(path, stmt):
    import sqlite3
    conn = sqlite3.connect(path, timeout=10)
    try:
        conn.execute(stmt)
        conn.commit()
    finally:
        conn.close()


def test_flag_flipped_in_the_database_is_refused(vault_factory):
    """Whoever can write vault.db can't make a secret a template (to read
    keys through it) nor a template a plain value: the row's tag covers its
    flags, so both are refused with EIO, and backup/restore keeps them."""
    v = vault_factory(config="[vault]\nattr_timeout = 0\n")
    put_keys(v, "app", {"K": b"k-value", "SECRET": b"s-value"})
    assert tset(v, "app", "t", b"K={{ K }}").returncode == 0
    backup = os.path.join(v.dir, "backup.db")
    assert v.cli("backup", backup).returncode == 0
    _sql(v.db, "UPDATE secrets SET flags = flags | 2 WHERE name = 'K'")
    assert oserror(open, v.path("app", "K"), "rb") == errno.EIO
    _sql(v.db, "UPDATE secrets SET flags = flags & ~2 WHERE name = 't'")
    assert oserror(open, v.path("app", "t"), "rb") == errno.EIO
    r = v.cli("render", "app", "t")
    assert r.returncode == 1 and r.stdout == b""
    assert "k-value" not in v.log() and "s-value" not in v.log()
    # A backup made before brings both back, the template a template.
    v.unmount()
    r = v.cli("restore", backup)
    assert r.returncode == 0, r.stderr
    v.mount()
    assert read_file(v.path("app", "t")) == b"K=k-value"
    assert read_file(v.path("app", "K")) == b"k-value"
