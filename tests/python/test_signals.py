"""A SIGTERM that arrives right after the node said it is ready (its ready line, or READY=1 on
$NOTIFY_SOCKET under systemd) drains and exits 0: the handlers are installed before either is
said. Before, a signal in that window took the default action and killed the process (exit
-15, no drain, no STOPPING=1), about one start in ten on a busy host."""

from __future__ import annotations

import os
import signal
import socket
import subprocess

from helpers import BINARY, free_port, make_config, render_config

STARTS = 8


def test_sigterm_at_the_ready_line_drains(tmp_path):
    for i in range(STARTS):
        cfg = tmp_path / f"ringwire-{i}.toml"
        cfg.write_text(render_config(make_config(free_port(), free_port())))
        proc = subprocess.Popen([str(BINARY), "serve", "--config", str(cfg)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        try:
            for line in proc.stderr:
                if "ringwire ready" in line:
                    proc.send_signal(signal.SIGTERM)  # at once: no sleep, no poll
                    break
            rest = proc.communicate(timeout=20)[1]
            assert proc.returncode == 0, f"start {i}: exit {proc.returncode}\n{rest}"
            assert "shutting down" in rest, f"start {i}: no drain\n{rest}"
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)


def test_sigterm_at_ready_1_sends_stopping_1(tmp_path):
    path = str(tmp_path / "notify.sock")
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(path)
    rx.settimeout(20)
    try:
        for i in range(STARTS):
            cfg = tmp_path / f"ringwire-{i}.toml"
            cfg.write_text(render_config(make_config(free_port(), free_port())))
            proc = subprocess.Popen([str(BINARY), "serve", "--config", str(cfg)],
                                    env={**os.environ, "NOTIFY_SOCKET": path},
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            try:
                assert rx.recv(64) == b"READY=1"
                proc.send_signal(signal.SIGTERM)
                assert rx.recv(64) == b"STOPPING=1", f"start {i}"
                assert proc.wait(20) == 0, f"start {i}: exit {proc.returncode}"
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(5)
    finally:
        rx.close()
