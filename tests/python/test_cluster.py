"""The cluster link (first increment): QUIC with mutual TLS between nodes on 127.0.0.x,
links noticed up, a killed node noticed down within seconds and rejoining by itself after a
restart, and a node whose certificate another CA signed kept out."""
import signal
import subprocess
import time
import urllib.request

from helpers import BINARY, CLUSTER_SESSION_KEY, Cluster, free_port, render_config
from helpers import cluster_certs as certs


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
    bad.write_text(render_config({"sessions": {"key": CLUSTER_SESSION_KEY}, "cluster": {
        "node_id": "a", "listen": "127.0.0.1:1", "peers": [{"id": "a", "addr": "127.0.0.2:1"}],
        "ca": str(d / "ca.pem"), "cert": str(d / "a.pem"), "key": str(d / "a.key")}}))
    r = subprocess.run([str(BINARY), "serve", "--check", "--config", str(bad)], capture_output=True, text=True)
    assert r.returncode != 0 and "cluster.peers" in r.stderr, r.stderr
    missing = tmp_path / "missing.toml"
    missing.write_text(render_config({
        "server": {"listen": f"127.0.0.1:{free_port()}"}, "admin": {"listen": f"127.0.0.1:{free_port()}"},
        "sessions": {"key": CLUSTER_SESSION_KEY},
        "cluster": {"node_id": "a", "listen": "127.0.0.1:0", "peers": [],
                    "ca": str(tmp_path / "nope.pem"), "cert": str(d / "a.pem"), "key": str(d / "a.key")}}))
    r = subprocess.run([str(BINARY), "serve", "--config", str(missing)], capture_output=True, text=True, timeout=20)
    assert r.returncode != 0 and "nope.pem" in r.stderr, r.stderr
    r = subprocess.run([str(BINARY), "cluster", "certs", "--out", str(tmp_path / "x"), "bad id"],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "node id" in r.stderr
