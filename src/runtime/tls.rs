//! TLS on the public listener (`[tls]`): rustls as a sans-IO state machine between the ring
//! and the protocol code. Received ciphertext (a provided buffer) goes into the connection's
//! `rustls::ServerConnection`; the plaintext it yields is handled exactly like bytes read from
//! a plain socket. Queued output (frames, HTTP answers) is encrypted once per loop turn, when
//! the connection is flushed, so a turn's frames become as few TLS records as possible.
//!
//! The TLS state moves with the connection when it is handed to the core owning its user.
//! Certificates are read when the configuration is loaded or reloaded: new connections use
//! the newest, open ones keep the session they negotiated.
use super::conn::{flag, Conn};
use std::io::{Read, Write};

/// Why received TLS bytes end the connection.
#[derive(Debug)]
pub enum TlsInputError {
    /// The peer sent something TLS cannot accept (bad record, failed handshake, bad alert).
    Protocol(rustls::Error),
    /// The peer closed its side cleanly (close_notify).
    Closed,
}

/// Feed received ciphertext; append the plaintext it yields to `plain`.
pub fn receive(
    tls: &mut rustls::ServerConnection,
    mut ciphertext: &[u8],
    plain: &mut Vec<u8>,
) -> Result<(), TlsInputError> {
    let mut stuck = false;
    while !ciphertext.is_empty() {
        match tls.read_tls(&mut ciphertext) {
            Ok(0) => break,
            Ok(_) => stuck = false,
            // Its buffer is full: process what it has, then go on (twice in a row: give up).
            Err(_) if stuck => {
                return Err(TlsInputError::Protocol(rustls::Error::General(
                    "TLS input buffer full".into(),
                )))
            }
            Err(_) => stuck = true,
        }
        let state = tls.process_new_packets().map_err(TlsInputError::Protocol)?;
        let mut n = state.plaintext_bytes_to_read();
        while n > 0 {
            let start = plain.len();
            plain.resize(start + n, 0);
            match tls.reader().read(&mut plain[start..]) {
                Ok(got) => {
                    plain.truncate(start + got);
                    if got == 0 {
                        break;
                    }
                    n -= got.min(n);
                }
                Err(_) => {
                    plain.truncate(start);
                    break;
                }
            }
        }
        if state.peer_has_closed() && plain.is_empty() {
            return Err(TlsInputError::Closed);
        }
    }
    Ok(())
}

impl Conn {
    /// Encrypt what is queued in `out` (and any TLS handshake or alert bytes) into `sending`;
    /// a connection closing after this flush also says close_notify. Returns false if there
    /// is nothing to send.
    pub(super) fn seal(&mut self) -> bool {
        let tls = self.tls.as_deref_mut().expect("seal: a TLS connection");
        if !self.out.is_empty() {
            // The connection's buffer limit is lifted at accept (the outbound limit is enforced
            // on `out` before this), so the whole turn is taken. The emptied buffer goes back
            // to the core's pool (`Outbox::next_write`), as on the plain path, so an idle
            // socket does not keep its largest turn's capacity.
            let written = tls.writer().write_all(&self.out);
            self.out.clear();
            if let Err(e) = written {
                tracing::warn!("TLS output refused: {e}; closing");
                self.flags |= flag::CLOSE_AFTER_FLUSH;
            }
        }
        if self.flags & flag::CLOSE_AFTER_FLUSH != 0 {
            tls.send_close_notify();
        }
        self.sending.clear();
        self.sent = 0;
        while tls.wants_write() {
            if tls.write_tls(&mut self.sending).is_err() {
                break;
            }
        }
        !self.sending.is_empty()
    }
}
