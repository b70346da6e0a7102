"""ringwire behind the real reverse proxies, with the configs that ship in tuning/proxies/.

Each test writes a copy of a shipped file in which only the site-specific values change
(nginx.conf and haproxy.cfg: the value on each line marked `# @NAME`; apache-ringwire.conf:
its `Define RINGWIRE_*` lines), wraps it in a minimal main config of its own (pid, logs, temp
paths, modules: all in the test's temp dir), and runs Debian's /usr/sbin/nginx,
/usr/sbin/haproxy or /usr/sbin/apache2 on a free 127.0.0.1 port in front of two ringwire
nodes (`a` = @NODE_A / route a, `b` = @NODE_B / route b) that share a session key, with the
default endpoints (/socket.io/ socketio, /ws raw).

Contract under test:
  - a WebSocket upgrade through the proxy (session parameter + secret cookie, and an Origin
    naming the proxy's host: the proxy must pass Host through) reaches one node, and an admin
    push to that node arrives;
  - Engine.IO long-polling through the proxy stays on one node (nginx: hash on ?session=;
    haproxy: SERVERID cookie; apache: ROUTEID cookie of the sticky balancer), a push arrives
    on the held GET, and the upgrade of that sid to WebSocket reaches the same node
    (2probe -> 3probe);
  - several users long-polling through one proxy at once (the proxy's pooled connections to
    ringwire carry requests of different users) each get exactly their pushes;
  - an idle WebSocket outlives the proxy's idle timeout (3 s in the test copy: nginx @TIMEOUT,
    haproxy @TUNNEL, apache RINGWIRE_TIMEOUT) because ringwire pings every second; with a
    10 s ping interval the proxy cuts it at ~3 s (no close frame from ringwire);
  - the shipped files parse as shipped, their idle timeouts are above the ping interval, the
    dead-peer timeout and the long-polling hold of tuning/ringwire.example.toml, and pooled
    idle connections to ringwire are dropped before ringwire closes them.

A push on node A for a client on node B needs the cluster link and is not tested here.
Every process is stopped at teardown; every wait is bounded. A proxy whose binary is
missing is skipped (tests/run.sh's setup installs the Debian packages as root).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import time
import tomllib
from pathlib import Path

import pytest

from helpers import (HOST, ROOT, SESSION_KEY_A, Admin, FrameLog, cluster_factory, free_port, metric_sum, push_servers,  # noqa: F401
                     recv_text, run, wait_until, ws_connect)
from test_socketio import NEWS, Eio, ws_recv, ws_send, ws_upgrade

PROXIES = ROOT / "tuning" / "proxies"
NGINX = Path("/usr/sbin/nginx")
HAPROXY = Path("/usr/sbin/haproxy")
APACHE = Path("/usr/sbin/apache2")
APACHE_MODULES = Path("/usr/lib/apache2/modules")
BINARIES = {"nginx": NGINX, "haproxy": HAPROXY, "apache": APACHE}
DEBIAN_PACKAGE = {"nginx": "nginx", "haproxy": "haproxy", "apache": "apache2"}

ENDPOINTS = [{"path": "/socket.io/", "kind": "socketio"}, {"path": "/ws", "kind": "raw"}]
SIO_FILTER = "/socket.io/*"
M_REQUESTS = "ringwire_socketio_polling_requests_total"
# Polling GETs in these tests are answered by a push well before this; it bounds them anyway.
SOCKETIO = {"polling_timeout_ms": 3000}
# The proxies' idle timeout in the keepalive tests (test copy), and how long the client idles.
PROXY_IDLE_SECS = 3
CLIENT_IDLE_SECS = 6


def need(proxy: str) -> Path:
    binary = BINARIES[proxy]
    if not binary.is_file():
        pytest.skip(f"{binary} not installed (Debian package {DEBIAN_PACKAGE[proxy]}; "
                    f"`bash tests/run.sh` installs it when run as root)")
    return binary


# =========================================================================== shipped files -> test copies

ADDRESS = re.compile(r"(?<![\w.:])\d{1,3}(?:\.\d{1,3}){3}:\d{1,5}(?![\w.:])")
DURATION = re.compile(r"(?<![\w.:])\d+(?:ms|s|m|h)(?![\w.:])")
KIND = {"LISTEN": ADDRESS, "NODE_A": ADDRESS, "NODE_B": ADDRESS, "TIMEOUT": DURATION, "TUNNEL": DURATION}


def marked_values(text: str, name: str) -> list[str]:
    """The values on the lines of `text` marked `# @NAME` (nginx.conf, haproxy.cfg)."""
    out = []
    for line in text.splitlines():
        code, sep, comment = line.partition("#")
        if sep and code.strip() and comment.strip() == f"@{name}":
            found = KIND[name].findall(code)
            assert len(found) == 1, f"line marked @{name} must hold exactly one value: {line!r}"
            out.append(found[0])
    assert out, f"no line marked `# @{name}`"
    return out


def set_marked(text: str, name: str, value: str) -> str:
    """`text` with the value on every line marked `# @NAME` replaced by `value`."""
    lines, n = [], 0
    for line in text.splitlines(keepends=True):
        code, sep, comment = line.partition("#")
        if sep and code.strip() and comment.strip() == f"@{name}":
            code, k = KIND[name].subn(value, code)
            assert k == 1, f"line marked @{name} must hold exactly one value: {line!r}"
            line, n = code + sep + comment, n + 1
        lines.append(line)
    assert n, f"no line marked `# @{name}`"
    return "".join(lines)


def defines(text: str) -> dict[str, str]:
    """The `Define RINGWIRE_* value` lines of apache-ringwire.conf."""
    return dict(re.findall(r"(?m)^Define\s+(RINGWIRE_\w+)\s+(\S+)\s*$", text))


def set_define(text: str, name: str, value: str) -> str:
    new, k = re.subn(rf"(?m)^(Define\s+{name}\s+)\S+(\s*)$", lambda m: m.group(1) + value + m.group(2), text)
    assert k == 1, f"apache-ringwire.conf must have exactly one `Define {name} ...` line (found {k})"
    return new


def shipped(name: str) -> str:
    path = PROXIES / name
    assert path.is_file(), f"{path} missing"
    return path.read_text()


def seconds(duration: str) -> float:
    m = re.fullmatch(r"(\d+)(ms|s|m|h)?", duration)
    assert m, duration
    return int(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]


# =========================================================================== proxy processes


class Proxy:
    """A proxy process started by a test (own process group), its output in `out`."""

    def __init__(self, name: str, cmd: list[str], port: int, workdir: Path, logs: list[Path]):
        self.name = name
        self.port = port
        self.host = HOST
        self.workdir = workdir
        self.logs = logs
        self.out_path = workdir / f"{name}.out"
        self._out = open(self.out_path, "wb")
        self.proc = subprocess.Popen(cmd, cwd=workdir, stdin=subprocess.DEVNULL, stdout=self._out,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.proc.returncode} at start:\n{self.log_text()}")
            try:
                socket.create_connection((HOST, self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"{self.name} not listening on {HOST}:{self.port} within {timeout}s:\n{self.log_text()}")

    def log_text(self, tail: int = 60) -> str:
        parts = []
        for p in [self.out_path, *self.logs]:
            try:
                lines = p.read_text(errors="replace").splitlines()
            except OSError:
                continue
            parts.append(f"--- {p.name} ---\n" + "\n".join(lines[-tail:]))
        return "\n".join(parts)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        # Workers (nginx, apache) normally exit with their master; any left in the group are
        # this test's own.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self._out.close()


def nginx_main(d: Path, site: Path) -> str:
    user = "user root root;\n" if os.geteuid() == 0 else ""
    temps = "\n".join(f"    {k}_temp_path {d}/{k};" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""# test main config: tuning/proxies/nginx.conf is included in http {{}} as an operator would
daemon off;
master_process on;
worker_processes 1;
{user}pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 512; }}
http {{
    log_format upstreams '$remote_addr "$request" $status upstream=$upstream_addr '
                         'upstream_status=$upstream_status rt=$request_time';
    access_log {d}/access.log upstreams;
{temps}
    include {site};
}}
"""


HAPROXY_GLOBAL = """# test global section: tuning/proxies/haproxy.cfg is loaded after it (-f ... -f ...)
global
    maxconn 2000
    log stdout format raw local0 info
"""

APACHE_MODS = ("mpm_event", "authz_core", "proxy", "proxy_http", "proxy_wstunnel", "proxy_balancer",
               "slotmem_shm", "lbmethod_byrequests", "headers")


def apache_main(d: Path, port: int, site: Path) -> str:
    mods = "\n".join(f"LoadModule {m}_module {APACHE_MODULES}/mod_{m}.so" for m in APACHE_MODS)
    user = "User www-data\nGroup www-data\n" if os.geteuid() == 0 else ""
    return f"""# test main config: tuning/proxies/apache-ringwire.conf is included as an operator would
ServerRoot {d}
ServerName 127.0.0.1
Listen {HOST}:{port}
PidFile {d}/apache2.pid
DefaultRuntimeDir {d}
ErrorLog {d}/error.log
LogLevel warn proxy:info proxy_balancer:info
LogFormat "%h \\"%r\\" %>s route=%{{BALANCER_WORKER_ROUTE}}e changed=%{{BALANCER_ROUTE_CHANGED}}e" upstreams
CustomLog {d}/access.log upstreams
{user}{mods}
Include {site}
"""


class Proxies:
    """Starts proxies from the shipped configs; stopped at teardown."""

    def __init__(self, tmp_path: Path):
        self.tmp_path = tmp_path
        self.started: list[Proxy] = []

    def _dir(self, name: str) -> Path:
        d = self.tmp_path / f"{name}-{len(self.started)}"
        d.mkdir()
        return d

    def start(self, proxy: str, nodes: list, timeout_secs: int | None = None) -> Proxy:
        """proxy in nginx|haproxy|apache, in front of nodes [a, b]; timeout_secs replaces the
        idle timeout (nginx @TIMEOUT, haproxy @TUNNEL) in the test copy."""
        binary = need(proxy)
        port = free_port()
        d = self._dir(proxy)
        a, b = (f"{getattr(n, 'host', HOST)}:{n.port}" for n in nodes)
        if proxy == "nginx":
            text = shipped("nginx.conf")
            text = set_marked(text, "LISTEN", f"{HOST}:{port}")
            text = set_marked(set_marked(text, "NODE_A", a), "NODE_B", b)
            if timeout_secs is not None:
                text = set_marked(text, "TIMEOUT", f"{timeout_secs}s")
            site = d / "ringwire.conf"
            site.write_text(text)
            (d / "nginx-main.conf").write_text(nginx_main(d, site))
            cmd = [str(binary), "-e", str(d / "startup.log"), "-p", f"{d}/", "-c", str(d / "nginx-main.conf")]
            logs = [d / "startup.log", d / "error.log", d / "access.log"]
        elif proxy == "haproxy":
            text = shipped("haproxy.cfg")
            text = set_marked(text, "LISTEN", f"{HOST}:{port}")
            text = set_marked(set_marked(text, "NODE_A", a), "NODE_B", b)
            if timeout_secs is not None:
                text = set_marked(text, "TUNNEL", f"{timeout_secs}s")
            site = d / "ringwire.cfg"
            site.write_text(text)
            (d / "global.cfg").write_text(HAPROXY_GLOBAL)
            cmd = [str(binary), "-db", "-f", str(d / "global.cfg"), "-f", str(site)]
            logs = []
        else:
            text = shipped("apache-ringwire.conf")
            text = set_define(text, "RINGWIRE_VHOST", f"{HOST}:{port}")
            text = set_define(set_define(text, "RINGWIRE_NODE_A", a), "RINGWIRE_NODE_B", b)
            if timeout_secs is not None:
                text = set_define(text, "RINGWIRE_TIMEOUT", str(timeout_secs))
            site = d / "ringwire.conf"
            site.write_text(text)
            (d / "apache-main.conf").write_text(apache_main(d, port, site))
            cmd = [str(binary), "-DFOREGROUND", "-f", str(d / "apache-main.conf")]
            logs = [d / "error.log", d / "access.log"]
        p = Proxy(proxy, cmd, port, d, logs)
        self.started.append(p)
        p.wait_ready()
        return p


@pytest.fixture
def proxies(tmp_path):
    p = Proxies(tmp_path)
    yield p
    for proxy in p.started:
        proxy.stop()
    for proxy in p.started:  # shown by pytest for a failed test (captured teardown output)
        print(f"===== {proxy.name} on {HOST}:{proxy.port}, exit {proxy.proc.returncode}\n{proxy.log_text()}")


def start_nodes(push_servers, **overrides) -> list:
    """Two ringwire nodes (a, b) sharing a session key, default endpoints."""
    overrides.setdefault("endpoints", ENDPOINTS)
    overrides.setdefault("sessions", {"key": SESSION_KEY_A})
    overrides.setdefault("socketio", SOCKETIO)
    return [push_servers.start(**overrides) for _ in range(2)]


# =========================================================================== where is a socket


def counts(nodes, user: int, path: str) -> list[int]:
    return [Admin(n).sockets(1, user, path).get("count") for n in nodes]


def node_of(nodes, user: int, path: str) -> int:
    """Index of the one node holding the user's one socket on `path` (waits for it)."""
    seen = {}

    def one():
        seen["c"] = counts(nodes, user, path)
        return sorted(seen["c"]) == [0, 1]

    wait_until(one, 5, what=f"exactly one socket of user {user} on {path} over both nodes")
    return seen["c"].index(1)


def polling_requests(node) -> float:
    return metric_sum(Admin(node).metrics(), M_REQUESTS)


def sticky_cookie(resp) -> tuple[str, str] | None:
    """(name, value) of a SERVERID (haproxy) or ROUTEID (apache) cookie set by `resp`."""
    m = re.search(r"\b(SERVERID|ROUTEID)=([^;,\s]+)", resp.headers.get("set-cookie", ""))
    return (m.group(1), m.group(2)) if m else None


def origin_of(proxy: Proxy) -> str:
    return f"http://{HOST}:{proxy.port}"


# =========================================================================== scenarios (all proxies)


def websocket_push_scenario(proxy: Proxy, nodes, users=(42, 43, 44, 45)) -> list[int]:
    """One /ws socket per user through the proxy, with an Origin naming the proxy's host; a
    push on the node each landed on arrives. -> the node index of each socket."""

    async def go():
        landed, sockets = [], []
        try:
            for user in users:
                s = Admin(nodes[0]).mint(user=user)
                sockets.append(await ws_connect(proxy, s, "/ws", origin=origin_of(proxy)))
                landed.append(await asyncio.to_thread(node_of, nodes, user, "/ws"))
            for user, ws, i in zip(users, sockets, landed):
                msg = f"via {proxy.name} to user {user} on node {'ab'[i]}"
                n = await asyncio.to_thread(Admin(nodes[i]).push_ok, context=1, user=user, path="/ws", message=msg)
                assert n == 1, f"push on node {'ab'[i]} reached {n} sockets"
                assert await recv_text(ws) == msg
        finally:
            for ws in sockets:
                await ws.close()
        return landed

    return run(go(), 30)


def polling_scenario(proxy: Proxy, nodes, user: int = 42) -> tuple[int, tuple[str, str] | None, Eio, dict]:
    """Engine.IO v4 long-polling through the proxy: handshake (keeping a sticky cookie if the
    proxy sets one), then 10 polling requests (POST 40, GET 40{sid}, 4 x (POST an event, push,
    GET the push)), all on the node that created the sid; a push to it reaches a held GET.
    -> (node index, sticky cookie, the Eio, the session)."""
    session = Admin(nodes[0]).mint(user=user)
    before = [polling_requests(n) for n in nodes]
    e = Eio(proxy, session, 4)
    e.handshake()
    assert e.open.get("upgrades") == ["websocket"], e.open
    sticky = sticky_cookie(e.handshake_resp)
    if sticky is not None:
        e.session = {**session, "cookie": f"{session['cookie']}; {sticky[0]}={sticky[1]}"}
    e.connect()  # POST 40, GET -> 40{sid}
    i = node_of(nodes, user, SIO_FILTER)
    admin = Admin(nodes[i])
    for k in range(4):
        e.post(f'42["client",{k}]')
        assert admin.push_ok(context=1, user=user, path=SIO_FILTER, message=f'["news",{k}]') == 1
        got = e.collect(lambda ps: len(ps) >= 1)
        assert got == [f'42["news",{k}]'], f"GET {k} through {proxy.name}: {got!r}"
    # A held GET answered by a push.
    e.send_get()
    assert not e.http.readable(0.3), "GET answered with nothing to send"
    assert admin.push_ok(context=1, user=user, path=SIO_FILTER, message=NEWS) == 1
    assert e.read_get(timeout=5) == ["42" + NEWS]
    after = [polling_requests(n) for n in nodes]
    done = [b - a for a, b in zip(before, after)]
    assert done[i] >= 12 and done[1 - i] == 0, \
        f"polling requests through {proxy.name} per node (a, b): {done}; the session lives on node {'ab'[i]}"
    assert counts(nodes, user, SIO_FILTER)[1 - i] == 0
    return i, sticky, e, session


def upgrade_scenario(proxy: Proxy, nodes, i: int, e: Eio, user: int = 42) -> None:
    """Upgrade the polling sid `e` to WebSocket through the proxy (its cookies included):
    101 from node i (the only one knowing the sid), 2probe -> 3probe, the held GET gets a
    noop, then a push to node i arrives on the WebSocket."""
    e.send_get()
    assert not e.http.readable(0.3)
    ws, resp = ws_upgrade(proxy, e.target(transport="websocket"), e.headers())
    assert ws is not None, f"upgrade of sid {e.sid} through {proxy.name}: expected 101, got {resp!r}"
    try:
        ws_send(ws, "2probe")
        assert ws_recv(ws) == "3probe"
        assert e.read_get(timeout=3) == ["6"], "held GET not answered with a noop after 2probe"
        ws_send(ws, "5")
        time.sleep(0.2)
        assert counts(nodes, user, SIO_FILTER) == [int(k == i) for k in range(2)], \
            "the upgraded socket must be the same single socket on the same node"
        assert Admin(nodes[i]).push_ok(context=1, user=user, path=SIO_FILTER, message='["upgraded"]') == 1
        assert ws_recv(ws) == '42["upgraded"]'
    finally:
        ws.close()
        e.http.close()


def many_users_polling_scenario(proxy: Proxy, nodes, users=range(100, 108)) -> list[int]:
    """Several users long-polling through one proxy at once, their requests interleaved, so the
    proxy's pooled connections to ringwire carry requests of different users (ringwire moves
    such a connection between cores). Every held GET gets its user's push, and only it.
    -> the node index of each user."""
    sessions, where = {}, []
    for user in users:
        s = Admin(nodes[0]).mint(user=user)
        e = Eio(proxy, s, 4)
        e.handshake()
        sticky = sticky_cookie(e.handshake_resp)
        if sticky is not None:
            e.session = {**s, "cookie": f"{s['cookie']}; {sticky[0]}={sticky[1]}"}
        e.connect()
        sessions[user] = e
        where.append(node_of(nodes, user, SIO_FILTER))
    try:
        for k in range(3):
            for user, e in sessions.items():
                e.post(f'42["from",{user},{k}]')
            for user, e in sessions.items():
                e.send_get()
            for user, e in sessions.items():
                assert not e.http.readable(0), f"user {user}: GET answered before any push"
            for (user, e), i in zip(sessions.items(), where):
                assert Admin(nodes[i]).push_ok(context=1, user=user, path=SIO_FILTER,
                                               message=f'["to",{user},{k}]') == 1
            for user, e in sessions.items():
                got = e.read_get(timeout=5)
                assert got == [f'42["to",{user},{k}]'], f"round {k}: user {user} got {got!r}"
    finally:
        for e in sessions.values():
            e.http.close()
    return where


def idle_scenario(proxy: Proxy, nodes, *, expect_alive: bool) -> None:
    """A /ws socket through the proxy stays idle (the client sends nothing but pongs to the
    server's pings) for CLIENT_IDLE_SECS, longer than the proxy's PROXY_IDLE_SECS idle timeout."""

    async def go():
        s = Admin(nodes[0]).mint(user=42)
        log = FrameLog()
        ws = await ws_connect(proxy, s, "/ws", logger=log.logger)
        i = await asyncio.to_thread(node_of, nodes, 42, "/ws")
        t0 = time.monotonic()
        try:
            if expect_alive:
                try:
                    msg = await asyncio.wait_for(ws.recv(), CLIENT_IDLE_SECS)
                    raise AssertionError(f"unexpected message {msg!r}")
                except (asyncio.TimeoutError, TimeoutError):
                    pass
                pings = sum(1 for f in log.frames if f.opcode.name == "PING")
                assert pings >= CLIENT_IDLE_SECS - 2, f"only {pings} server pings in {CLIENT_IDLE_SECS}s"
                n = await asyncio.to_thread(Admin(nodes[i]).push_ok, context=1, user=42, path="/ws",
                                            message="still here")
                assert n == 1, f"after {CLIENT_IDLE_SECS}s idle the socket is gone from node {'ab'[i]} ({n} sockets)"
                assert await recv_text(ws) == "still here", "push after the idle period"
            else:
                from websockets.exceptions import ConnectionClosed

                try:
                    msg = await asyncio.wait_for(ws.recv(), CLIENT_IDLE_SECS + 2)
                    raise AssertionError(f"unexpected message {msg!r}")
                except ConnectionClosed:
                    pass
                except (asyncio.TimeoutError, TimeoutError):
                    raise AssertionError(f"{proxy.name} kept a silent socket open {CLIENT_IDLE_SECS + 2}s "
                                         f"with an idle timeout of {PROXY_IDLE_SECS}s")
                dt = time.monotonic() - t0
                assert PROXY_IDLE_SECS - 1 <= dt <= PROXY_IDLE_SECS + 2.5, \
                    f"closed after {dt:.1f}s, expected about {PROXY_IDLE_SECS}s (the proxy's idle timeout)"
                assert ws.protocol.close_rcvd is None, \
                    f"ringwire closed the socket ({ws.protocol.close_rcvd}), expected the proxy to cut it"
                assert not any(f.opcode.name == "PING" for f in log.frames), "ringwire pinged within 10s?"
                # ringwire sees the proxy's TCP close and forgets the socket.
                await asyncio.to_thread(wait_until, lambda: counts(nodes, 42, "/ws") == [0, 0], 5, 0.1,
                                        "the cut socket to leave ringwire")
        finally:
            await ws.close()

    run(go(), CLIENT_IDLE_SECS + 25)


# =========================================================================== nginx and haproxy


@pytest.mark.parametrize("proxy", ["nginx", "haproxy"])
def test_websocket_push_through_proxy(push_servers, proxies, proxy):
    need(proxy)
    nodes = start_nodes(push_servers)
    p = proxies.start(proxy, nodes)
    landed = websocket_push_scenario(p, nodes)
    assert len(landed) == 4


@pytest.mark.parametrize("proxy", ["nginx", "haproxy"])
def test_polling_through_proxy_sticks_to_one_node(push_servers, proxies, proxy):
    need(proxy)
    nodes = start_nodes(push_servers)
    p = proxies.start(proxy, nodes)
    i, sticky, e, _ = polling_scenario(p, nodes)
    if proxy == "haproxy":
        assert sticky is not None and sticky[0] == "SERVERID", \
            f"haproxy should set the SERVERID cookie: {e.handshake_resp!r}"
        assert sticky[1] == "ab"[i], f"SERVERID={sticky[1]} but the session lives on node {'ab'[i]}"
    upgrade_scenario(p, nodes, i, e)


@pytest.mark.parametrize("proxy", ["nginx", "haproxy", "apache"])
def test_many_polling_users_through_one_proxy(push_servers, proxies, proxy):
    need(proxy)
    nodes = start_nodes(push_servers)
    p = proxies.start(proxy, nodes)
    where = many_users_polling_scenario(p, nodes)
    assert len(where) == 8


@pytest.mark.parametrize("proxy", ["nginx", "haproxy", "apache"])
def test_idle_websocket_kept_alive_by_server_pings(push_servers, proxies, proxy):
    """Proxy idle timeout 3 s, ringwire pings every 1 s (idle timeout 5 s): 6 s idle, then a push."""
    need(proxy)
    nodes = start_nodes(push_servers, limits={"ping_interval_secs": 1, "idle_timeout_secs": 5})
    p = proxies.start(proxy, nodes, timeout_secs=PROXY_IDLE_SECS)
    idle_scenario(p, nodes, expect_alive=True)


@pytest.mark.parametrize("proxy", ["nginx", "haproxy", "apache"])
def test_idle_websocket_cut_by_proxy_without_pings(push_servers, proxies, proxy):
    """The counter-case: pings every 10 s, so the proxy (3 s) cuts the idle socket at ~3 s."""
    need(proxy)
    nodes = start_nodes(push_servers, limits={"ping_interval_secs": 10, "idle_timeout_secs": 30})
    p = proxies.start(proxy, nodes, timeout_secs=PROXY_IDLE_SECS)
    idle_scenario(p, nodes, expect_alive=False)


# =========================================================================== apache (sticky balancer)


def test_apache_websocket_push_reaches_the_node_it_landed_on(push_servers, proxies):
    need("apache")
    nodes = start_nodes(push_servers)
    p = proxies.start("apache", nodes)
    landed = websocket_push_scenario(p, nodes)
    # No sticky cookie on these clients: the byrequests balancer spreads them.
    assert set(landed) == {0, 1}, f"4 upgrades through the balancer all landed on node {'ab'[landed[0]]}"


def test_apache_sticky_routing_keeps_polling_on_one_node(push_servers, proxies):
    need("apache")
    nodes = start_nodes(push_servers)
    p = proxies.start("apache", nodes)
    i, sticky, e, session = polling_scenario(p, nodes)
    assert sticky is not None and sticky[0] == "ROUTEID", \
        f"the balancer should set ROUTEID=.<route> on the handshake: {e.handshake_resp!r}"
    assert sticky[1] == "." + "ab"[i], f"ROUTEID={sticky[1]} but the session lives on node {'ab'[i]}"

    # Control: the same sid without the ROUTEID cookie is balanced per request, and the node
    # that did not create it does not know it.
    bare = Eio(p, session, 4)
    bare.sid = e.sid
    answers = [bare.post_resp(f'42["bare",{k}]') for k in range(6)]
    unknown = [r for r in answers if r.status == 400]
    assert unknown and all(r.json() == {"code": 1, "message": "Session ID unknown"} for r in unknown), \
        f"without ROUTEID every request should not reach node {'ab'[i]}: {answers!r}"
    assert all(r.status == 200 and r.body == b"ok" for r in answers if r.status != 400), answers
    bare.http.close()

    # The upgrade of that sid, with the cookie, reaches the same node.
    upgrade_scenario(p, nodes, i, e)


def test_apache_cluster_push_on_one_node_reaches_clients_of_the_other(cluster_factory, proxies):
    """Two clustered nodes (127.0.0.1 and .2) behind the shipped Apache balancer: clients
    land on both nodes through Apache, and a push made on the node a client is NOT connected
    to reaches it over the cluster link, for a WebSocket and for a sticky long-polling session."""
    need("apache")
    cluster = cluster_factory.make(["a", "b"], extra={"endpoints": ENDPOINTS, "socketio": SOCKETIO})
    cluster.start_all()
    nodes = [cluster.servers["a"], cluster.servers["b"]]
    p = proxies.start("apache", nodes)

    def local(i, user, path):  # this node's own count (the first entry of "nodes")
        return Admin(nodes[i]).sockets(1, user, path)["nodes"][0]["count"]

    def landed_on(user, path):
        seen = {}

        def one():
            seen["c"] = [local(i, user, path) for i in range(2)]
            both = [Admin(n).sockets(1, user, path)["count"] for n in nodes]
            return sorted(seen["c"]) == [0, 1] and both == [1, 1]

        wait_until(one, 5, what=f"user {user}'s socket on one node, known to both")
        return seen["c"].index(1)

    async def websockets_go():
        users, sockets, landed = (42, 43, 44, 45), [], []
        try:
            for user in users:
                s = Admin(nodes[0]).mint(user=user)
                sockets.append(await ws_connect(p, s, "/ws", origin=origin_of(p)))
                landed.append(await asyncio.to_thread(landed_on, user, "/ws"))
            for user, ws, i in zip(users, sockets, landed):
                other = 1 - i
                msg = f"pushed on node {'ab'[other]} for user {user} on node {'ab'[i]}"
                r = await asyncio.to_thread(Admin(nodes[other]).push, context=1, user=user, path="/ws",
                                            message=msg, coalesce=False)
                assert r.status == 202 and r.json == {"sockets": 0, "remote_nodes": 1}, r
                assert await recv_text(ws) == msg
        finally:
            for ws in sockets:
                await ws.close()
        return landed

    landed = run(websockets_go(), 40)
    assert set(landed) == {0, 1}, f"4 upgrades through the balancer all landed on node {'ab'[landed[0]]}"

    # Long-polling: sticky to the node that created the sid; a push on the other node
    # reaches the held GET through the link and Apache.
    user = 50
    session = Admin(nodes[0]).mint(user=user)
    e = Eio(p, session, 4)
    e.handshake()
    sticky = sticky_cookie(e.handshake_resp)
    assert sticky is not None and sticky[0] == "ROUTEID", e.handshake_resp
    e.session = {**session, "cookie": f"{session['cookie']}; {sticky[0]}={sticky[1]}"}
    e.connect()
    try:
        i = landed_on(user, SIO_FILTER)
        assert sticky[1] == "." + "ab"[i]
        e.send_get()
        assert not e.http.readable(0.3), "GET answered with nothing to send"
        r = Admin(nodes[1 - i]).push(context=1, user=user, path=SIO_FILTER, message=NEWS, coalesce=False)
        assert r.status == 202 and r.json == {"sockets": 0, "remote_nodes": 1}, r
        assert e.read_get(timeout=5) == ["42" + NEWS]
    finally:
        e.http.close()


# =========================================================================== the shipped files themselves


def example_limits() -> tuple[float, float, float, float]:
    """(ping_interval, idle_timeout, polling hold, keep-alive idle) in seconds from
    tuning/ringwire.example.toml; ringwire closes an idle keep-alive connection after
    ping_interval + socketio.ping_timeout."""
    cfg = tomllib.loads((ROOT / "tuning" / "ringwire.example.toml").read_text())
    ping = cfg["limits"]["ping_interval_secs"]
    return (ping, cfg["limits"]["idle_timeout_secs"], cfg["socketio"]["polling_timeout_ms"] / 1000,
            ping + cfg["socketio"]["ping_timeout_ms"] / 1000)


@pytest.mark.parametrize("proxy", ["nginx", "haproxy", "apache"])
def test_shipped_config_valid_and_timeouts_above_ping_interval(tmp_path, proxy):
    """The file as shipped (no substitution) passes the proxy's own config check, and its idle
    timeouts exceed ringwire's default ping interval, idle timeout and long-polling hold."""
    binary = need(proxy)
    ping, idle, hold, keepalive = example_limits()
    pooled = []  # how long the proxy keeps an idle connection to ringwire for reuse
    if proxy == "nginx":
        text = shipped("nginx.conf")
        timeouts = [seconds(v) for v in marked_values(text, "TIMEOUT")]
        pooled = [seconds(v) for v in re.findall(r"(?m)^\s*keepalive_timeout\s+(\w+);", text)]
        assert pooled, "nginx.conf: the upstream needs a keepalive_timeout"
        for name in ("LISTEN", "NODE_A", "NODE_B"):
            marked_values(text, name)
        main = tmp_path / "nginx-main.conf"
        main.write_text(nginx_main(tmp_path, PROXIES / "nginx.conf"))
        cmd = [str(binary), "-t", "-e", str(tmp_path / "startup.log"), "-p", f"{tmp_path}/", "-c", str(main)]
    elif proxy == "haproxy":
        text = shipped("haproxy.cfg")
        timeouts = [seconds(v) for v in marked_values(text, "TIMEOUT") + marked_values(text, "TUNNEL")]
        for name in ("LISTEN", "NODE_A", "NODE_B"):
            marked_values(text, name)
        (tmp_path / "global.cfg").write_text(HAPROXY_GLOBAL)
        cmd = [str(binary), "-c", "-f", str(tmp_path / "global.cfg"), "-f", str(PROXIES / "haproxy.cfg")]
    else:
        text = shipped("apache-ringwire.conf")
        d = defines(text)
        assert {"RINGWIRE_VHOST", "RINGWIRE_NODE_A", "RINGWIRE_NODE_B", "RINGWIRE_TIMEOUT"} <= d.keys(), d
        timeouts = [float(d["RINGWIRE_TIMEOUT"])]
        pooled = [float(v) for v in re.findall(r"(?m)^\s*BalancerMember\s.*\bttl=(\d+)", text)]
        assert len(pooled) == 2, "apache-ringwire.conf: each BalancerMember needs a ttl="
        main = tmp_path / "apache-main.conf"
        main.write_text(apache_main(tmp_path, free_port(), PROXIES / "apache-ringwire.conf"))
        cmd = [str(binary), "-t", "-f", str(main)]
    r = subprocess.run(cmd, cwd=tmp_path, stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
    out = (r.stdout + r.stderr).decode(errors="replace")
    assert r.returncode == 0, f"{' '.join(cmd)} -> {r.returncode}:\n{out}"
    for t in timeouts:
        assert t > max(ping, idle, hold), \
            f"{proxy}: idle timeout {t}s must exceed ping_interval {ping}s, idle_timeout {idle}s, polling hold {hold}s"
    for t in pooled:
        assert t < keepalive, f"{proxy}: idle pooled connections ({t}s) must go before ringwire closes them ({keepalive}s)"
