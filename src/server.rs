//! Process wiring: the data-plane engine plus the control-plane thread (admin API, signals).
use crate::admin;
use crate::config::Config;
use crate::runtime::Engine;

/// Run until SIGTERM/SIGINT, then drain.
pub fn run(config: Config) -> Result<(), Box<dyn std::error::Error>> {
    let engine = Engine::start(config.clone())?;
    let shared = engine.shared.clone();
    let control = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("ringwire-control")
        .build()?;
    let admin_listener = control
        .block_on(tokio::net::TcpListener::bind(config.admin.listen))
        .map_err(|e| {
            format!(
                "cannot listen on admin address {}: {e}",
                config.admin.listen
            )
        })?;
    tracing::info!(
        "ringwire ready: listening on {} with {} cores, admin on {}",
        config.server.listen,
        shared.cores,
        config.admin.listen
    );
    control.block_on(async {
        let admin = tokio::spawn(admin::serve(admin_listener, shared.clone(), config.clone()));
        wait_for_signal().await;
        tracing::info!("shutting down: closing sockets with 1001");
        engine.shutdown();
        admin.abort();
    });
    engine.join();
    tracing::info!("ringwire stopped");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
