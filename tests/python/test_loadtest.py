"""ringwire-loadtest against a real ringwire (issue 16's rough edges, issue 18's memory):

  - `--url` defaults to `/ws`, an endpoint of the default server configuration;
  - a run where nothing connected fails (exit 1, `RESULT: FAIL: nothing connected`) without any
    threshold, naming the failures and the usual cause (a session endpoint without --auth);
  - `wss://` with `--ca <pem>` against ringwire's [tls] (refused as `tls_error` without it);
  - `--origin` against `[security] allowed_origins`, `--header` carrying the secret cookie;
  - the host CPU is sampled and a run on a saturated host is reported as contended;
  - the plot of a hold run with --server-pid has the server RSS panel;
  - a held connection costs at most 4 KB in a worker (issue 18; it was about 19 KB);
  - one fan-out push to every user from several workers bound to several source addresses
    (`--source-range`, as the million-connection run uses them), with the time until every
    push was received (`push.all_delivered_s`).

The binary is target/release/ringwire-loadtest next to RINGWIRE_BIN (or RINGWIRE_LOADTEST_BIN).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import BINARY, HOST, Admin, cluster_certs, free_port, push_servers  # noqa: F401 (fixture)

LOADTEST = Path(os.environ.get("RINGWIRE_LOADTEST_BIN", BINARY.parent / "ringwire-loadtest"))


@pytest.fixture(autouse=True)
def _loadtest_built():
    if not LOADTEST.is_file():
        pytest.fail(f"{LOADTEST} not found: build with `cargo build --release -p ringwire-loadtest`")


def loadtest(tmp_path, *args: str, timeout: float = 90.0) -> tuple[subprocess.CompletedProcess, dict]:
    report = tmp_path / f"report-{len(list(tmp_path.glob('report-*')))}.json"
    r = subprocess.run([str(LOADTEST), "--quiet", "--report", str(report), *args],
                       capture_output=True, text=True, timeout=timeout)
    data = json.loads(report.read_text()) if report.exists() else {}
    return r, data


def out(r: subprocess.CompletedProcess) -> str:
    return f"exit {r.returncode}\n--- stdout ---\n{r.stdout}\n--- stderr ---\n{r.stderr}"


def test_default_url_is_an_endpoint_of_the_default_config():
    help_text = subprocess.run([str(LOADTEST), "--help"], capture_output=True, text=True, timeout=10).stdout
    default = help_text.split("--url <URL>", 1)[1].split("[default: ", 1)[1].split("]", 1)[0]
    assert default.startswith("ws://127.0.0.1:8080/"), default
    path = "/" + default.split("/", 3)[3]
    defaults = subprocess.run([str(BINARY), "defaults"], capture_output=True, text=True, timeout=10)
    assert defaults.returncode == 0, defaults.stderr
    assert f'path = "{path}"' in defaults.stdout, f"{path} is not an endpoint of `ringwire defaults`"
    assert 'listen = "127.0.0.1:8080"' in defaults.stdout


def test_nothing_connected_fails_without_thresholds(push_servers, tmp_path):
    server = push_servers.start()  # /ws needs a session
    r, rep = loadtest(tmp_path, "--url", f"ws://{HOST}:{server.port}/ws", "-c", "20", "--duration", "0")
    assert r.returncode == 1, out(r)
    assert "RESULT: FAIL: nothing connected" in r.stdout, out(r)
    assert "http_401 20" in r.stdout and "--auth session" in r.stdout, out(r)
    assert rep["connections"]["connected"] == 0
    assert any(v.startswith("nothing connected") for v in rep["violations"]), rep["violations"]
    # The scenario is named in words, not as a Rust value.
    assert "scenario                           hold (1 workers" in r.stdout, out(r)

    # Nobody listening: the same, and the hint says so.
    port = free_port()
    r, _ = loadtest(tmp_path, "--url", f"ws://{HOST}:{port}/ws", "-c", "5", "--duration", "0")
    assert r.returncode == 1 and "nothing connected" in r.stdout and "refused 5" in r.stdout, out(r)


def test_origin_and_header(push_servers, tmp_path):
    server = push_servers.start(security={"allowed_origins": ["https://app.example"]})
    url = f"ws://{HOST}:{server.port}/ws"
    admin = Admin(server)
    # --origin: an allowed origin upgrades, another one is refused (403).
    r, rep = loadtest(tmp_path, "--url", url, "--admin-url", f"http://{HOST}:{server.admin_port}",
                      "--auth", "session", "-c", "10", "--duration", "0", "--origin", "https://app.example")
    assert r.returncode == 0 and rep["connections"]["connected"] == 10, out(r)
    r, rep = loadtest(tmp_path, "--url", url, "--admin-url", f"http://{HOST}:{server.admin_port}",
                      "--auth", "session", "-c", "10", "--duration", "0", "--origin", "https://evil.example")
    assert r.returncode == 1 and rep["connections"]["failed_by_kind"] == {"http_403": 10}, out(r)
    # --header: the session's secret cookie given by hand (no --auth) lets the upgrade through.
    s = admin.mint(7)
    sid_url = f"{url}?session={s['session']}"
    r, rep = loadtest(tmp_path, "--url", sid_url, "-c", "3", "--duration", "0", "--echo-check",
                      "--header", f"Cookie: {s['cookie']}", "--header", "X-Test: 1")
    assert r.returncode == 0 and rep["connections"]["connected"] == 3, out(r)
    r, _ = loadtest(tmp_path, "--url", sid_url, "-c", "3", "--duration", "0")
    assert r.returncode == 1 and "http_401 3" in r.stdout, out(r)
    r, _ = loadtest(tmp_path, "--url", sid_url, "--header", "no colon here")
    assert r.returncode == 2 and "Name: value" in r.stderr, out(r)


def test_wss_with_ca(start_server, tmp_path):
    certs = cluster_certs(tmp_path, "certs", "127.0.0.1", "localhost")
    server = start_server(tls={"cert": str(certs / "127.0.0.1.pem"), "key": str(certs / "127.0.0.1.key")})
    url = f"wss://{HOST}:{server.port}/"
    r, rep = loadtest(tmp_path, "--url", url, "--ca", str(certs / "ca.pem"), "-c", "20",
                      "--scenario", "echo", "--interval-ms", "100", "--duration", "1", "--echo-check",
                      "--max-echo-failures", "0", "--max-connect-errors", "0")
    assert r.returncode == 0, out(r)
    assert rep["echo_check"]["echoes_ok"] == 20 and rep["messages"]["received"] > 0, rep["messages"]
    # The name is checked (this certificate has only the IP), and without --ca the
    # certificate is not trusted.
    r, rep = loadtest(tmp_path, "--url", f"wss://localhost:{server.port}/", "--ca", str(certs / "ca.pem"),
                      "-c", "2", "--duration", "0")
    assert r.returncode == 1 and rep["connections"]["failed_by_kind"] == {"tls_error": 2}, out(r)
    r, rep = loadtest(tmp_path, "--url", url, "-c", "4", "--duration", "0")
    assert r.returncode == 1 and rep["connections"]["failed_by_kind"] == {"tls_error": 4}, out(r)
    r, _ = loadtest(tmp_path, "--url", f"ws://{HOST}:{server.port}/", "--ca", str(certs / "ca.pem"))
    assert r.returncode == 2 and "wss://" in r.stderr, out(r)


def test_hold_plot_has_server_rss_and_host_cpu(start_server, tmp_path):
    server = start_server()
    plot = tmp_path / "hold.svg"
    r, rep = loadtest(tmp_path, "--url", server.url, "-c", "200", "--duration", "2",
                      "--server-pid", str(server.proc.pid), "--plot", str(plot))
    assert r.returncode == 0, out(r)
    svg = plot.read_text()
    assert "server RSS (MiB)" in svg and "host CPU busy %" in svg
    rss = [s["server_rss_bytes"] for s in rep["timeline"] if "server_rss_bytes" in s]
    assert rss and min(rss) > 1 << 20, rss[:5]
    cpu = rep["host_cpu"]
    assert cpu["samples"] >= 4 and 0 <= cpu["busy_pct_mean"] <= 100, cpu
    assert "host cpu" in r.stdout


def test_contended_run_is_flagged(start_server, tmp_path):
    server = start_server()
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 2)]
    try:
        r, rep = loadtest(tmp_path, "--url", server.url, "-c", "20", "--duration", "2")
    finally:
        for b in burners:
            b.kill()
            b.wait()
    cpu = rep["host_cpu"]
    assert cpu["contended"] and cpu["busy_pct_mean"] >= 90, cpu
    assert "WARNING: contended run" in r.stdout, out(r)


def test_held_connection_costs_under_4_kb(start_server, tmp_path):
    """Issue 18: a worker's RSS grows by at most 4 KB per held connection (it was ~19 KB)."""
    server = start_server()

    def worker_rss(n: int) -> int:
        r, rep = loadtest(tmp_path, "--url", server.url, "-c", str(n), "--workers", "1",
                          "--duration", "1", "--min-connected", str(n))
        assert r.returncode == 0, out(r)
        return rep["workers"][0]["self_peak_rss_bytes"]

    small, large = worker_rss(500), worker_rss(4500)
    per_conn = (large - small) / 4000
    print(f"loadtest worker: {small} B at 500 held, {large} B at 4500: {per_conn:.0f} B per connection")
    assert per_conn <= 4096, per_conn


def test_fanout_over_source_range_reports_all_delivered(push_servers, tmp_path):
    """Issue 18's million run in small: 3 workers, sockets bound to 127.0.0.2..127.0.0.4, then
    one push to every user; every one is received and the time until the last one is reported."""
    server = push_servers.start()
    users = 300
    args = ["--url", f"ws://{HOST}:{server.port}/ws", "--admin-url", f"http://{HOST}:{server.admin_port}",
            "--auth", "session", "-c", str(users), "--workers", "3", "--source-range", "127.0.0.2-127.0.0.4",
            "--scenario", "push", "--push-mode", "fanout", "--push-rate", "1", "--duration", "3",
            "--batch-size", "100", "--max-missing", "0", "--quiet"]
    report = tmp_path / "fanout.json"
    proc = subprocess.Popen([str(LOADTEST), "--report", str(report), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # While the sockets are held, the server's peers are the three source addresses.
    sources: set[str] = set()
    deadline = time.monotonic() + 20
    while proc.poll() is None and time.monotonic() < deadline and len(sources) < 3:
        ss = subprocess.run(["ss", "-Htn", "state", "established", f"( dport = :{server.port} )"],
                            capture_output=True, text=True, timeout=10).stdout
        sources = set(re.findall(r"(127\.0\.0\.\d+):\d+\s+127\.0\.0\.1:" + str(server.port), ss))
        time.sleep(0.2)
    stdout, stderr = proc.communicate(timeout=60)
    r = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    assert r.returncode == 0, out(r)
    assert sources == {"127.0.0.2", "127.0.0.3", "127.0.0.4"}, sources
    rep = json.loads(report.read_text())
    assert rep["connections"]["connected"] == users and len(rep["workers"]) == 3, rep["connections"]
    push = rep["push"]
    # 3 fan-out events (rate 1/s for 3 s), each one push to every user.
    assert push["messages_expected"] == 3 * users and push["messages_received"] == 3 * users, push
    done = push["all_delivered_s"]
    assert done is not None and 0 < done < 10, push
    # The last push was sent about 2 s after the first; it cannot have arrived before.
    assert done >= 2.0, push
    assert "all delivered after" in r.stdout, out(r)
