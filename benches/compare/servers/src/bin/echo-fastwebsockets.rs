//! WebSocket echo server on fastwebsockets + hyper 1 (the `upgrade` feature), after the
//! crate's examples/echo_server.rs: echoes text and binary messages; fastwebsockets answers
//! pings (auto_pong) and close frames (auto_close) by itself. Multi-threaded tokio runtime,
//! 2 worker threads.
//!
//!     echo-fastwebsockets 127.0.0.1:9002 [worker_threads]
use fastwebsockets::{upgrade, FragmentCollector, OpCode, WebSocketError};
use http_body_util::Empty;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use tokio::net::TcpListener;

fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:9002".into());
    let threads: usize = std::env::args().nth(2).and_then(|s| s.parse().ok()).unwrap_or(2);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?
        .block_on(serve(addr, threads))
}

async fn serve(addr: String, threads: usize) -> std::io::Result<()> {
    let listener = TcpListener::bind(&addr).await?;
    eprintln!("echo-fastwebsockets listening on {addr} ({threads} worker threads)");
    loop {
        let (stream, _) = listener.accept().await?;
        // Small, latency-sensitive messages (ringwire, node `ws` and the load tester set it too).
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(stream);
            let conn = http1::Builder::new()
                .serve_connection(io, service_fn(server_upgrade))
                .with_upgrades();
            let _ = conn.await;
        });
    }
}

async fn server_upgrade(
    mut req: Request<Incoming>,
) -> Result<Response<Empty<Bytes>>, WebSocketError> {
    let (response, fut) = upgrade::upgrade(&mut req)?;
    tokio::spawn(async move {
        // As in the crate's example: the echo loop runs unconstrained by tokio's coop budget.
        let _ = tokio::task::unconstrained(handle_client(fut)).await;
    });
    Ok(response)
}

async fn handle_client(fut: upgrade::UpgradeFut) -> Result<(), WebSocketError> {
    // FragmentCollector reassembles fragmented messages, so whole messages are echoed.
    let mut ws = FragmentCollector::new(fut.await?);
    loop {
        let frame = ws.read_frame().await?;
        match frame.opcode {
            OpCode::Close => break,
            OpCode::Text | OpCode::Binary => ws.write_frame(frame).await?,
            _ => {}
        }
    }
    Ok(())
}
