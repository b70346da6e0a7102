//! Readiness for systemd (`Type=notify`): `READY=1` once every listener is up, `STOPPING=1`
//! when the drain starts, sent as a datagram to `$NOTIFY_SOCKET` (a path, or an abstract
//! name written `@name`). Without the variable nothing is sent. Failures are logged once and
//! never stop the server.
#![forbid(unsafe_code)]
use std::os::unix::net::UnixDatagram;

/// Tell the service manager `state` (e.g. `"READY=1"`), if one asked.
pub fn notify(state: &str) {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let target = target.to_string_lossy().into_owned();
    if let Err(e) = send(&target, state) {
        tracing::warn!(socket = %target, "systemd notify {state:?} failed: {e}");
    }
}

fn send(target: &str, state: &str) -> std::io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    match target.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
            sock.send_to_addr(state.as_bytes(), &addr)?;
        }
        None => {
            sock.send_to(state.as_bytes(), target)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_reach_a_path_socket() {
        let dir = std::env::temp_dir().join(format!("ringwire-notify-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let rx = UnixDatagram::bind(&dir).unwrap();
        send(dir.to_str().unwrap(), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        let _ = std::fs::remove_file(&dir);
    }

    #[test]
    fn states_reach_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("ringwire-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let rx = UnixDatagram::bind_addr(&addr).unwrap();
        send(&format!("@{name}"), "STOPPING=1").unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
    }
}
