//! The engine with real clients (tungstenite over TCP): echo on both cores, sockets moved to
//! the core owning their key, admission when the fixed-file table is full, drain on SIGTERM.
mod common;

use common::{raw_request, Server};
use std::net::TcpStream;
use std::time::Duration;
use tungstenite::{Message, WebSocket};

const ECHO: &str = "[[endpoints]]\npath = \"/echo\"\nkind = \"echo\"\nauth = \"none\"\n";

fn connect(url: &str) -> WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>> {
    let (ws, resp) = tungstenite::connect(url).expect("upgrade");
    assert_eq!(resp.status().as_u16(), 101);
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    }
    ws
}

/// FNV-1a, as the server hashes `key` (src/runtime/upgrade.rs); duplicated on purpose so the
/// test checks placement independently of the server's code.
fn owner(key: &str, cores: u64) -> usize {
    let h = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    });
    ((h ^ (h >> 32)) % cores) as usize
}

#[test]
fn sockets_live_on_the_core_that_owns_their_key() {
    let server = Server::start(ECHO);
    let keys: Vec<String> = (0..24).map(|i| format!("user-{i}")).collect();
    let mut expected = [0u64; 2];
    let mut sockets = Vec::new();
    for key in &keys {
        let mut ws = connect(&server.ws_url(&format!("/echo?key={key}")));
        expected[owner(key, 2)] += 1;
        ws.send(Message::text(format!("hi {key}"))).unwrap();
        assert_eq!(ws.read().unwrap(), Message::text(format!("hi {key}")));
        sockets.push(ws);
    }
    assert!(
        expected[0] > 0 && expected[1] > 0,
        "keys must cover both cores: {expected:?}"
    );
    let stats = server.stats();
    let cores = stats["cores"].as_array().unwrap();
    for (core, want) in expected.iter().enumerate() {
        assert_eq!(
            cores[core]["sockets"].as_u64().unwrap(),
            *want,
            "core {core}: {stats}"
        );
    }
    let moved: u64 = cores
        .iter()
        .map(|c| c["handoffs_in"].as_u64().unwrap())
        .sum();
    assert!(
        moved > 0,
        "some sockets must have been accepted on a non-owning core: {stats}"
    );
    // Echo still works on every socket after the move, binary too.
    for ws in &mut sockets {
        ws.send(Message::binary(vec![7u8; 70_000])).unwrap();
        assert_eq!(ws.read().unwrap(), Message::binary(vec![7u8; 70_000]));
    }
    for mut ws in sockets {
        ws.close(None).unwrap();
        while ws.read().is_ok() {}
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(server.stats()["sockets"].as_u64().unwrap(), 0);
}

#[test]
fn full_table_answers_503_and_never_hangs() {
    // 80 slots per core with 64 reserved: 16 sockets per core at most.
    let server = Server::start(&format!(
        "[engine]\nfixed_files = 80\nreserve_slots = 64\n{ECHO}"
    ));
    let mut open = Vec::new();
    let mut refused = 0;
    for i in 0..60 {
        match tungstenite::connect(server.ws_url(&format!("/echo?key=k{i}"))) {
            Ok((ws, _)) => open.push(ws),
            Err(tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status().as_u16(), 503);
                refused += 1;
            }
            Err(e) => panic!("unexpected error (a client must get an answer): {e}"),
        }
    }
    assert!(open.len() <= 32, "admitted {}", open.len());
    assert!(open.len() >= 16, "admitted only {}", open.len());
    assert_eq!(open.len() + refused, 60);
    let (_, metrics) = server.admin_get("/metrics");
    let line = metrics
        .lines()
        .find(|l| l.starts_with("ringwire_upgrades_refused_total{status=\"503\"}"))
        .unwrap();
    assert_eq!(
        line.rsplit(' ').next().unwrap().parse::<usize>().unwrap(),
        refused
    );
    // Closing sockets frees slots: a new client gets in.
    drop(open);
    std::thread::sleep(Duration::from_millis(500));
    let (mut ws, _) = tungstenite::connect(server.ws_url("/echo?key=again")).expect("slot freed");
    ws.send(Message::text("x")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("x"));
}

#[test]
fn refusals_are_plain_http_statuses() {
    let server = Server::start(&format!(
        "{ECHO}[[endpoints]]\npath = \"/ws\"\nkind = \"raw\"\n"
    ));
    let up = |path: &str, extra: &str| {
        raw_request(
            server.port,
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n").as_bytes(),
        )
        .0
    };
    assert_eq!(up("/echo", "Sec-WebSocket-Version: 13\r\n"), 101);
    assert_eq!(up("/echo", "Sec-WebSocket-Version: 8\r\n"), 426);
    assert_eq!(up("/nothing", "Sec-WebSocket-Version: 13\r\n"), 404);
    assert_eq!(up("/ws", "Sec-WebSocket-Version: 13\r\n"), 401);
    assert_eq!(
        up(
            "/echo",
            "Sec-WebSocket-Version: 13\r\nOrigin: https://elsewhere.example\r\n"
        ),
        403
    );
    let big = format!("X-Big: {}\r\n", "a".repeat(9000));
    assert_eq!(
        up("/echo", &format!("Sec-WebSocket-Version: 13\r\n{big}")),
        431
    );
    assert_eq!(raw_request(server.port, b"garbage\r\n\r\n").0, 400);
}

#[test]
fn sigterm_closes_sockets_with_1001() {
    let mut server = Server::start(ECHO);
    let mut ws = connect(&server.ws_url("/echo?key=a"));
    ws.send(Message::text("before")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("before"));
    let status = std::thread::scope(|s| {
        let h = s.spawn(|| server.terminate());
        let frame = loop {
            match ws.read() {
                Ok(Message::Close(f)) => break f,
                Ok(_) => continue,
                Err(e) => panic!("expected a close frame, got {e}"),
            }
        };
        assert_eq!(u16::from(frame.unwrap().code), 1001);
        h.join().unwrap()
    });
    assert!(status.success(), "{status:?}");
}

#[test]
fn table_overflow_still_answers_every_client() {
    // 20 slots per core, 1 reserved: idle TCP clients fill the tables; clients beyond that are
    // accepted on plain fds (ENFILE path) and answered 503; the idle ones get 408 after the
    // handshake timeout. Nobody is left hanging in the backlog.
    use std::io::Read;
    let server = Server::start(&format!(
        "[engine]\nfixed_files = 20\nreserve_slots = 1\n[limits]\nhandshake_timeout_ms = 1000\n{ECHO}"
    ));
    let clients: Vec<TcpStream> = (0..80)
        .map(|_| {
            let s = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(6))).unwrap();
            s
        })
        .collect();
    let mut statuses = std::collections::BTreeMap::new();
    for mut c in clients {
        let mut buf = Vec::new();
        let _ = c.read_to_end(&mut buf);
        let text = String::from_utf8_lossy(&buf);
        let status = text.split(' ').nth(1).unwrap_or("none").to_string();
        *statuses.entry(status).or_insert(0) += 1;
    }
    assert_eq!(
        statuses.get("none"),
        None,
        "every client gets an answer: {statuses:?}"
    );
    assert!(
        statuses.get("503").copied().unwrap_or(0) >= 40,
        "{statuses:?}"
    );
    assert!(
        statuses.get("408").copied().unwrap_or(0) >= 1,
        "{statuses:?}"
    );
    let (_, metrics) = server.admin_get("/metrics");
    let full: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("ringwire_accept_table_full_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert!(
        full >= 1,
        "the ENFILE path must have been taken:\n{metrics}"
    );
}
