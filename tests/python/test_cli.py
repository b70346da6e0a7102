"""`ringwire serve --check`: validates a config and exits 0/1 without serving."""

from __future__ import annotations

import subprocess

import pytest

from helpers import BINARY, free_port, make_config, render_config


def check(path) -> subprocess.CompletedProcess:
    if not BINARY.is_file():
        pytest.fail(f"{BINARY} not found: build with `cargo build --release` first")
    return subprocess.run([str(BINARY), "serve", "--config", str(path), "--check"],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=20)


def test_check_accepts_good_config(config_file):
    port = free_port()
    r = check(config_file(render_config(make_config(port, free_port()))))
    assert r.returncode == 0, f"exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"


def test_check_does_not_bind(config_file):
    """--check validates and exits; it does not start serving."""
    port = free_port()
    r = check(config_file(render_config(make_config(port, free_port()))))
    assert r.returncode == 0, r.stderr
    assert "ringwire ready" not in r.stderr


@pytest.mark.parametrize("section,key", [("server", "bogus_key"), ("limits", "max_franes_bytes")])
def test_check_rejects_unknown_key(config_file, section, key):
    cfg = make_config(free_port(), free_port())
    cfg[section][key] = 1
    r = check(config_file(render_config(cfg)))
    out = r.stdout + r.stderr
    assert r.returncode != 0, f"unknown key accepted\nstdout: {r.stdout}\nstderr: {r.stderr}"
    assert key in out, f"message does not name the unknown key {key!r}: {out!r}"
    assert "panicked" not in out, out


def test_check_rejects_unknown_section(config_file):
    r = check(config_file(render_config(make_config(free_port(), free_port())) + "\n[nosuchsection]\nx = 1\n"))
    assert r.returncode != 0
    assert "nosuchsection" in r.stdout + r.stderr


@pytest.mark.parametrize("text,needle", [
    ('[server]\nlisten = "127.0.0.1:1"\n[[endpoints]]\npath = "/ws"\nkind = "raw"\nauth = "none"\n', "auth"),
    ('[server]\nlisten = "not an address"\n', "listen"),
    ('[limits]\nhandshake_timeout_ms = 0\n', "handshake_timeout_ms"),
    ('this is = = not toml\n', ""),
    ('[security]\nallowed_origins = ["https://app.example.com/"]\n', "never matches"),
    ('[security]\nallowed_origins = ["app.example.com"]\n', "scheme://host"),
    ('[security]\nallowed_origins = ["https://app.example.com:443"]\n', "write https://app.example.com"),
])
def test_check_rejects_invalid_config(config_file, text, needle):
    r = check(config_file(text))
    out = r.stdout + r.stderr
    assert r.returncode != 0, f"invalid config accepted: {text!r}"
    assert needle in out, out
    assert "panicked" not in out, out


def test_check_missing_file(tmp_path):
    r = check(tmp_path / "does-not-exist.toml")
    assert r.returncode != 0
    assert "does-not-exist.toml" in r.stdout + r.stderr


def test_keygen_key_is_accepted_and_an_unset_key_is_warned_about(config_file):
    """`ringwire keygen` prints a fresh sessions.key; without one, --check (and the server's
    start) warn that sessions die on restart."""
    keys = [subprocess.run([str(BINARY), "keygen"], capture_output=True, text=True, timeout=10) for _ in range(2)]
    for k in keys:
        assert k.returncode == 0 and len(k.stdout.strip()) == 64, k
        int(k.stdout.strip(), 16)
    assert keys[0].stdout != keys[1].stdout
    session_ep = '[[endpoints]]\npath = "/ws"\nkind = "raw"\nauth = "session"\n'
    r = check(config_file(session_ep))
    assert r.returncode == 0 and "sessions.key is unset" in r.stderr, r.stderr
    r = check(config_file(f'[sessions]\nkey = "{keys[0].stdout.strip()}"\n' + session_ep))
    assert r.returncode == 0 and "sessions.key" not in r.stderr, r.stderr


def test_defaults_prints_a_config_that_checks_and_equals_the_example(tmp_path):
    r = subprocess.run([str(BINARY), "defaults"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0
    from pathlib import Path
    example = Path(__file__).resolve().parents[2] / "tuning" / "ringwire.example.toml"
    assert r.stdout == example.read_text()
    f = tmp_path / "defaults.toml"
    f.write_text(r.stdout)
    c = subprocess.run([str(BINARY), "serve", "--check", "--config", str(f)], capture_output=True, text=True,
                       timeout=10)
    assert c.returncode == 0, c.stderr


def test_listen_flags_override_the_file_and_are_checked(config_file):
    import socket
    import time

    path = config_file(render_config(make_config(free_port(), free_port())))
    port, admin = free_port(), free_port()
    p = subprocess.Popen([str(BINARY), "serve", "--config", str(path), "--listen", f"127.0.0.1:{port}",
                          "--admin-listen", f"127.0.0.1:{admin}"], stderr=subprocess.PIPE, text=True)
    try:
        line = ""
        deadline = time.monotonic() + 15
        while "ringwire ready" not in line and time.monotonic() < deadline:
            line = p.stderr.readline()
        assert f"listening on 127.0.0.1:{port}" in line and f"admin on 127.0.0.1:{admin}" in line, line
        assert "endpoints / (echo)" in line, line  # the ready line names the endpoints
        for q in (port, admin):
            socket.create_connection(("127.0.0.1", q), 2).close()
    finally:
        p.terminate()
        p.wait(15)
    # An admin API off loopback still needs a token, whatever says where it listens.
    r = subprocess.run([str(BINARY), "serve", "--check", "--config", str(path), "--admin-listen",
                        f"0.0.0.0:{free_port()}"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 2 and "admin.token is mandatory" in r.stderr, r.stderr
