//! ringwire embedded in an application process: the Rust API (engine + listener + service),
//! driven by a real WebSocket client (tungstenite) over loopback.
mod common;

use ringwire::config::Config;
use ringwire::facade::{Service, UserId};
use ringwire::runtime::Engine;
use ringwire::service::listener::{Listener, SocketInfo};
use ringwire::service::session::{unix_now, SessionKey};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tungstenite::client::IntoClientRequest;
use tungstenite::Message;

#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Connect {
        socket: u64,
        context: u32,
        user: UserId,
        path: String,
    },
    Message {
        text: String,
        attrs: Vec<(String, String)>,
    },
    Close {
        socket: u64,
    },
}

#[derive(Default)]
struct Recorder(Mutex<Vec<Seen>>);

impl Listener for Recorder {
    fn on_connect(&self, s: &SocketInfo<'_>) {
        let a = s.auth.expect("session endpoint");
        self.0.lock().unwrap().push(Seen::Connect {
            socket: s.socket,
            context: a.context,
            user: a.user.clone(),
            path: s.path.to_string(),
        });
    }
    fn on_close(&self, s: &SocketInfo<'_>) {
        self.0
            .lock()
            .unwrap()
            .push(Seen::Close { socket: s.socket });
    }
    fn on_message(&self, s: &SocketInfo<'_>, text: &str) {
        let attrs = s
            .attrs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.0.lock().unwrap().push(Seen::Message {
            text: text.to_string(),
            attrs,
        });
    }
}

impl Recorder {
    fn wait_for(&self, what: impl Fn(&Seen) -> bool) -> Seen {
        for _ in 0..200 {
            if let Some(s) = self.0.lock().unwrap().iter().find(|s| what(s)) {
                return s.clone();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!(
            "listener never saw the event; saw {:?}",
            self.0.lock().unwrap()
        );
    }
}

#[test]
fn listener_service_and_attributes_in_process() {
    let port = common::free_port();
    let config = Config::from_toml(&format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\ncores = 2\n[[endpoints]]\npath = \"/ws\"\nkind = \"raw\"\n"
    ))
    .unwrap();
    let key = SessionKey::random();
    let recorder = Arc::new(Recorder::default());
    let engine = Engine::start(
        config,
        key.clone(),
        vec![recorder.clone() as Arc<dyn Listener>],
        None,
        None,
    )
    .unwrap();
    let service = Service::new(engine.shared.clone(), key.clone());
    let rt = common::runtime();

    // A string user id (a v2 session): the API takes it as it takes numbers.
    let u77 = UserId::parse("user-77@example.com").unwrap();
    let (id, secret) = key.mint(3, &u77, unix_now() + 60);
    let mut req = format!("ws://127.0.0.1:{port}/ws/room?session={}", id.to_text(&u77))
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "Cookie",
        format!("ringwire-secret={secret}").parse().unwrap(),
    );
    let (mut ws, _) = tungstenite::connect(req).expect("upgrade");
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    }

    // The listener saw the connect, with the session's context and user.
    let Seen::Connect {
        socket,
        context,
        user,
        path,
    } = recorder.wait_for(|s| matches!(s, Seen::Connect { .. }))
    else {
        unreachable!()
    };
    assert_eq!((context, &user, path.as_str()), (3, &u77, "/ws/room"));

    // The service reaches it.
    assert_eq!(rt.block_on(service.count(3, &u77, "/ws/*")), 1);
    assert!(!rt.block_on(service.exists(3, &u77, "/socket.io/*")));
    assert_eq!(rt.block_on(service.count(3, &77.into(), "/ws/*")), 0);
    assert_eq!(
        rt.block_on(service.send(3, &u77, "*", "hello from the app"))
            .sockets,
        1
    );
    assert_eq!(ws.read().unwrap(), Message::text("hello from the app"));

    // Attributes set through the service show up on the socket's next events.
    rt.block_on(service.set_attribute(socket, "room", "blue"))
        .unwrap();
    let too_big = "x".repeat(2000);
    assert!(rt
        .block_on(service.set_attribute(socket, "k", &too_big))
        .is_err());
    ws.send(Message::text("client says hi")).unwrap();
    let seen = recorder.wait_for(|s| matches!(s, Seen::Message { .. }));
    assert_eq!(
        seen,
        Seen::Message {
            text: "client says hi".into(),
            attrs: vec![("room".into(), "blue".into())]
        }
    );

    // Terminating the session closes the socket with 4001 and the listener hears the close.
    service.terminate(&id.to_text(&u77)).unwrap();
    let code = loop {
        match ws.read() {
            Ok(Message::Close(Some(f))) => break u16::from(f.code),
            Ok(_) => continue,
            Err(e) => panic!("expected a close frame: {e}"),
        }
    };
    assert_eq!(code, 4001);
    recorder.wait_for(|s| *s == Seen::Close { socket });
    assert!(
        rt.block_on(service.set_attribute(socket, "room", "red"))
            .is_err(),
        "closed socket"
    );

    engine.shutdown();
    engine.join();
}
