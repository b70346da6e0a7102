"""The Grafana dashboard and the Prometheus alert rules of tuning/, proven against a real
Prometheus (Debian's `prometheus` package) scraping a real two-node ringwire cluster under load.

- `promtool check rules` and `promtool test rules` (the rules' unit tests) pass;
- Prometheus scrapes both nodes' /metrics (bearer token) and parses them;
- every query of every panel of tuning/grafana/ringwire.json returns data (a non-empty result;
  for the latency quantiles a number, not NaN) once the cluster had connections, pushes,
  refusals and closes, except the panels named in FAILURE_ONLY with their reason;
- the alert rules, loaded into that Prometheus, are evaluated without error, none fires on
  the healthy cluster, and a killed node makes RingwireDown and
  RingwireClusterPeerUnreachable pending with the labels of the real series.
"""
from __future__ import annotations

import json
import math
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from helpers import WsClient, cluster_factory, free_port, wait_until, ws_sync_connect  # noqa: F401 (fixture)

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "tuning" / "grafana" / "ringwire.json"
RULES = ROOT / "tuning" / "prometheus" / "ringwire-alerts.yml"
RULE_TESTS = ROOT / "tuning" / "prometheus" / "ringwire-alerts.test.yml"
TOKEN = "prometheus-test-token-0123456789"

# Panels whose queries have data only in a situation the healthy test cluster is not in.
FAILURE_ONLY = {
    "History store requests (nats)": "the series exist only with [history] store = \"nats\"; "
                                     "the test cluster has no NATS",
}
# Grafana's variables, as the dashboard would expand them for "All" nodes.
VARIABLES = {"$__rate_interval": "15s", "$instance": ".*"}

pytestmark = pytest.mark.timeout(90)


def binary(name: str) -> str:
    path = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    assert path, f"{name} not found: install Debian's `prometheus` package (tests/run.sh setup does)"
    return path


def panels(dashboard: dict):
    for p in dashboard["panels"]:
        yield p
        yield from p.get("panels", [])


def queries() -> list[tuple[str, str]]:
    """(panel title, expr with the Grafana variables substituted) of every panel target."""
    out = []
    for p in panels(json.loads(DASHBOARD.read_text())):
        for t in p.get("targets", []):
            expr = t["expr"]
            for var, value in VARIABLES.items():
                expr = expr.replace(var, value)
            assert "$" not in expr, f"panel {p['title']!r}: unknown variable in {expr!r}"
            out.append((p["title"], expr))
    return out


def test_promtool_checks_and_unit_tests_the_rules():
    promtool = binary("promtool")
    r = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run([promtool, "test", "rules", str(RULE_TESTS)], capture_output=True, text=True,
                       timeout=60, cwd=RULE_TESTS.parent)
    assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr


def test_dashboard_is_well_formed():
    d = json.loads(DASHBOARD.read_text())
    titles = [p["title"] for p in panels(d) if p["type"] != "row"]
    assert len(titles) == len(set(titles)), f"duplicate panel titles: {titles}"
    assert set(FAILURE_ONLY) <= set(titles), f"FAILURE_ONLY names panels that are gone: {FAILURE_ONLY}"
    for p in panels(d):
        if p["type"] != "row":
            assert p.get("targets") and p.get("description"), f"panel {p['title']!r}"
    assert len(queries()) >= 30


class Prometheus:
    def __init__(self, tmp_path: Path, targets: list[str]):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cfg = tmp_path / "prometheus.yml"
        cfg.write_text(json.dumps({  # JSON is YAML
            "global": {"scrape_interval": "1s", "scrape_timeout": "900ms", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [{
                "job_name": "ringwire",
                "authorization": {"credentials": TOKEN},
                "static_configs": [{"targets": targets}],
            }],
        }))
        self.log = open(tmp_path / "prometheus.log", "wb")
        self.proc = subprocess.Popen(
            [binary("prometheus"), f"--config.file={cfg}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT)
        wait_until(self.ready, timeout=30, interval=0.2, what="prometheus /-/ready")

    def ready(self) -> bool:
        assert self.proc.poll() is None, f"prometheus exited: {self.proc.returncode}"
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def api(self, path: str, **params) -> dict | list:
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=10) as r:
            body = json.load(r)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list:
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", (expr, data)
        return data["result"]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.log.close()


class Load:
    """Connections, pushes through both admin APIs, refused upgrades and closes, in a thread
    until stopped."""

    def __init__(self, cluster, users: int = 8):
        self.cluster = cluster
        self.admins = {n: cluster.admin(n) for n in "ab"}
        self.sessions = [self.admins["a"].mint(user=u) for u in range(1, users + 1)]
        self.stop_flag = threading.Event()
        self.pushes = 0
        self.errors: list[str] = []
        self.clients = []
        self.thread = threading.Thread(target=self.run, daemon=True)

    def connect(self, node: str, session: dict):
        url = self.cluster.public_url(node, "/ws", session)
        return WsClient(ws_sync_connect(url, session), node)

    def run(self) -> None:
        turn = 0
        try:
            while not self.stop_flag.is_set():
                turn += 1
                # A new socket each turn (handshakes), and one closed (closes by code).
                s = self.sessions[turn % len(self.sessions)]
                self.clients.append(self.connect("ab"[turn % 2], s))
                if len(self.clients) > 2 * len(self.sessions):
                    self.clients.pop(0).close()
                # A refused upgrade (unknown session): refusals by reason.
                try:
                    ws_sync_connect(self.cluster.public_url("a", "/ws", {"session": "nope"}), None).close()
                except Exception:  # noqa: BLE001 - the refusal is the point
                    pass
                for i, sess in enumerate(self.sessions):
                    node = "ab"[(turn + i) % 2]
                    r = self.admins[node].push(context=1, user=i + 1, path="/ws", message=f"m{turn}",
                                               coalesce=False)
                    if r.status != 202:
                        self.errors.append(f"push on {node}: {r!r}")
                    self.pushes += 1
                self.stop_flag.wait(0.05)
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.errors.append(repr(e))
        finally:
            for c in self.clients:
                c.close()


def wait_for(pred, timeout: float, what: str):
    return wait_until(pred, timeout=timeout, interval=0.5, what=what)


def test_dashboard_queries_and_rules_against_a_live_cluster(cluster_factory, tmp_path):
    t0 = time.monotonic()
    c = cluster_factory.make(["a", "b"], token=TOKEN, extra={"server": {"cores": 2}})
    c.start_all()
    targets = {n: f"{c.ips[n]}:{c.ports[n][1]}" for n in "ab"}
    prom = Prometheus(tmp_path, list(targets.values()))
    load = Load(c)
    try:
        load.thread.start()

        def scraped():
            up = {r["metric"]["instance"]: r["value"][1] for r in prom.query('up{job="ringwire"}')}
            return up == {t: "1" for t in targets.values()}

        wait_for(scraped, 20, "both nodes scraped (up == 1)")
        # Enough scrapes in the 15 s rate windows for the rates and quantiles of the load.
        # Pushes delivered on both nodes, in the rate windows of both (two scrapes at least).
        deliveries = 'sum by (instance) (rate(ringwire_push_deliveries_total[15s])) > 0'
        try:
            wait_for(lambda: load.pushes >= 200 and len(prom.query(deliveries)) == 2, 30,
                     "deliveries on both nodes seen by prometheus")
        except AssertionError as e:
            raise AssertionError(f"{e}; load: {load.pushes} pushes, errors {load.errors}") from None
        assert not load.errors, load.errors

        def missing():
            empty, nan = [], []
            for title, expr in queries():
                result = prom.query(expr)
                if title in FAILURE_ONLY:
                    continue
                if not result:
                    empty.append((title, expr))
                elif "histogram_quantile" in expr and all(math.isnan(float(r["value"][1])) for r in result):
                    nan.append((title, expr))
            return empty, nan

        # Every series has had its scrapes by now; a slow host gets a few more seconds.
        deadline = time.monotonic() + 20
        empty, nan = missing()
        while (empty or nan) and time.monotonic() < deadline:
            time.sleep(1)
            empty, nan = missing()
        assert not empty, "panels whose query returned nothing:\n" + "\n".join(f"  {t}: {e}" for t, e in empty)
        assert not nan, "latency panels with no observation:\n" + "\n".join(f"  {t}: {e}" for t, e in nan)

        # Real values behind some panels (not only present series).
        by_instance = {r["metric"]["instance"]: float(r["value"][1]) for r in prom.query(
            'sum by (instance) (rate(ringwire_push_deliveries_total[15s]))')}
        assert set(by_instance) == set(targets.values()) and all(v > 0 for v in by_instance.values()), by_instance
        refused = prom.query('sum(ringwire_upgrades_refused_by_reason_total{reason="unknown_session"})')
        assert float(refused[0]["value"][1]) > 0, refused
        closes = prom.query('sum(ringwire_websocket_closes_total{by="client", code="1000"})')
        assert float(closes[0]["value"][1]) > 0, f"the clients' closes (1000) not counted: {closes}"
        upgrades = prom.query('sum(ringwire_handshake_duration_seconds_count) - sum(ringwire_upgrades_total)')
        assert float(upgrades[0]["value"][1]) == 0, f"handshakes observed != upgrades: {upgrades}"
        routes = {r["metric"]["route"] for r in prom.query('ringwire_admin_request_duration_seconds_count')}
        assert {"/v1/push", "/metrics", "/v1/sessions"} <= routes, routes
        p99 = prom.query('histogram_quantile(0.99, sum(rate(ringwire_push_latency_seconds_bucket[15s])) by (le))')
        assert 0 < float(p99[0]["value"][1]) < 1, p99

        # The rules: loaded, evaluated, healthy; nothing fires on a healthy cluster.
        def evaluated():
            rules = [r for g in prom.api("rules")["groups"] for r in g["rules"]]
            return rules and all(not r["lastEvaluation"].startswith("0001") for r in rules) and rules

        rules = wait_for(evaluated, 15, "every rule evaluated")
        names = {r["name"] for r in rules}
        assert len(names) >= 10 and {"RingwireDown", "RingwireClusterPeerUnreachable"} <= names, names
        bad = [(r["name"], r.get("health"), r.get("lastError")) for r in rules if r.get("health") != "ok"]
        assert not bad, f"rules with evaluation errors: {bad}"
        firing = [a for a in prom.api("alerts")["alerts"] if a["state"] == "firing"]
        assert not firing, f"alerts firing on a healthy cluster: {firing}"
    finally:
        load.stop_flag.set()
        load.thread.join(10)

    try:
        # A node down: its scrape fails and its peer's link goes down: both alerts go pending
        # (their `for` is a minute) with the labels of the real series.
        c.kill("b")

        def pending():
            alerts = prom.api("alerts")["alerts"]
            got = {(a["labels"]["alertname"], a["labels"].get("instance"), a["labels"].get("peer"))
                   for a in alerts if a["state"] in ("pending", "firing")}
            return got >= {("RingwireDown", targets["b"], None),
                           ("RingwireClusterPeerUnreachable", targets["a"], "b")} and got

        wait_for(pending, 25, "RingwireDown and RingwireClusterPeerUnreachable pending")
        rules = [r for g in prom.api("rules")["groups"] for r in g["rules"]]
        assert all(r.get("health") == "ok" for r in rules), [(r["name"], r.get("lastError")) for r in rules]
    finally:
        prom.stop()
    assert time.monotonic() - t0 < 90
