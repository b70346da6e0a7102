"""The cluster link (first increment): QUIC with mutual TLS between nodes on 127.0.0.x,
links noticed up, a killed node noticed down within seconds and rejoining by itself after a
restart, and a node whose certificate another CA signed kept out."""
import json
import signal
import subprocess
import time
import urllib.request

import pytest

from helpers import BINARY, Server, free_port, render_config


def certs(tmp_path, name, *nodes):
    out = tmp_path / name
    r = subprocess.run([str(BINARY), "cluster", "certs", "--out", str(out), *nodes],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    for f in ["ca.pem", "ca.key", *[f"{n}.{x}" for n in nodes for x in ("pem", "key")]]:
        assert (out / f).stat().st_size > 0, f
    return out


def node_config(tmp_path, node, ip, quic_port, peers, certdir, port, admin_port):
    cfg = {
        "server": {"listen": f"{ip}:{port}", "cores": 1, "drain_secs": 0},
        "admin": {"listen": f"{ip}:{admin_port}"},
        "cluster": {
            "node_id": node,
            "listen": f"{ip}:{quic_port}",
            "peers": [{"id": pid, "addr": addr} for pid, addr in peers],
            "ca": str(certdir / "ca.pem"),
            "cert": str(certdir / f"{node}.pem"),
            "key": str(certdir / f"{node}.key"),
        },
    }
    path = tmp_path / f"{node}.toml"
    path.write_text(render_config(cfg))
    return path


def links(ip, admin_port):
    with urllib.request.urlopen(f"http://{ip}:{admin_port}/v1/stats", timeout=5) as r:
        return {l["node"]: l["state"] for l in json.load(r)["cluster"]["links"]}


def wait_links(ip, admin_port, want, timeout):
    deadline = time.monotonic() + timeout
    got = None
    while time.monotonic() < deadline:
        got = links(ip, admin_port)
        if got == want:
            return time.monotonic()
        time.sleep(0.1)
    raise AssertionError(f"links of {ip}: wanted {want}, got {got}")


class Cluster:
    def __init__(self, tmp_path, names, certdirs=None):
        self.ips = {n: f"127.0.0.{i + 1}" for i, n in enumerate(names)}
        self.quic = {n: free_port() for n in names}
        self.ports = {n: (free_port(), free_port()) for n in names}
        self.paths = {}
        self.servers = {}
        for n in names:
            peers = [(p, f"{self.ips[p]}:{self.quic[p]}") for p in names if p != n]
            certdir = (certdirs or {}).get(n) or certdirs["*"]
            port, admin = self.ports[n]
            self.paths[n] = node_config(tmp_path, n, self.ips[n], self.quic[n], peers, certdir, port, admin)

    def start(self, n):
        port, admin = self.ports[n]
        s = Server(self.paths[n], port, admin)
        s.wait_ready()
        self.servers[n] = s
        return s

    def links(self, n):
        return links(self.ips[n], self.ports[n][1])

    def wait(self, n, want, timeout=8):
        return wait_links(self.ips[n], self.ports[n][1], want, timeout)

    def stop_all(self):
        for s in self.servers.values():
            s.stop()


def test_three_nodes_link_and_survive_a_kill(tmp_path):
    d = certs(tmp_path, "certs", "a", "b", "c")
    c = Cluster(tmp_path, ["a", "b", "c"], {"*": d})
    try:
        for n in "abc":
            c.start(n)
        c.wait("a", {"b": "up", "c": "up"})
        c.wait("b", {"a": "up", "c": "up"})
        c.wait("c", {"a": "up", "b": "up"})
        # Kill b without a goodbye: the others notice within the 3 s idle timeout (+ slack).
        c.servers["b"].proc.send_signal(signal.SIGKILL)
        c.servers["b"].proc.wait(timeout=5)
        t0 = time.monotonic()
        t_a = c.wait("a", {"b": "down", "c": "up"}, timeout=8)
        c.wait("c", {"a": "up", "b": "down"}, timeout=8)
        assert t_a - t0 < 6, f"a noticed b down after {t_a - t0:.1f} s"
        # Restarted, b rejoins without operator action.
        c.start("b")
        c.wait("a", {"b": "up", "c": "up"}, timeout=8)
        c.wait("b", {"a": "up", "c": "up"}, timeout=8)
        c.wait("c", {"a": "up", "b": "up"}, timeout=8)
        with urllib.request.urlopen(f"http://127.0.0.1:{c.ports['a'][1]}/metrics", timeout=5) as r:
            text = r.read().decode()
        assert 'ringwire_cluster_link_up{peer="b"} 1' in text, text
        # A graceful stop is seen at once (the link is closed, not timed out).
        c.servers["c"].stop()
        c.wait("a", {"b": "up", "c": "down"}, timeout=2)
    finally:
        c.stop_all()


def test_a_node_of_another_ca_is_kept_out(tmp_path):
    good = certs(tmp_path, "good", "a", "b")
    other = certs(tmp_path, "other", "a", "b")
    c = Cluster(tmp_path, ["a", "b"], {"a": good, "b": other})
    try:
        c.start("a")
        c.start("b")
        time.sleep(3)
        assert c.links("a") == {"b": "down"} and c.links("b") == {"a": "down"}
    finally:
        c.stop_all()


def test_cluster_config_errors(tmp_path):
    d = certs(tmp_path, "certs", "a")
    bad = tmp_path / "bad.toml"
    bad.write_text(render_config({"cluster": {
        "node_id": "a", "listen": "127.0.0.1:1", "peers": [{"id": "a", "addr": "127.0.0.2:1"}],
        "ca": str(d / "ca.pem"), "cert": str(d / "a.pem"), "key": str(d / "a.key")}}))
    r = subprocess.run([str(BINARY), "serve", "--check", "--config", str(bad)], capture_output=True, text=True)
    assert r.returncode != 0 and "cluster.peers" in r.stderr, r.stderr
    missing = tmp_path / "missing.toml"
    missing.write_text(render_config({
        "server": {"listen": f"127.0.0.1:{free_port()}"}, "admin": {"listen": f"127.0.0.1:{free_port()}"},
        "cluster": {"node_id": "a", "listen": "127.0.0.1:0", "peers": [],
                    "ca": str(tmp_path / "nope.pem"), "cert": str(d / "a.pem"), "key": str(d / "a.key")}}))
    r = subprocess.run([str(BINARY), "serve", "--config", str(missing)], capture_output=True, text=True, timeout=20)
    assert r.returncode != 0 and "nope.pem" in r.stderr, r.stderr
    r = subprocess.run([str(BINARY), "cluster", "certs", "--out", str(tmp_path / "x"), "bad id"],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "node id" in r.stderr
