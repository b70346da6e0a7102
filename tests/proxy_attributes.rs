//! `auth = "proxy"` in an embedding process: the application's answer gives the socket its
//! user and first attributes, which a listener sees on its events. The application is a
//! plain TCP server answering one JSON; the proxy client's task runs on a runtime of its own.
mod common;

use ringwire::config::Config;
use ringwire::runtime::Engine;
use ringwire::service::listener::{Listener, SocketInfo};
use ringwire::service::session::SessionKey;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tungstenite::client::IntoClientRequest;

type Connect = (u32, ringwire::facade::UserId, Vec<(String, String)>);

#[derive(Default)]
struct Recorder(Mutex<Vec<Connect>>);

impl Listener for Recorder {
    fn on_connect(&self, s: &SocketInfo<'_>) {
        let a = s.auth.expect("proxy endpoint");
        let attrs = s
            .attrs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.0
            .lock()
            .unwrap()
            .push((a.context, a.user.clone(), attrs));
    }
}

/// The application: answers every request with `body` (status 200), reports the requests.
fn application(body: &'static str) -> (u16, std::sync::mpsc::Receiver<String>) {
    let app = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = app.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in app.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let _ = tx.send(String::from_utf8_lossy(&req).into_owned());
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(answer.as_bytes());
        }
    });
    (port, rx)
}

#[test]
fn the_answers_user_and_attributes_reach_the_listener() {
    let (app_port, requests) =
        application(r#"{"user": 5, "context": 2, "attributes": {"plan": "pro", "seats": 3}}"#);
    let port = common::free_port();
    let config = Config::from_toml(&format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\ncores = 2\n[proxy]\nurl = \"http://127.0.0.1:{app_port}/auth\"\n\
         [[endpoints]]\npath = \"/ws\"\nkind = \"raw\"\nauth = \"proxy\"\n"
    ))
    .unwrap();
    let recorder = Arc::new(Recorder::default());
    let engine = Engine::start(
        config,
        SessionKey::random(),
        vec![recorder.clone() as Arc<dyn Listener>],
        None,
        None,
    )
    .unwrap();
    let client = engine.shared.proxy.clone().expect("[proxy] makes a client");
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(client.run())
    });

    let mut req = format!("ws://127.0.0.1:{port}/ws/room?x=1")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("Cookie", "app_session=abc".parse().unwrap());
    let (_ws, _) = tungstenite::connect(req).expect("upgrade admitted by the application");

    let asked = requests.recv_timeout(Duration::from_secs(5)).unwrap();
    let asked = asked.to_ascii_lowercase();
    assert!(asked.starts_with("get /auth http/1.1\r\n"), "{asked}");
    assert!(asked.contains("\r\ncookie: app_session=abc\r\n"), "{asked}");
    assert!(
        asked.contains("\r\nx-forwarded-uri: /ws/room?x=1\r\n"),
        "{asked}"
    );
    let mut seen = None;
    for _ in 0..200 {
        seen = recorder.0.lock().unwrap().first().cloned();
        if seen.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let (context, user, mut attrs) = seen.expect("the listener saw the connect");
    attrs.sort();
    assert_eq!((context, user), (2, 5.into()));
    assert_eq!(
        attrs,
        [
            ("plan".to_string(), "pro".to_string()),
            ("seats".to_string(), "3".to_string())
        ]
    );
    engine.shutdown();
    engine.join();
}
