//! Helpers for integration tests: run the real `ringwire` binary on free loopback ports.
#![allow(dead_code)]
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub struct Server {
    child: Child,
    pub port: u16,
    pub admin_port: u16,
    pub log: mpsc::Receiver<String>,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Server {
    /// Start ringwire with `extra` TOML appended to a config holding the listen addresses.
    pub fn start(extra: &str) -> Server {
        let port = free_port();
        let admin_port = free_port();
        let dir = std::env::temp_dir().join(format!("ringwire-test-{port}"));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = dir.join("ringwire.toml");
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\ncores = 2\ndrain_secs = 0\n[admin]\nlisten = \"127.0.0.1:{admin_port}\"\n{extra}"
        );
        std::fs::write(&cfg, text).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_ringwire"))
            .args(["serve", "--config"])
            .arg(&cfg)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn ringwire");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.contains("ringwire ready") => break,
                Ok(_) => continue,
                Err(_) => {
                    let _ = child.kill();
                    panic!("ringwire did not log 'ringwire ready' within 20 s");
                }
            }
        }
        Server {
            child,
            port,
            admin_port,
            log: rx,
        }
    }

    /// GET on the admin listener; returns (status, body).
    pub fn admin_get(&self, path: &str) -> (u16, String) {
        http_get(self.admin_port, path, "")
    }

    pub fn stats(&self) -> serde_json::Value {
        let (status, body) = self.admin_get("/v1/stats");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://127.0.0.1:{}{}", self.port, path)
    }

    /// SIGTERM and wait (bounded).
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        for _ in 0..100 {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        panic!("ringwire did not exit within 5 s of SIGTERM");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A one-shot HTTP/1.1 GET; returns (status, body).
pub fn http_get(port: u16, path: &str, extra_headers: &str) -> (u16, String) {
    raw_request(
        port,
        format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra_headers}Connection: close\r\n\r\n"
        )
        .as_bytes(),
    )
}

/// Send raw bytes, read until EOF (5 s max); returns (status, body).
pub fn raw_request(port: u16, request: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// A current-thread tokio runtime, to block on the `Service` API of an embedded engine.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}
