//! The `ringwire` command.
use clap::{Parser, Subcommand};
use ringwire::config::Config;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "ringwire",
    version,
    about = "WebSocket push server for Linux (io_uring, thread-per-core)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (embedded defaults when no --config is given: public listener
    /// 127.0.0.1:8080 with /ws (raw) and /socket.io/, admin API 127.0.0.1:8081).
    Serve {
        /// TOML configuration file (see `ringwire defaults` or tuning/ringwire.example.toml).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Public listener, instead of `server.listen` [default: 127.0.0.1:8080].
        #[arg(long, value_name = "ADDR")]
        listen: Option<std::net::SocketAddr>,
        /// Admin API listener, instead of `admin.listen` [default: 127.0.0.1:8081].
        #[arg(long, value_name = "ADDR")]
        admin_listen: Option<std::net::SocketAddr>,
        /// Validate the configuration and exit (0 = valid).
        #[arg(long)]
        check: bool,
    },
    /// Cluster tools.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Print a fresh random `sessions.key` (64 hex characters, 32 bytes from the OS).
    Keygen,
    /// Print the default configuration: every key with its default and why (a file to
    /// start from: `ringwire defaults > ringwire.toml`).
    Defaults,
    /// Check this host for N connections and print what to change (exit 0 = ready).
    Doctor {
        /// Target number of concurrent connections on this node.
        #[arg(long, short = 'n', default_value_t = 25_000)]
        connections: u64,
        /// The configuration the server will run with (cores, backlog, reserve).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Print the findings as JSON (`{"connections", "ready", "findings": [{"level",
        /// "what", "change"}]}`).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Generate a development CA and a certificate per node for the cluster link's mutual
    /// TLS: DIR/ca.pem, DIR/ca.key, DIR/<node>.pem, DIR/<node>.key.
    Certs {
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Node ids (as in `cluster.node_id`).
        #[arg(required = true)]
        nodes: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RINGWIRE_LOG")
                // The NATS client logs each of its events at info (every reconnect attempt
                // while NATS is down); ringwire says what matters once, itself.
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,async_nats=warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match cli.command {
        Command::Cluster(ClusterCommand::Certs { out, nodes }) => {
            match ringwire::link::certs::generate(&out, &nodes) {
                Ok(()) => {
                    println!(
                        "wrote {}/ca.pem, ca.key and a certificate and key per node: {}",
                        out.display(),
                        nodes.join(", ")
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("ringwire: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Doctor {
            connections,
            config,
            json,
        } => {
            let cfg = match config
                .as_deref()
                .map(Config::load)
                .unwrap_or(Ok(Config::default()))
            {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("ringwire: invalid configuration: {e}");
                    return ExitCode::from(2);
                }
            };
            let host = ringwire::doctor::read_host();
            let ready = if json {
                let (report, ready) = ringwire::doctor::report_json(&host, connections, &cfg);
                println!("{report}");
                ready
            } else {
                let (text, ready) = ringwire::doctor::report(&host, connections, &cfg);
                print!("{text}");
                ready
            };
            if ready {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Command::Defaults => {
            print!("{}", include_str!("../tuning/ringwire.example.toml"));
            ExitCode::SUCCESS
        }
        Command::Keygen => {
            let mut key = [0u8; 32];
            if let Err(e) = getrandom::getrandom(&mut key) {
                eprintln!("ringwire: no OS random source: {e}");
                return ExitCode::FAILURE;
            }
            let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
            println!("{hex}");
            ExitCode::SUCCESS
        }
        Command::Serve {
            config,
            listen,
            admin_listen,
            check,
        } => {
            let cfg = match &config {
                Some(path) => Config::load(path),
                None => Ok(Config::default()),
            };
            // Command-line addresses win over the file; the result is validated again (an
            // admin API off loopback needs a token).
            let cfg = cfg.and_then(|mut c| {
                if let Some(a) = listen {
                    c.server.listen = a;
                }
                if let Some(a) = admin_listen {
                    c.admin.listen = a;
                }
                c.validate().map(|()| c)
            });
            let cfg = match cfg {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("ringwire: invalid configuration: {e}");
                    return ExitCode::from(2);
                }
            };
            if let Some(t) = &cfg.tls {
                if let Err(e) = ringwire::config::pem::tls_server_config(t) {
                    eprintln!("ringwire: invalid configuration: {e}");
                    return ExitCode::from(2);
                }
            }
            // `[jwt]`: the key file is read and parsed, as at start.
            if let Some(j) = &cfg.jwt {
                if let Err(e) = ringwire::service::jwt::JwtVerifier::new(j) {
                    eprintln!("ringwire: invalid configuration: {e}");
                    return ExitCode::from(2);
                }
            }
            // `[websockets] users`: each key's user is a user id, as at start.
            if let Err(e) = ringwire::service::cascade::Cascade::compile(&cfg.websockets) {
                eprintln!("ringwire: invalid configuration: {e}");
                return ExitCode::from(2);
            }
            for warning in cfg.warnings() {
                if check {
                    eprintln!("ringwire: warning: {warning}");
                } else {
                    tracing::warn!("{warning}");
                }
            }
            if check {
                println!(
                    "configuration ok{}",
                    config
                        .map(|p| format!(": {}", p.display()))
                        .unwrap_or_default()
                );
                return ExitCode::SUCCESS;
            }
            match ringwire::server::run(cfg, config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("ringwire: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
