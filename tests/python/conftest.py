"""Shared fixtures: each test starts its own ringwire on a free 127.0.0.1 port.

The binary is not built here: tests/run.sh builds target/release/ringwire first
(override with RINGWIRE_BIN). A test's ringwire stderr is attached to the
report when the test fails.
"""

from __future__ import annotations

import pytest

from helpers import BINARY, Server, free_port, make_config, render_config


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed:
        for server in getattr(item, "_ringwire_servers", []):
            report.sections.append(
                (f"ringwire stderr (port {server.port}, {report.when})", server.stderr_text() or "<empty>")
            )
    return report


@pytest.fixture
def start_server(request, tmp_path):
    """Factory: start_server(**overrides) -> Server, ready. Killed at teardown.

    overrides: {section: {key: value}} merged into the default echo config, or
    endpoints=[{...}] to replace the endpoint list.
    """
    if not BINARY.is_file():
        pytest.fail(f"{BINARY} not found: build with `cargo build --release` first")
    servers: list[Server] = []
    request.node._ringwire_servers = servers

    def start(**overrides) -> Server:
        port, admin_port = free_port(), free_port()
        while admin_port == port:
            admin_port = free_port()
        path = tmp_path / f"ringwire-{len(servers)}.toml"
        path.write_text(render_config(make_config(port, admin_port, **overrides)))
        server = Server(path, port, admin_port)
        servers.append(server)
        server.wait_ready()
        return server

    yield start
    crashed = [s for s in servers if not s.alive()]
    for server in servers:
        server.stop()
    if crashed:
        pytest.fail(
            "ringwire exited during the test: "
            + ", ".join(f"port {s.port} exit code {s.proc.returncode}" for s in crashed)
            + "\n--- stderr ---\n" + "\n".join(s.stderr_text() for s in crashed)
        )


@pytest.fixture
def server(start_server):
    """A ringwire with the default echo config (16 MiB limits, compression on, 2 cores)."""
    return start_server()


@pytest.fixture
def config_file(tmp_path):
    """Factory: config_file(text) -> path of a config file with that text."""

    def write(text: str):
        path = tmp_path / f"check-{abs(hash(text))}.toml"
        path.write_text(text)
        return path

    return write
