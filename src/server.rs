//! Process wiring: the data-plane engine plus the control-plane thread (admin API, signals).
use crate::admin::{self, AdminState};
use crate::config::Config;
use crate::runtime::Engine;
use crate::service::listener::Listener;
use crate::service::session::SessionKey;
use crate::service::webhook::WebhookListener;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Run until SIGTERM/SIGINT, then drain.
pub fn run(config: Config, config_path: Option<PathBuf>) -> Result<(), Box<dyn std::error::Error>> {
    let session_key = match &config.sessions.key {
        Some(hex) => SessionKey::from_hex(hex).ok_or("sessions.key must be 64 hex characters")?,
        None => SessionKey::random(),
    };
    // The admin listener's cap must leave the process descriptors for everything else
    // (reloads, certificates, the webhook): at most half of what the process may open. The
    // engine raises the soft limit to the hard one, so the hard limit is what counts.
    if let Some((_, hard)) = admin::nofile_limits() {
        let max = config.admin.max_connections as u64;
        if max > hard / 2 {
            return Err(format!(
                "admin.max_connections = {max} is more than half of the descriptor limit \
                 (RLIMIT_NOFILE = {hard}): lower it or raise the limit (LimitNOFILE=)"
            )
            .into());
        }
    }
    let node_id: Arc<str> = config
        .cluster
        .as_ref()
        .map_or("local", |c| c.node_id.as_str())
        .into();
    let webhook = match &config.webhook {
        Some(w) => Some(Arc::new(WebhookListener::new(w, &node_id)?)),
        None => None,
    };
    let listeners: Vec<Arc<dyn Listener>> = webhook
        .iter()
        .map(|w| w.clone() as Arc<dyn Listener>)
        .collect();
    let links = config
        .cluster
        .as_ref()
        .map(|c| crate::cluster::ClusterState::new(c, Engine::cores_for(&config)));
    let history = crate::history_bus::start(&config)?;
    let engine = Engine::start(
        config.clone(),
        session_key.clone(),
        listeners,
        links.as_ref().map(|(state, _)| state.clone()),
        history.as_ref().map(|(_, bus)| bus.clone()),
    )?;
    let shared = engine.shared.clone();
    // The one facade to the cores, shared by the cluster link and the admin API.
    let service = crate::facade::Service::new(shared.clone(), session_key.clone());
    let cluster = match (&config.cluster, links) {
        (Some(c), Some((state, bells))) => Some(crate::link::Cluster::start(
            c,
            &config.nats,
            state,
            bells,
            service.clone(),
        )?),
        _ => None,
    };
    // Pushes published on NATS: a thread of its own, connecting in the background.
    let ingress = if config.nats.ingress {
        Some(crate::ingress::start(&config.nats, service.clone())?)
    } else {
        None
    };
    // `[jwt] jwks_url`: fetched on the control thread's runtime, handed to the cores whole.
    let jwks = config
        .jwt
        .as_ref()
        .filter(|j| j.jwks_url.is_some())
        .map(|j| {
            (
                j.clone(),
                Arc::new(crate::service::jwks::JwksStats::default()),
            )
        });
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
    let endpoints: Vec<String> = config
        .endpoints
        .iter()
        .map(|e| format!("{} ({})", e.path, e.kind.name()))
        .collect();
    // The handlers are in place before anyone hears the node is ready: a SIGTERM right after
    // the ready line or READY=1 drains instead of killing the process (the default action).
    let signals = {
        let _runtime = control.enter();
        Signals::install()
    };
    tracing::info!(
        "ringwire ready: listening on {} with {} cores, admin on {}; endpoints {}",
        config.server.listen,
        shared.cores,
        config.admin.listen,
        endpoints.join(", ")
    );
    control.block_on(async {
        let state = AdminState {
            shared: shared.clone(),
            service,
            key: session_key,
            node_id,
            config: Arc::new(Mutex::new(config.clone())),
            config_path,
            webhook: webhook.clone(),
            listener_stats: Arc::new(admin::ListenerStats::default()),
            fd_reserve: Arc::new(admin::FdReserve::default()),
            ingress: ingress.as_ref().map(|i| i.stats()),
            jwks: jwks.as_ref().map(|(_, stats)| stats.clone()),
            timings: Default::default(),
        };
        let jwks_task = jwks.map(|(cfg, stats)| {
            let service = state.service.clone();
            tokio::spawn(crate::service::jwks::run(cfg, stats, move |keys| {
                service.set_jwks(keys)
            }))
        });
        if let Some(w) = &webhook {
            tokio::spawn(w.clone().run());
        }
        // `[proxy]`: the calls of `auth = "proxy"` endpoints, asked by the cores.
        if let Some(p) = &shared.proxy {
            tokio::spawn(p.clone().run());
        }
        let admin = tokio::spawn(admin::serve(admin_listener, state.clone()));
        // Every listener is bound: the public one (the engine), the admin API, the link.
        crate::systemd::notify("READY=1");
        signals.wait(&state).await;
        crate::systemd::notify("STOPPING=1");
        if let Some(c) = &cluster {
            // The other nodes stop routing here before any socket is closed.
            c.leave().await;
        }
        tracing::info!("shutting down: draining sockets (1001)");
        engine.shutdown();
        // The admin API keeps answering during the drain (`/readyz` is 503, pushes still
        // reach the sockets not closed yet) until every core has stopped.
        let _ = tokio::task::spawn_blocking(move || engine.join()).await;
        admin.abort();
        if let Some(t) = jwks_task {
            t.abort();
        }
    });
    if let Some(i) = ingress {
        // Taken through the drain, like the admin API's pushes; the cores have stopped now,
        // so the queue group's other nodes take what comes next.
        i.shutdown();
    }
    if let Some(w) = &webhook {
        // The cores have stopped: their close events are queued. One last bounded drain.
        control.block_on(w.shutdown(w.shutdown_grace()));
    }
    if let Some(c) = cluster {
        c.shutdown();
    }
    if let Some((handle, _)) = history {
        // The cores have stopped: nothing asks the store any more.
        handle.shutdown();
    }
    tracing::info!("ringwire stopped");
    Ok(())
}

/// SIGTERM, SIGINT and SIGHUP, caught from [`Signals::install`] on (in the control runtime's
/// context).
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Signals {
        use tokio::signal::unix::{signal, SignalKind};
        Signals {
            term: signal(SignalKind::terminate()).expect("install SIGTERM handler"),
            int: signal(SignalKind::interrupt()).expect("install SIGINT handler"),
            hup: signal(SignalKind::hangup()).expect("install SIGHUP handler"),
        }
    }

    /// Wait for SIGTERM/SIGINT; SIGHUP reloads the configuration meanwhile.
    async fn wait(mut self, state: &AdminState) {
        loop {
            tokio::select! {
                _ = self.term.recv() => return,
                _ = self.int.recv() => return,
                _ = self.hup.recv() => Self::reload(state),
            }
        }
    }

    fn reload(state: &AdminState) {
        match admin::reload_config(state) {
            Ok(restart) if restart.is_empty() => tracing::info!("configuration reloaded (SIGHUP)"),
            Ok(restart) => tracing::warn!(
                "configuration reloaded (SIGHUP); needs a restart: {}",
                restart.join(", ")
            ),
            Err(e) => tracing::error!("reload failed, configuration unchanged: {e}"),
        }
    }
}
