//! WebSocket echo server on tokio-tungstenite: echoes text and binary messages; tungstenite
//! answers pings and close frames by itself. Multi-threaded tokio runtime, 2 worker threads.
//!
//!     echo-tungstenite 127.0.0.1:9001 [worker_threads]
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};

fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:9001".into());
    let threads: usize = std::env::args().nth(2).and_then(|s| s.parse().ok()).unwrap_or(2);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?
        .block_on(serve(addr, threads))
}

async fn serve(addr: String, threads: usize) -> std::io::Result<()> {
    let listener = TcpListener::bind(&addr).await?;
    eprintln!("echo-tungstenite listening on {addr} ({threads} worker threads)");
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(handle(stream));
    }
}

async fn handle(stream: TcpStream) {
    // Small, latency-sensitive messages (ringwire, node `ws` and the load tester set it too).
    let _ = stream.set_nodelay(true);
    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    // Pings are answered (and close frames acknowledged) inside tungstenite on the next
    // read or write; only data messages are echoed.
    while let Some(Ok(msg)) = ws.next().await {
        if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
            break;
        }
    }
}
