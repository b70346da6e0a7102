//! Neutral WebSocket echo load client for benches/compare/echo_cells.sh: one thread, epoll
//! (through mio, edge-triggered), no async runtime. Pin it with `taskset`.
//!
//!     echo-client --addr 127.0.0.1:9001 [--path /] --conns 100 --depth 16 --payload 512 \
//!         [--warmup 2] [--duration 10] [--server-pid PID] [--binary] [--hz 100]
//!
//! Opens `conns` connections one after the other (HTTP/1.1 upgrade, no extensions asked for),
//! then keeps `depth` messages of `payload` bytes in flight on each: it sends `depth`, then one
//! new message for every echo received. Client frames are masked (a fresh mask per frame).
//! Every echo is checked byte for byte against the message it answers (the first 16 bytes
//! carry the message's sequence number in hex, the rest depends on the connection), in order.
//! Pings are answered with pongs. After `warmup` seconds it takes a snapshot, after another
//! `duration` seconds a second one; the window between them is what is reported, as one JSON
//! line on stdout:
//!   echoes / msgs_per_s            echoes received in the window
//!   server_*                       the server process (every thread) over the window:
//!                                  utime / stime ticks from /proc/PID/stat and the exact run
//!                                  time from /proc/PID/task/*/schedstat (ns)
//!   client_*                       the same for this process
//!   host                           /proc/stat over the window: busy / softirq / total ticks,
//!                                  for all CPUs and per CPU
//!   errors                         connections lost, bad frames, mismatched echoes
//! Exit status 0 when every connection connected and no error happened, 1 otherwise.
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use std::io::{ErrorKind, Read, Write};
use std::time::{Duration, Instant};

struct Args {
    addr: String,
    path: String,
    conns: usize,
    depth: usize,
    payload: usize,
    warmup: f64,
    duration: f64,
    server_pid: Option<u32>,
    binary: bool,
    hz: f64,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        addr: "127.0.0.1:9001".into(),
        path: "/".into(),
        conns: 100,
        depth: 1,
        payload: 16,
        warmup: 2.0,
        duration: 10.0,
        server_pid: None,
        binary: false,
        hz: 100.0,
    };
    fn num<T: std::str::FromStr>(k: &str, v: &str) -> Result<T, String> {
        v.parse().map_err(|_| format!("bad value for {k}: {v}"))
    }
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        if k == "--binary" {
            a.binary = true;
            continue;
        }
        let v = it.next().ok_or_else(|| format!("{k} needs a value"))?;
        match k.as_str() {
            "--addr" => a.addr = v,
            "--path" => a.path = v,
            "--conns" => a.conns = num(&k, &v)?,
            "--depth" => a.depth = num(&k, &v)?,
            "--payload" => a.payload = num(&k, &v)?,
            "--warmup" => a.warmup = num(&k, &v)?,
            "--duration" => a.duration = num(&k, &v)?,
            "--hz" => a.hz = num(&k, &v)?,
            "--server-pid" => a.server_pid = Some(num(&k, &v)?),
            _ => return Err(format!("unknown option {k}")),
        }
    }
    if a.payload < 16 || a.depth == 0 || a.conns == 0 {
        return Err("needs --payload >= 16, --depth >= 1, --conns >= 1".into());
    }
    Ok(a)
}

/// The message `seq` of connection `conn`: 16 hex digits of `seq`, then letters that depend on
/// the connection and the position (ASCII, so valid UTF-8 for text frames).
fn fill_message(buf: &mut [u8], conn: usize, seq: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in buf[..16].iter_mut().enumerate() {
        *b = HEX[((seq >> (60 - 4 * i)) & 0xf) as usize];
    }
    for (i, b) in buf[16..].iter_mut().enumerate() {
        *b = b'a' + ((conn + i) % 26) as u8;
    }
}

struct Conn {
    stream: TcpStream,
    rbuf: Vec<u8>,
    rlen: usize,
    wbuf: Vec<u8>,
    wpos: usize,
    next_send: u64,
    next_recv: u64,
    alive: bool,
}

struct Client {
    binary: bool,
    payload: usize,
    mask_state: u64,
    msg: Vec<u8>,
    sending: bool,
    echoes: u64,
    errors: u64,
    first_error: Option<String>,
}

impl Client {
    fn next_mask(&mut self) -> [u8; 4] {
        // xorshift64: a different mask for every frame (the peer must unmask, nothing more).
        let mut x = self.mask_state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.mask_state = x;
        (x as u32).to_ne_bytes()
    }

    /// Appends a masked client frame of `opcode` carrying `payload` to `out`.
    fn push_frame(&mut self, out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
        let len = payload.len();
        out.push(0x80 | opcode);
        if len < 126 {
            out.push(0x80 | len as u8);
        } else if len < 65536 {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        let mask = self.next_mask();
        out.extend_from_slice(&mask);
        let start = out.len();
        out.extend_from_slice(payload);
        let m8 = u64::from_ne_bytes([
            mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
        ]);
        let body = &mut out[start..];
        let mut chunks = body.chunks_exact_mut(8);
        for c in &mut chunks {
            let v = u64::from_ne_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) ^ m8;
            c.copy_from_slice(&v.to_ne_bytes());
        }
        for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
    }

    fn send_message(&mut self, conn_id: usize, c: &mut Conn) {
        let mut msg = std::mem::take(&mut self.msg);
        fill_message(&mut msg, conn_id, c.next_send);
        c.next_send += 1;
        let opcode = if self.binary { 2 } else { 1 };
        self.push_frame(&mut c.wbuf, opcode, &msg);
        self.msg = msg;
    }

    fn fail(&mut self, c: &mut Conn, why: String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(why);
        }
        c.alive = false;
    }

    /// Parses the complete frames in `c.rbuf[..c.rlen]`, checks echoes, queues the next
    /// messages and pongs. Returns false when the connection is broken.
    fn on_data(&mut self, conn_id: usize, c: &mut Conn) -> bool {
        let mut pos = 0;
        let mut expect = std::mem::take(&mut self.msg);
        let data_op = if self.binary { 2 } else { 1 };
        loop {
            let buf = &c.rbuf[pos..c.rlen];
            if buf.len() < 2 {
                break;
            }
            let (b0, b1) = (buf[0], buf[1]);
            if b1 & 0x80 != 0 {
                self.msg = expect;
                self.fail(c, format!("conn {conn_id}: masked server frame"));
                return false;
            }
            let (len, hdr) = match b1 & 0x7f {
                126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
                127 if buf.len() >= 10 => {
                    let mut l = [0u8; 8];
                    l.copy_from_slice(&buf[2..10]);
                    (u64::from_be_bytes(l) as usize, 10)
                }
                126 | 127 => break,
                l => (l as usize, 2),
            };
            if buf.len() < hdr + len {
                break;
            }
            let body = &buf[hdr..hdr + len];
            let opcode = b0 & 0x0f;
            match opcode {
                _ if opcode == data_op && b0 & 0x80 != 0 => {
                    fill_message(&mut expect, conn_id, c.next_recv);
                    if body != &expect[..] {
                        let got = String::from_utf8_lossy(&body[..body.len().min(24)]).into_owned();
                        self.msg = expect;
                        self.fail(
                            c,
                            format!("conn {conn_id}: echo {} mismatch: {got:?}", c.next_recv),
                        );
                        return false;
                    }
                    c.next_recv += 1;
                    self.echoes += 1;
                    if self.sending {
                        self.msg = std::mem::take(&mut expect);
                        self.send_message(conn_id, c);
                        expect = std::mem::take(&mut self.msg);
                    }
                }
                9 => {
                    let ping = body.to_vec();
                    self.push_frame(&mut c.wbuf, 10, &ping);
                }
                10 => {}
                _ => {
                    let why = format!("conn {conn_id}: unexpected frame 0x{b0:02x} ({len} bytes)");
                    self.msg = expect;
                    self.fail(c, why);
                    return false;
                }
            }
            pos += hdr + len;
        }
        self.msg = expect;
        c.rbuf.copy_within(pos..c.rlen, 0);
        c.rlen -= pos;
        true
    }
}

/// Writes what is queued; false when the connection is broken.
fn flush(c: &mut Conn) -> Result<(), String> {
    while c.wpos < c.wbuf.len() {
        match c.stream.write(&c.wbuf[c.wpos..]) {
            Ok(0) => return Err("write returned 0".into()),
            Ok(n) => c.wpos += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("write: {e}")),
        }
    }
    c.wbuf.clear();
    c.wpos = 0;
    Ok(())
}

/// Reads until the socket is drained (edge-triggered), then handles the frames.
fn on_readable(cl: &mut Client, id: usize, c: &mut Conn) -> Result<(), String> {
    loop {
        if c.rbuf.len() - c.rlen < 4096 {
            let n = c.rbuf.len() * 2;
            c.rbuf.resize(n, 0);
        }
        let space = c.rbuf.len() - c.rlen;
        match c.stream.read(&mut c.rbuf[c.rlen..]) {
            Ok(0) => return Err(format!("conn {id}: closed by the server")),
            Ok(n) => {
                c.rlen += n;
                if !cl.on_data(id, c) {
                    return Ok(()); // counted by on_data
                }
                if n < space {
                    return Ok(()); // a short read: drained; the next data is a new edge
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("conn {id}: read: {e}")),
        }
    }
}

fn connect(a: &Args) -> Result<Conn, String> {
    let mut s = std::net::TcpStream::connect(&a.addr).map_err(|e| format!("connect: {e}"))?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    // Any 16 bytes in base64 will do (RFC 6455's sample nonce); the accept is not checked.
    let key = "dGhlIHNhbXBsZSBub25jZQ==";
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n",
        a.path, a.addr
    );
    s.write_all(req.as_bytes())
        .map_err(|e| format!("send upgrade: {e}"))?;
    let mut rbuf = vec![0u8; 16384];
    let mut rlen = 0;
    let head_end = loop {
        let n = s
            .read(&mut rbuf[rlen..])
            .map_err(|e| format!("read upgrade: {e}"))?;
        if n == 0 {
            return Err("closed during the upgrade".into());
        }
        rlen += n;
        if let Some(p) = rbuf[..rlen].windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        if rlen == rbuf.len() {
            return Err("upgrade response too long".into());
        }
    };
    let head = String::from_utf8_lossy(&rbuf[..head_end]).into_owned();
    if !head.starts_with("HTTP/1.1 101") {
        return Err(format!(
            "upgrade refused: {}",
            head.lines().next().unwrap_or("")
        ));
    }
    if head
        .to_ascii_lowercase()
        .contains("sec-websocket-extensions")
    {
        return Err("the server negotiated an extension that was not asked for".into());
    }
    rbuf.copy_within(head_end..rlen, 0);
    rlen -= head_end;
    s.set_nonblocking(true).map_err(|e| e.to_string())?;
    Ok(Conn {
        stream: TcpStream::from_std(s),
        rbuf,
        rlen,
        wbuf: Vec::with_capacity(8192),
        wpos: 0,
        next_send: 0,
        next_recv: 0,
        alive: true,
    })
}

/// CPU use of a process: (utime ticks, stime ticks, run time ns over all its threads).
fn proc_cpu(pid: &str) -> (u64, u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let (ut, st) = (
        f.get(11).copied().unwrap_or(0),
        f.get(12).copied().unwrap_or(0),
    );
    let mut ns = 0;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            let s = std::fs::read_to_string(t.path().join("schedstat")).unwrap_or_default();
            ns += s
                .split_whitespace()
                .next()
                .and_then(|x| x.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    (ut, st, ns)
}

/// /proc/stat: for the `cpu` line and every `cpuN` line, (name, busy, softirq, total) ticks.
fn host_stat() -> Vec<(String, u64, u64, u64)> {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    s.lines()
        .filter(|l| l.starts_with("cpu"))
        .map(|l| {
            let mut it = l.split_whitespace();
            let name = it.next().unwrap_or("").to_string();
            let v: Vec<u64> = it.map(|x| x.parse().unwrap_or(0)).collect();
            let total: u64 = v.iter().take(8).sum();
            let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
            (name, total - idle, v.get(6).copied().unwrap_or(0), total)
        })
        .collect()
}

struct Snap {
    at: Instant,
    echoes: u64,
    server: (u64, u64, u64),
    client: (u64, u64, u64),
    host: Vec<(String, u64, u64, u64)>,
}

fn snap(cl: &Client, server_pid: &str) -> Snap {
    Snap {
        at: Instant::now(),
        echoes: cl.echoes,
        server: proc_cpu(server_pid),
        client: proc_cpu("self"),
        host: host_stat(),
    }
}

fn main() {
    let a = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("echo-client: {e}");
            std::process::exit(2);
        }
    };
    let mut conns: Vec<Conn> = Vec::with_capacity(a.conns);
    let t_connect = Instant::now();
    for id in 0..a.conns {
        match connect(&a) {
            Ok(c) => conns.push(c),
            Err(e) => {
                eprintln!("echo-client: connection {id}: {e}");
                break;
            }
        }
    }
    let connect_s = t_connect.elapsed().as_secs_f64();
    let connected = conns.len();
    let mut poll = Poll::new().expect("epoll_create");
    for (id, c) in conns.iter_mut().enumerate() {
        poll.registry()
            .register(
                &mut c.stream,
                Token(id),
                Interest::READABLE | Interest::WRITABLE,
            )
            .expect("epoll_ctl");
    }
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    let mut cl = Client {
        binary: a.binary,
        payload: a.payload,
        mask_state: seed,
        msg: vec![0u8; a.payload],
        sending: true,
        echoes: 0,
        errors: 0,
        first_error: None,
    };
    for (id, c) in conns.iter_mut().enumerate() {
        for _ in 0..a.depth {
            cl.send_message(id, c);
        }
        if let Err(e) = flush(c) {
            let why = format!("conn {id}: {e}");
            cl.fail(c, why);
        }
    }
    let pid = a
        .server_pid
        .map_or_else(|| "self".to_string(), |p| p.to_string());
    let start = Instant::now();
    let warm_end = start + Duration::from_secs_f64(a.warmup);
    let end = warm_end + Duration::from_secs_f64(a.duration);
    let mut s0: Option<Snap> = None;
    let mut events = Events::with_capacity(1024);
    let s1 = loop {
        let now = Instant::now();
        if s0.is_none() && now >= warm_end {
            s0 = Some(snap(&cl, &pid));
        }
        if now >= end {
            break snap(&cl, &pid);
        }
        let deadline = if s0.is_none() { warm_end } else { end };
        let timeout = deadline.saturating_duration_since(now) + Duration::from_micros(100);
        if let Err(e) = poll.poll(&mut events, Some(timeout)) {
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            eprintln!("echo-client: epoll_wait: {e}");
            std::process::exit(2);
        }
        for ev in events.iter() {
            let id = ev.token().0;
            let c = &mut conns[id];
            if !c.alive {
                continue;
            }
            let mut res = Ok(());
            if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                res = on_readable(&mut cl, id, c);
            }
            if res.is_ok() && c.alive && !c.wbuf.is_empty() {
                res = flush(c).map_err(|e| format!("conn {id}: {e}"));
            }
            if let Err(e) = res {
                cl.fail(c, e);
            }
            if !c.alive {
                let _ = poll.registry().deregister(&mut c.stream);
            }
        }
    };
    cl.sending = false;
    let s0 = s0.unwrap_or_else(|| snap(&cl, &pid));
    let secs = s1.at.duration_since(s0.at).as_secs_f64();
    let echoes = s1.echoes - s0.echoes;
    let d = |x: (u64, u64, u64), y: (u64, u64, u64)| (y.0 - x.0, y.1 - x.1, y.2 - x.2);
    let sv = d(s0.server, s1.server);
    let cv = d(s0.client, s1.client);
    let hz = a.hz;
    let host: Vec<String> = s0
        .host
        .iter()
        .zip(&s1.host)
        .map(|(x, y)| {
            format!(
                "\"{}\":{{\"busy_s\":{:.3},\"softirq_s\":{:.3},\"total_s\":{:.3}}}",
                x.0,
                (y.1 - x.1) as f64 / hz,
                (y.2 - x.2) as f64 / hz,
                (y.3 - x.3) as f64 / hz
            )
        })
        .collect();
    let err = cl
        .first_error
        .clone()
        .unwrap_or_default()
        .replace(['"', '\\'], "'");
    println!(
        "{{\"conns\":{},\"connected\":{},\"depth\":{},\"payload\":{},\"binary\":{},\"warmup_s\":{},\
         \"window_s\":{:.4},\"connect_s\":{:.3},\"echoes\":{},\"msgs_per_s\":{:.1},\
         \"server_pid\":{},\"server_utime_s\":{:.3},\"server_stime_s\":{:.3},\"server_run_s\":{:.6},\
         \"client_utime_s\":{:.3},\"client_stime_s\":{:.3},\"client_run_s\":{:.6},\
         \"host\":{{{}}},\"errors\":{},\"first_error\":\"{}\",\"echoes_total\":{}}}",
        a.conns,
        connected,
        a.depth,
        cl.payload,
        a.binary,
        a.warmup,
        secs,
        connect_s,
        echoes,
        echoes as f64 / secs.max(1e-9),
        a.server_pid.map_or("null".to_string(), |p| p.to_string()),
        sv.0 as f64 / hz,
        sv.1 as f64 / hz,
        sv.2 as f64 / 1e9,
        cv.0 as f64 / hz,
        cv.1 as f64 / hz,
        cv.2 as f64 / 1e9,
        host.join(","),
        cl.errors,
        err,
        cl.echoes,
    );
    let ok = connected == a.conns && cl.errors == 0;
    std::process::exit(if ok { 0 } else { 1 });
}
