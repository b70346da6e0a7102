"""The .deb (packaging/deb/build.sh), built from the already built binary and installed for
real with dpkg on this machine (root; CI runs as root), then removed and purged.

Checked: the package's metadata and file list; after `dpkg -i` the files with their owners and
modes, the `ringwire` system user and group, the configuration readable by that group only,
`systemd-analyze verify` on the installed unit, `serve --check` of the installed configuration
as the ringwire user, the installed server actually serving as that user, and that nothing was
started by the install; an admin's edit of a conffile kept over a reinstall; `dpkg -r` keeping
the conffiles and `dpkg --purge` removing them and the ownership overrides.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import stat
import subprocess
import urllib.request
from pathlib import Path

import pytest

from helpers import BINARY, ROOT, free_port, wait_until

BUILD = ROOT / "packaging" / "deb" / "build.sh"
UNIT = Path("/lib/systemd/system/ringwire.service")
CONF = Path("/etc/ringwire/ringwire.toml")
CONFFILES = {str(CONF), "/etc/sysctl.d/60-ringwire.conf", "/etc/security/limits.d/ringwire.conf"}

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="installs a package: needs root"),
    pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="not a Debian system (no dpkg-deb)"),
]


def run(*cmd: str, check: bool = True, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL, **kw)
    if check:
        assert r.returncode == 0, f"{' '.join(cmd)} -> {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


def installed() -> bool:
    r = run("dpkg-query", "-W", "-f=${Status}", "ringwire", check=False)
    return r.returncode == 0 and "installed" in r.stdout and "not-installed" not in r.stdout


def owner_mode(path: str) -> tuple[str, str, int]:
    st = os.stat(path)
    return pwd.getpwuid(st.st_uid).pw_name, grp.getgrgid(st.st_gid).gr_name, stat.S_IMODE(st.st_mode)


def ringwire_processes() -> list[int]:
    """Processes running the installed binary (/proc/PID/exe), whoever started them."""
    pids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if os.readlink(p / "exe") == "/usr/bin/ringwire":
                    pids.append(int(p.name))
            except OSError:
                pass
    return pids


@pytest.fixture
def deb(tmp_path):
    """Build the package into tmp_path; purge whatever this test installed at the end."""
    if installed():
        pytest.skip("a ringwire package is already installed on this machine: not touching it")
    user_existed = _exists("passwd", "ringwire")
    group_existed = _exists("group", "ringwire")
    env = dict(os.environ, DEB_COMPRESS="gzip")
    r = run("bash", str(BUILD), str(BINARY), str(tmp_path / "out"), env=env, timeout=300)
    path = Path(r.stdout.strip().splitlines()[-1])
    assert path.is_file() and path.name.startswith("ringwire_") and path.suffix == ".deb", r.stdout
    try:
        yield path
    finally:
        if installed() or run("dpkg-query", "-W", "ringwire", check=False).returncode == 0:
            run("dpkg", "--purge", "ringwire", check=False)
        # The package keeps its system user on purge (as Debian does); a test machine does not.
        if not user_existed and _exists("passwd", "ringwire"):
            run("userdel", "ringwire", check=False)
        if not group_existed and _exists("group", "ringwire"):
            run("groupdel", "ringwire", check=False)


def _exists(db: str, name: str) -> bool:
    return run("getent", db, name, check=False).returncode == 0


def test_deb_contents_install_and_purge(deb, tmp_path):
    # ---- the archive
    info = run("dpkg-deb", "-I", str(deb)).stdout
    version = run(str(BINARY), "--version").stdout.split()[-1]
    fields = dict(line.strip().split(": ", 1) for line in info.splitlines()
                  if line.startswith(" ") and ": " in line and not line.startswith("  "))
    assert fields["Package"] == "ringwire", info
    assert fields["Version"] == f"{version}-1", info
    assert fields["Architecture"] == run("dpkg", "--print-architecture").stdout.strip(), info
    assert "libc6 (>=" in fields["Depends"] and "adduser" in fields["Depends"], info
    for script in ("postinst", "prerm", "postrm", "conffiles"):
        assert script in info, info
    ctrl = tmp_path / "control"
    run("dpkg-deb", "-e", str(deb), str(ctrl))
    assert set((ctrl / "conffiles").read_text().split()) == CONFFILES
    listing = run("dpkg-deb", "-c", str(deb)).stdout
    files = {}
    for line in listing.splitlines():
        mode, owner, _size, _date, _time, name = line.split(None, 5)
        files[name.removeprefix(".")] = (mode, owner)
    want = {
        "/usr/bin/ringwire": "-rwxr-xr-x",
        str(UNIT): "-rw-r--r--",
        str(CONF): "-rw-r--r--",  # 0640 root:ringwire by dpkg-statoverride at configure
        "/etc/sysctl.d/60-ringwire.conf": "-rw-r--r--",
        "/etc/security/limits.d/ringwire.conf": "-rw-r--r--",
        "/usr/share/doc/ringwire/copyright": "-rw-r--r--",
        "/usr/share/doc/ringwire/openapi.json": "-rw-r--r--",
    }
    for name, mode in want.items():
        assert name in files, f"{name} not in the package:\n{listing}"
        assert files[name] == (mode, "root/root"), (name, files[name])
    assert all(owner == "root/root" for _, owner in files.values()), listing

    # ---- install for real; nothing may be started (and no systemd runs here anyway)
    before = ringwire_processes()
    r = run("dpkg", "-i", str(deb))
    assert "systemctl enable --now ringwire" in r.stdout, r.stdout
    assert installed()
    assert ringwire_processes() == before, "the install started ringwire"

    user = pwd.getpwnam("ringwire")
    assert user.pw_uid < 1000 and user.pw_shell == "/usr/sbin/nologin", user
    assert grp.getgrgid(user.pw_gid).gr_name == "ringwire"
    assert not Path(user.pw_dir).exists(), f"home {user.pw_dir} was created"
    assert owner_mode("/usr/bin/ringwire") == ("root", "root", 0o755)
    assert owner_mode("/etc/ringwire") == ("root", "ringwire", 0o750)
    assert owner_mode(str(CONF)) == ("root", "ringwire", 0o640)
    for f in (str(UNIT), "/etc/sysctl.d/60-ringwire.conf", "/etc/security/limits.d/ringwire.conf"):
        assert owner_mode(f) == ("root", "root", 0o644), f
    assert CONF.read_text() == (ROOT / "tuning" / "ringwire.example.toml").read_text()
    assert Path("/etc/sysctl.d/60-ringwire.conf").read_text() == \
        (ROOT / "tuning" / "sysctl.d" / "60-ringwire.conf").read_text()
    assert run("/usr/bin/ringwire", "--version").stdout.split()[-1] == version

    unit = UNIT.read_text()
    assert "Type=notify" in unit and "ExecStart=/usr/bin/ringwire serve --config /etc/ringwire/ringwire.toml" in unit
    assert "/usr/local/bin" not in unit
    if shutil.which("systemd-analyze"):
        v = run("systemd-analyze", "verify", str(UNIT), check=False)
        assert v.returncode == 0 and "ringwire.service" not in v.stdout + v.stderr, \
            f"systemd-analyze verify: {v.returncode}\n{v.stdout}{v.stderr}"
    else:  # tests/run.sh installs systemd; say so rather than pass silently elsewhere
        pytest.fail("systemd-analyze missing (apt-get install systemd)")

    # The service's own check, as the service's user (the file is readable by its group only).
    r = run("runuser", "-u", "ringwire", "--", "/usr/bin/ringwire", "serve", "--check",
            "--config", str(CONF))
    assert "configuration ok" in r.stdout + r.stderr
    r = run("runuser", "-u", "nobody", "--", "/usr/bin/ringwire", "serve", "--check",
            "--config", str(CONF), check=False)
    assert r.returncode != 0 and "Permission denied" in r.stderr, r

    # The installed server runs as that user with the installed configuration (free ports).
    port, admin_port = free_port(), free_port()
    proc = subprocess.Popen(["/usr/bin/ringwire", "serve", "--config", str(CONF),
                             "--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{admin_port}"],
                            user="ringwire", group="ringwire", extra_groups=[],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        def healthy() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/healthz", timeout=2) as h:
                    return h.status == 200
            except OSError:
                return proc.poll() is not None  # exited: stop waiting, the asserts below say why

        wait_until(healthy, timeout=20, what="the installed server's /healthz")
        assert proc.poll() is None, proc.communicate(timeout=5)[1].decode()
        assert pwd.getpwuid(os.stat(f"/proc/{proc.pid}").st_uid).pw_name == "ringwire"
    finally:
        proc.terminate()  # a drain with no socket open: immediate
        try:
            assert proc.wait(20) == 0
        finally:
            if proc.poll() is None:
                proc.kill()

    # ---- an admin's edit of a conffile survives a reinstall; the overrides stay
    CONF.write_text(CONF.read_text() + "\n# edited by the admin\n")
    run("dpkg", "-i", "--force-confold", str(deb))
    assert CONF.read_text().endswith("# edited by the admin\n")
    assert owner_mode(str(CONF)) == ("root", "ringwire", 0o640)

    # ---- remove keeps the configuration; purge removes it and the overrides
    run("dpkg", "-r", "ringwire")
    assert not Path("/usr/bin/ringwire").exists() and not UNIT.exists()
    assert CONF.exists()
    run("dpkg", "--purge", "ringwire")
    for f in CONFFILES | {"/etc/ringwire"}:
        assert not Path(f).exists(), f"{f} left after purge"
    assert "ringwire" not in run("dpkg-statoverride", "--list").stdout
    assert not installed()
