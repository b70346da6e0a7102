"""`ringwire doctor` against this host, and the shipped tuning files checked by their tools."""
import re
import resource
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers import BINARY

TUNING = Path(__file__).resolve().parents[2] / "tuning"


def doctor(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BINARY), "doctor", *args], capture_output=True, text=True, timeout=30)


def test_doctor_reports_this_hosts_limit_for_a_million():
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    r = doctor("--connections", "1000000")
    out = r.stdout
    assert "this host for 1000000 connections" in out, out
    # Every check is on a line of its own: ok / WARN / FAIL, and each problem says what to change.
    checks = [l for l in out.splitlines() if re.match(r"^(ok  |WARN|FAIL) ", l)]
    assert len(checks) >= 8, out
    for name in ("open files", "fs.nr_open", "fs.file-max", "somaxconn", "tcp_max_syn_backlog",
                 "ip_local_port_range", "tcp_mem", "io_uring", "kernel", "memlock", "memory"):
        assert any(name in l for l in checks), f"no {name} check:\n{out}"
    fails = [l for l in checks if l.startswith("FAIL")]
    # The exit status says whether the host is ready, and matches the FAIL lines.
    assert (r.returncode == 0) == (not fails), (r.returncode, out)
    if hard < 600_000:
        # 1M connections over this host's cores need far more than its hard limit per core.
        limit_line = next(l for l in checks if "open files" in l)
        assert limit_line.startswith("FAIL") and f"hard limit {hard}" in limit_line, out
        assert "LimitNOFILE=" in out and "change:" in out, out
        assert r.returncode == 1 and "NOT ready for 1000000 connections" in out, out


def test_doctor_small_count_and_bad_config(tmp_path):
    r = doctor("-n", "100")
    assert "this host for 100 connections" in r.stdout
    limit_line = next(l for l in r.stdout.splitlines() if "open files" in l)
    assert limit_line.startswith("ok"), r.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text("[server]\nnope = 1\n")
    r = doctor("--config", str(bad))
    assert r.returncode == 2 and "invalid configuration" in r.stderr, r


def test_doctor_uses_the_configured_cores(tmp_path):
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    n = hard * 3  # more than two cores hold, less than eight
    cfg = tmp_path / "c.toml"
    cfg.write_text("[server]\ncores = 8\n")
    wide = doctor("-n", str(n), "--config", str(cfg)).stdout
    assert next(l for l in wide.splitlines() if "open files" in l).startswith("ok"), wide
    cfg.write_text("[server]\ncores = 2\n")
    narrow = doctor("-n", str(n), "--config", str(cfg)).stdout
    assert next(l for l in narrow.splitlines() if "open files" in l).startswith("FAIL"), narrow
    assert "server.cores = " in narrow, narrow


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_unit_verifies(tmp_path):
    unit = (TUNING / "ringwire.service").read_text()
    # The unit names /usr/local/bin/ringwire; point it at the build for the check.
    unit = unit.replace("/usr/local/bin/ringwire", str(BINARY))
    path = tmp_path / "ringwire.service"
    path.write_text(unit)
    r = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=60)
    problems = [l for l in (r.stdout + r.stderr).splitlines() if "ringwire.service" in l]
    assert r.returncode == 0 and not problems, r.stdout + r.stderr
    for key in ("LimitNOFILE=", "TasksMax=", "ExecReload=", "Restart=", "NoNewPrivileges=true", "TimeoutStopSec="):
        assert key in unit, key


def test_sysctl_and_limits_files_parse():
    keys = {}
    for line in (TUNING / "sysctl.d" / "60-ringwire.conf").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            k, v = (p.strip() for p in line.split("=", 1))
            keys[k] = v
            # Every key exists on this kernel.
            assert Path("/proc/sys", *k.split(".")).exists(), k
    assert int(keys["fs.nr_open"]) >= 1_048_576
    assert int(keys["net.core.somaxconn"]) >= 4096
    # The default public, admin and cluster ports are kept from outbound connections.
    example = (TUNING / "ringwire.example.toml").read_text()
    ports = {int(p) for p in re.findall(r'listen = "[^"]*:(\d+)"', example)}
    assert {8080, 8081, 7001} <= ports, ports
    assert {int(p) for p in keys["net.ipv4.ip_local_reserved_ports"].split(",")} == ports, \
        "ip_local_reserved_ports must list the example's listen ports"
    for line in (TUNING / "limits.d" / "ringwire.conf").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            user, kind, item, value = line.split()
            assert (user, item) == ("ringwire", "nofile") and kind in ("soft", "hard") and int(value) > 0


def test_the_server_tells_systemd_when_it_is_ready_and_when_it_stops(tmp_path):
    """Type=notify in ringwire.service: READY=1 on $NOTIFY_SOCKET once the listeners accept,
    STOPPING=1 when SIGTERM starts the drain (an unmodified datagram reader, as systemd)."""
    import os
    import signal
    import socket as _socket
    import time

    from helpers import free_port, make_config, render_config

    assert "Type=notify" in (TUNING / "ringwire.service").read_text()
    port, admin = free_port(), free_port()
    cfg = tmp_path / "ringwire.toml"
    cfg.write_text(render_config(make_config(port, admin)))
    path = str(tmp_path / "notify.sock")
    rx = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM)
    rx.bind(path)
    rx.settimeout(20)
    proc = subprocess.Popen([str(BINARY), "serve", "--config", str(cfg)], env={**os.environ, "NOTIFY_SOCKET": path},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert rx.recv(64) == b"READY=1"
        for p in (port, admin):  # ready means listening
            _socket.create_connection(("127.0.0.1", p), 2).close()
        proc.send_signal(signal.SIGTERM)
        t = time.monotonic()
        assert rx.recv(64) == b"STOPPING=1"
        assert time.monotonic() - t < 5
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        rx.close()
