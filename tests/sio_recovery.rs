//! Socket.IO connection state recovery through the Rust API (engine + listener + service),
//! with Engine.IO v4 spoken by hand over tungstenite: an attribute set on a socket with
//! `Service::set_attribute` is there again once a reconnecting client restored its session
//! (listeners see it on the restored socket's events), with the same socket id and pid and
//! the push it missed; a claim in bad form is a fresh connect, not an error.
mod common;

use ringwire::config::Config;
use ringwire::facade::Service;
use ringwire::runtime::Engine;
use ringwire::service::listener::{Listener, SocketInfo};
use ringwire::service::session::{unix_now, SessionKey};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tungstenite::client::IntoClientRequest;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Connect(u64),
    Message(String, Vec<(String, String)>),
    Close(u64),
}

#[derive(Default)]
struct Recorder(Mutex<Vec<Seen>>);

impl Listener for Recorder {
    fn on_connect(&self, s: &SocketInfo<'_>) {
        self.0.lock().unwrap().push(Seen::Connect(s.socket));
    }
    fn on_close(&self, s: &SocketInfo<'_>) {
        self.0.lock().unwrap().push(Seen::Close(s.socket));
    }
    fn on_message(&self, s: &SocketInfo<'_>, text: &str) {
        let attrs = s.attrs.iter();
        let attrs = attrs.map(|(k, v)| (k.to_string(), v.to_string())).collect();
        self.0
            .lock()
            .unwrap()
            .push(Seen::Message(text.to_string(), attrs));
    }
}

impl Recorder {
    fn wait_for(&self, what: impl Fn(&Seen) -> bool) -> Seen {
        for _ in 0..500 {
            if let Some(s) = self.0.lock().unwrap().iter().rev().find(|s| what(s)) {
                return s.clone();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!(
            "the listener never saw it; saw {:?}",
            self.0.lock().unwrap()
        );
    }
}

type Ws = WebSocket<MaybeTlsStream<TcpStream>>;

/// An Engine.IO v4 WebSocket of the session, its open packet read.
fn open(port: u16, session: &str, secret: &str) -> Ws {
    let url =
        format!("ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket&session={session}");
    let mut req = url.into_client_request().unwrap();
    let cookie = format!("ringwire-secret={secret}");
    req.headers_mut().insert("Cookie", cookie.parse().unwrap());
    let (mut ws, _) = tungstenite::connect(req).expect("upgrade");
    if let MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    }
    assert!(text(&mut ws).starts_with("0{\"sid\""));
    ws
}

/// The next text packet (server pings answered and skipped).
fn text(ws: &mut Ws) -> String {
    loop {
        match ws.read().expect("a packet") {
            Message::Text(t) if t.as_str() == "2" => ws.send(Message::text("3")).unwrap(),
            Message::Text(t) => return t.to_string(),
            _ => continue,
        }
    }
}

/// Send a CONNECT (`auth`: its JSON, or empty); its answer's (sid, pid).
fn connect(ws: &mut Ws, auth: &str) -> (String, String) {
    ws.send(Message::text(format!("40{auth}"))).unwrap();
    let answer = text(ws);
    let json = answer.find('{').map_or("", |i| &answer[i..]);
    let v: serde_json::Value = serde_json::from_str(json).unwrap_or_else(|_| panic!("{answer}"));
    let field = |k: &str| {
        v[k].as_str()
            .unwrap_or_else(|| panic!("{answer}"))
            .to_string()
    };
    (field("sid"), field("pid"))
}

/// A pushed event `42[...]`: its arguments.
fn event(ws: &mut Ws) -> Vec<serde_json::Value> {
    let packet = text(ws);
    let data = packet
        .strip_prefix("42")
        .unwrap_or_else(|| panic!("{packet}"));
    serde_json::from_str(data).unwrap()
}

/// An engine with a socketio history endpoint, a recording listener, the service, and a
/// session of (3, 77).
struct Embedded {
    port: u16,
    engine: Engine,
    service: Service,
    rt: tokio::runtime::Runtime,
    recorder: Arc<Recorder>,
    session: String,
    secret: String,
}

impl Embedded {
    fn start() -> Embedded {
        let port = common::free_port();
        let config = Config::from_toml(&format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\ncores = 2\ndrain_secs = 0\n\
             [history]\nenabled = true\n[[endpoints]]\npath = \"/socket.io/\"\nkind = \"socketio\"\n"
        ))
        .unwrap();
        let key = SessionKey::random();
        let recorder = Arc::new(Recorder::default());
        let listeners = vec![recorder.clone() as Arc<dyn Listener>];
        let engine = Engine::start(config, key.clone(), listeners, None, None).unwrap();
        let (id, secret) = key.mint(3, &77.into(), unix_now() + 60);
        Embedded {
            port,
            service: Service::new(engine.shared.clone(), key),
            engine,
            rt: common::runtime(),
            recorder,
            session: id.to_text(&77.into()),
            secret,
        }
    }

    fn open(&self) -> Ws {
        open(self.port, &self.session, &self.secret)
    }

    /// Push `[\"news\",n]` to the user: the sockets it reached.
    fn push(&self, n: u32) -> u64 {
        let text = format!("[\"news\",{n}]");
        self.rt
            .block_on(self.service.send(3, &77.into(), "*", &text))
            .sockets
    }

    fn stop(self) {
        self.engine.shutdown();
        self.engine.join();
    }
}

#[test]
fn attributes_socket_id_and_missed_pushes_come_back_with_the_session() {
    let e = Embedded::start();
    let (service, rt, recorder) = (&e.service, &e.rt, &e.recorder);
    let mut ws = e.open();
    let (sid, pid) = connect(&mut ws, "");
    let Seen::Connect(socket) = recorder.wait_for(|s| matches!(s, Seen::Connect(_))) else {
        unreachable!()
    };
    rt.block_on(service.set_attribute(socket, "room", "blue"))
        .unwrap();
    assert_eq!(e.push(1), 1);
    let args = event(&mut ws);
    assert_eq!(args[..2], [serde_json::json!("news"), serde_json::json!(1)]);
    let offset = args[2].as_str().expect("the offset, last").to_string();

    // The connection drops (no close frame); a push is made while the client is away.
    drop(ws);
    recorder.wait_for(|s| *s == Seen::Close(socket));
    assert_eq!(e.push(2), 0);

    // The client comes back with its pid and offset: the same session, then what it missed.
    let mut ws = e.open();
    let claim = format!("{{\"pid\":\"{pid}\",\"offset\":\"{offset}\"}}");
    assert_eq!(connect(&mut ws, &claim), (sid.clone(), pid.clone()));
    assert_eq!(
        event(&mut ws)[..2],
        [serde_json::json!("news"), serde_json::json!(2)]
    );
    // The restored socket has its attribute again.
    ws.send(Message::text("42[\"hello\"]")).unwrap();
    let seen = recorder.wait_for(|s| matches!(s, Seen::Message(..)));
    let blue = vec![("room".to_string(), "blue".to_string())];
    assert_eq!(seen, Seen::Message("[\"hello\"]".into(), blue));

    // A claim in bad form: a fresh session (new pid), nothing replayed, the server is fine.
    let mut other = e.open();
    let (_, fresh) = connect(&mut other, "{\"pid\":\"junk\",\"offset\":\"0-x\"}");
    assert_ne!(fresh, pid);
    let (_, again) = connect(&mut other, "/chat,{\"pid\":7}");
    assert_ne!(again, fresh);
    assert_eq!(e.push(3), 2);
    assert_eq!(event(&mut ws)[1], serde_json::json!(3));
    assert_eq!(event(&mut other)[1], serde_json::json!(3));

    e.stop();
}

#[test]
fn a_claim_of_a_session_still_open_takes_it_over() {
    let e = Embedded::start();
    let mut old = e.open();
    let (sid, pid) = connect(&mut old, "");
    assert_eq!(e.push(1), 1);
    let offset = event(&mut old)[2].as_str().unwrap().to_string();
    // The client found the connection dead; the server did not notice yet. A push it misses:
    e.push(2);
    let mut new = e.open();
    let claim = format!("{{\"pid\":\"{pid}\",\"offset\":\"{offset}\"}}");
    assert_eq!(connect(&mut new, &claim), (sid, pid));
    assert_eq!(event(&mut new)[1], serde_json::json!(2));
    // The old connection is closed; the new one is the only socket.
    let closed = loop {
        match old.read() {
            Ok(Message::Close(_)) | Err(_) => break true,
            Ok(_) => continue,
        }
    };
    assert!(closed);
    assert_eq!(e.push(3), 1);
    assert_eq!(event(&mut new)[1], serde_json::json!(3));
    e.stop();
}
