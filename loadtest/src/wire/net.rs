//! Sockets: TCP connect from a chosen source address, and abrupt drops (RST).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};

use tokio::net::{TcpSocket, TcpStream};

use crate::wire::errors::classify_io;

/// Sets `SO_LINGER` to zero, so that closing the socket sends a RST at once (an abrupt
/// drop, as after a network blip, without TIME_WAIT).
pub fn set_linger_zero(fd: RawFd) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a socket fd owned by the caller and a linger value of the right size.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &l as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// TCP connect to `target`, bound to `source` if given.
pub async fn tcp_connect(target: SocketAddr, source: Option<IpAddr>) -> Result<TcpStream, String> {
    let io_kind = |e: io::Error| classify_io(&e).to_string();
    let sock = if target.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(io_kind)?;
    if let Some(src) = source {
        // Let the kernel pick the port at connect() time, per (src, dst) 4-tuple,
        // instead of reserving a port per source IP at bind() time.
        let one: libc::c_int = 1;
        // SAFETY: valid fd and a c_int option value of the right size.
        unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                &one as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        sock.bind(SocketAddr::new(src, 0)).map_err(io_kind)?;
    }
    let stream = sock.connect(target).await.map_err(io_kind)?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}
