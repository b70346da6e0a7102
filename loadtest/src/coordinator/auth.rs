//! `--auth session`: one session per simulated user, minted through the admin API before
//! any connection is opened.

use std::sync::Arc;

use anyhow::{bail, Result};

use crate::admin::{sessions, AdminClient};
use crate::cli::{AuthMode, RunArgs};
use crate::coordinator::ui::Ui;
use crate::ipc::SessionCred;
use crate::report::AuthReport;

/// The sessions of a run (none without `--auth session`).
#[derive(Default)]
pub struct Auth {
    /// Simulated users (0: no authentication).
    pub users: u64,
    /// The admin API client (also used by the push driver).
    pub admin_client: Option<Arc<AdminClient>>,
    /// By user - 1; `None` where minting failed.
    pub creds: Vec<Option<SessionCred>>,
    pub report: Option<AuthReport>,
    pub mint_seconds: Option<f64>,
    /// Notes for the report's outcome.
    pub notes: Vec<String>,
}

/// Mints the sessions with `--auth session`; fails if none could be minted.
pub async fn mint(args: &RunArgs, ui: &Ui) -> Result<Auth> {
    let n = args.connections;

    // --auth session: mint one session per user before any connection is opened.
    let users = if args.auth == AuthMode::Session {
        args.users.unwrap_or(n)
    } else {
        0
    };
    let mut admin_client: Option<Arc<AdminClient>> = None;
    let mut creds: Vec<Option<SessionCred>> = Vec::new();
    let mut auth_report: Option<AuthReport> = None;
    let mut mint_seconds: Option<f64> = None;
    let mut pre_notes: Vec<String> = Vec::new();
    if users > 0 {
        let client = AdminClient::new(&args.admin_url, args.admin_token.as_deref()).await?;
        ui.log(format!(
            "minting {users} sessions (context {}) via {} ({}) with {} connections",
            args.context,
            args.admin_url,
            client.addr(),
            args.mint_concurrency
        ));
        let m = sessions::mint_sessions(
            client.clone(),
            users,
            args.user_prefix.as_deref(),
            args.context,
            args.session_ttl_secs,
            args.mint_concurrency,
            &|m| ui.log(m),
        )
        .await;
        ui.log(format!(
            "minted {} sessions in {:.2} s ({:.0}/s), {} failed",
            m.minted,
            m.seconds,
            m.minted as f64 / m.seconds.max(1e-9),
            m.failed
        ));
        if m.minted == 0 {
            bail!(
                "could not mint any session via {}: {}",
                args.admin_url,
                m.first_error.as_deref().unwrap_or("unknown error")
            );
        }
        if m.failed > 0 {
            pre_notes.push(format!(
                "{} of {users} sessions could not be minted; their connections fail with no_session",
                m.failed
            ));
        }
        mint_seconds = Some(m.seconds);
        auth_report = Some(AuthReport {
            mode: args.auth,
            admin_url: args.admin_url.clone(),
            users,
            context: args.context,
            sockets_per_user: n as f64 / users as f64,
            sessions_minted: m.minted,
            sessions_failed: m.failed,
            mint_errors_by_kind: m.errors_by_kind,
            mint_first_error: m.first_error,
            mint_seconds: m.seconds,
            mint_rate_per_s: m.minted as f64 / m.seconds.max(1e-9),
        });
        creds = m.creds;
        admin_client = Some(client);
    }
    Ok(Auth {
        users,
        admin_client,
        creds,
        report: auth_report,
        mint_seconds,
        notes: pre_notes,
    })
}
