"""vaultfs import: dotenv files and secrets directories, all or nothing."""
import os
import pathlib
import shutil
import socket

from conftest import read_file, write_file

DOTENV = r"""# a comment, then a blank line

export EXPORTED=from-export
PLAIN=plain value   # a comment after a blank
NOSPACE=a#b
SPACED = around equals
EMPTY=
EQUALS=a=b=c
SINGLE='literal \n $HOME "x" # not a comment'
DOUBLE="tab\there \"quoted\" back\\slash \$HOME # kept"
UNKNOWN_ESCAPE="\q"
PEM="-----BEGIN KEY-----
line two
-----END KEY-----"
AFTER_PEM=still-read  
"""

WANT = {
    "EXPORTED": b"from-export",
    "PLAIN": b"plain value",
    "NOSPACE": b"a#b",
    "SPACED": b"around equals",
    "EMPTY": b"",
    "EQUALS": b"a=b=c",
    "SINGLE": b'literal \\n $HOME "x" # not a comment',
    "DOUBLE": b'tab\there "quoted" back\\slash $HOME # kept',
    "UNKNOWN_ESCAPE": b"\\q",
    "PEM": b"-----BEGIN KEY-----\nline two\n-----END KEY-----",
    "AFTER_PEM": b"still-read",
}


def test_dotenv_edge_cases(vault):
    env = os.path.join(vault.dir, "app.env")
    write_file(env, DOTENV)
    r = vault.cli("import", "app", "--env", env)
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout == b"vaultfs: imported 11 keys into app (11 new, 0 updated)\n"
    assert sorted(os.listdir(vault.path("app"))) == sorted(WANT)
    for k, want in WANT.items():
        assert read_file(vault.path("app", k)) == want, k
    assert read_file(vault.path("app", "PEM")) == WANT["PEM"]
    # Importing again makes new versions, and says so.
    write_file(env, "PLAIN=second\r\nCRLF='x'\r\n")
    r = vault.cli("import", "app", "--env", env)
    assert r.returncode == 0 and b"(1 new, 1 updated)" in r.stdout
    assert read_file(vault.path("app", "PLAIN")) == b"second"
    assert read_file(vault.path("app", "CRLF")) == b"x"
    assert vault.cli("get", "--version", "1", "app", "PLAIN").stdout == b"plain value"


def test_dotenv_problems_reported_nothing_imported(vault_unmounted):
    """Each problem is one line number and a reason: the user sees where to
    look, and no byte of the file (a wrong name may be a pasted token)."""
    v = vault_unmounted
    v.set("app", "KEEP", "old")
    text = ("GOOD=sk-secret-good\n"          # 1
            "bad name=sk-secret-1\n"         # 2
            "sk-secret-no-equals\n"          # 3
            "GOOD=sk-secret-again\n"         # 4
            "\u00dcBER=sk-secret-2\n"         # 5
            "KEEP=new\n"                     # 6
            "Q='x' trailing\n"               # 7
            "sk_live_51H8xYz/AbCdEf+GhIjKl=\n"   # 8: a token, and a '/'
            "sk-live-abcdEFGH12345=\n"       # 9: a token that could be a name
            "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC=\n"  # 10: a PEM body line
            "OPEN=\"sk-secret-unterminated\n"
            "MORE=1\n")
    r = v.cli("import", "app", "--env", "-", input=text)
    assert r.returncode == 1
    err = r.stderr.decode()
    not_a_name = ("not a variable name (want a letter or _, then letters, digits, "
                  "_ . -; at most 128)")
    token = "the name looks like secret material, not a variable name (--any-name takes it)"
    assert f"(standard input):2: {not_a_name}" in err, err
    assert "(standard input):3: no '=' (want NAME=VALUE)" in err
    assert "(standard input):4: the name is set again (first on line 1)" in err
    assert f"(standard input):5: {not_a_name}" in err
    assert "(standard input):7: unexpected text after the closing quote" in err
    assert f"(standard input):8: {not_a_name}" in err
    assert f"(standard input):9: {token}" in err
    assert f"(standard input):10: {token}" in err
    assert "(standard input):11: unterminated \" quote" in err
    assert err.rstrip().endswith("vaultfs: nothing was imported")
    for leak in ("sk-", "sk_", "GOOD", "bad name", "BER", "OPEN", "MIIE", "abcd", "51H8"):
        assert leak not in err, f"{leak!r} quoted in an error:\n{err}"
    assert v.cli("ls", "app").stdout == b"KEEP\n", "nothing half-imported"
    assert v.get("app", "KEEP") == b"old"


def test_dotenv_any_name_takes_odd_names(vault):
    """--any-name is the way to import names that look like tokens (on
    purpose); names vaultfs can't store are still refused."""
    r = vault.cli("import", "app", "--env", "-", input="sk-live-abcdEFGH12345=v\n")
    assert r.returncode == 1 and os.listdir(vault.path()) == []
    r = vault.cli("import", "app", "--any-name", "--env", "-",
                  input="sk-live-abcdEFGH12345=v\n")
    assert r.returncode == 0, r.stderr.decode()
    assert read_file(vault.path("app", "sk-live-abcdEFGH12345")) == b"v"
    r = vault.cli("import", "app", "--any-name", "--env", "-", input="a/b=v\n")
    assert r.returncode == 1
    assert b"1: invalid key name (want 1-255 of A-Z a-z 0-9 . _ -)" in r.stderr


def test_dotenv_value_too_large_nothing_imported(vault_factory):
    v = vault_factory(config="[vault]\nmax_value_size = 16\n", mount=False)
    r = v.cli("import", "app", "--env", "-", input="A=small\nB=" + "x" * 17 + "\n")
    assert r.returncode == 1
    assert b"B: larger than max_value_size (16 bytes); nothing was imported" in r.stderr
    assert v.cli("ls", "app").stdout == b""


def test_import_secrets_directory_docker_and_kubernetes(vault, tmp_path):
    docker = tmp_path / "run-secrets"
    docker.mkdir()
    (docker / "DB_PASSWORD").write_bytes(b"pw\n")
    (docker / "TLS_KEY").write_bytes(b"-----BEGIN-----\nabc\n-----END-----\n")
    r = vault.cli("import", "--dir", str(docker), "app")
    assert r.returncode == 0, r.stderr.decode()
    assert read_file(vault.path("app", "DB_PASSWORD")) == b"pw", \
        "one trailing newline of a single-line value goes, as with echo"
    assert read_file(vault.path("app", "TLS_KEY")) == b"-----BEGIN-----\nabc\n-----END-----\n"

    # Kubernetes: keys are symlinks into ..data, a symlink to a timestamped dir.
    k8s = tmp_path / "k8s"
    (k8s / "..2024_01_01_00_00_00.123").mkdir(parents=True)
    (k8s / "..2024_01_01_00_00_00.123" / "api-key").write_bytes(b"k8s-value")
    os.symlink("..2024_01_01_00_00_00.123", k8s / "..data")
    os.symlink("..data/api-key", k8s / "api-key")
    r = vault.cli("import", "k8s", "--dir", str(k8s))
    assert r.returncode == 0, r.stderr.decode()
    assert os.listdir(vault.path("k8s")) == ["api-key"]
    assert read_file(vault.path("k8s", "api-key")) == b"k8s-value"


def test_import_directory_problems(vault_unmounted, tmp_path):
    v = vault_unmounted
    d = tmp_path / "secrets"
    d.mkdir()
    (d / "GOOD").write_bytes(b"good")
    (d / "has space").write_bytes(b"x")
    (d / "sub").mkdir()
    os.symlink("nonexistent-target", d / "DANGLING")
    os.symlink("/nonexistent/target", d / "ABSOLUTE")
    r = v.cli("import", "app", "--dir", str(d))
    assert r.returncode == 1
    err = r.stderr.decode()
    assert f"{d}/has space: invalid key name" in err, err
    assert f"{d}/sub: a directory" in err
    assert f"{d}/DANGLING: No such file or directory" in err
    assert f"{d}/ABSOLUTE: a symbolic link that leads outside the directory" in err
    assert "nothing was imported" in err
    assert v.cli("ls").stdout == b"", "not even the instance was created"
    r = v.cli("import", "app", "--dir", str(tmp_path / "nope"))
    assert r.returncode == 1 and b"No such file or directory" in r.stderr


def test_import_usage(vault_unmounted):
    v = vault_unmounted
    r = v.cli("import", "app")
    assert r.returncode == 2 and b"want --env FILE or --dir DIR" in r.stderr
    r = v.cli("import", "app", "--env", "a", "--dir", "b")
    assert r.returncode == 2
    r = v.cli("import", "bad/name", "--env", "-", input="A=1\n")
    assert r.returncode == 1 and b"invalid instance name 'bad/name'" in r.stderr
    r = v.cli("import", "-n", "app", "--env", "-", input="A=1\nB=2\n")
    assert r.returncode == 0 and r.stdout.startswith(b"A\nB\n")
    assert b"2 keys would be imported" in r.stdout
    assert v.cli("ls").stdout == b"", "a dry run stores nothing"


def _hostile_dir(users, vault, name):
    """A directory owned by alice, as handed to root by an ordinary user."""
    d = pathlib.Path(vault.dir) / name
    d.mkdir()
    os.chown(d, users.uid["alice"], users.gid["alice"])
    return d


def test_import_dir_refuses_what_leads_outside_or_was_planted(vault, users):
    """Root imports a directory alice handed over, as a runbook would. The
    links alice planted to /etc/shadow and to the master key, a fifo, a
    socket, a device, bob's file and a hard link are each refused by name;
    nothing is imported; what alice may legitimately hand over (her files,
    root's, a Kubernetes ..data layout) imports."""
    d = _hostile_dir(users, vault, "handed-over")
    as_alice = f"cd {d} && "
    r = users.sh("alice", as_alice +
                 "printf ok > GOOD && ln -s /etc/shadow SHADOW && "
                 f"ln -s {vault.key} MASTERKEY && ln -s ../../../../../etc/passwd UP && "
                 "mkdir ..2024_01_01 && printf kv > ..2024_01_01/API && "
                 "ln -s ..2024_01_01 ..data && ln -s ..data/API API && "
                 "ln -s ..data/../GOOD INSIDE && mkfifo FIFO")
    assert r.returncode == 0, r.stderr.decode()
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(d / "SOCK"))
    os.mknod(d / "NULLDEV", 0o600 | 0o020000, os.makedev(1, 3))
    write_file(str(d / "ROOTS"), "root-made")
    os.link(vault.key, d / "HARDLINK")          # root's file, not alice's
    bobs = pathlib.Path(vault.dir) / "bobs"
    write_file(str(bobs), "planted")
    os.chown(bobs, users.uid["bob"], users.gid["bob"])
    shutil.move(str(bobs), str(d / "BOBS"))

    r = vault.cli("import", "app", "--dir", str(d))
    s.close()
    err = r.stderr.decode()
    assert r.returncode == 1, err
    outside = "a symbolic link that leads outside the directory"
    assert f"{d}/SHADOW: {outside}" in err, err
    assert f"{d}/MASTERKEY: {outside}" in err
    assert f"{d}/UP: {outside}" in err
    assert f"{d}/FIFO: a fifo" in err
    assert f"{d}/SOCK: a socket" in err
    assert f"{d}/NULLDEV: a device" in err
    assert f"{d}/BOBS: owned by uid {users.uid['bob']}, neither root nor the " \
        "directory's owner" in err
    assert f"{d}/HARDLINK: a hard link to a file the directory's owner does not own" in err
    for fine in ("GOOD", "API", "INSIDE", "ROOTS"):
        assert f"{d}/{fine}:" not in err, err
    assert err.rstrip().endswith("nothing was imported")
    assert "root:" not in err and vault.key_hex() not in err
    assert os.listdir(vault.path()) == [], "not even the instance was created"

    # Without the traps, the same directory imports, links inside included.
    for trap in ("SHADOW", "MASTERKEY", "UP", "FIFO", "SOCK", "NULLDEV", "BOBS",
                 "HARDLINK"):
        os.unlink(d / trap)
    r = vault.cli("import", "app", "--dir", str(d))
    assert r.returncode == 0, r.stderr.decode()
    assert sorted(os.listdir(vault.path("app"))) == ["API", "GOOD", "INSIDE", "ROOTS"]
    assert read_file(vault.path("app", "API")) == b"kv"
    assert read_file(vault.path("app", "INSIDE")) == b"ok"


def test_import_dir_kubernetes_data_link_out_of_the_directory(vault, users):
    """A ..data that alice points at /etc makes every KEY -> ..data/KEY leave
    the directory: refused, nothing imported."""
    d = _hostile_dir(users, vault, "k8s")
    r = users.sh("alice", f"cd {d} && ln -s /etc ..data && ln -s ..data/shadow shadow")
    assert r.returncode == 0, r.stderr.decode()
    r = vault.cli("import", "app", "--dir", str(d))
    assert r.returncode == 1
    assert f"{d}/shadow: a symbolic link that leads outside the directory" in \
        r.stderr.decode()
    assert os.listdir(vault.path()) == []
