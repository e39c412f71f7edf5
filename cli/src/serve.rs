//! `wasmq serve`: the HTTP API, `/metrics` and the dashboard (the `wasmq-serve` library); here
//! only the flags, the token file and the socket.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use super::{Global, Outcome, exit, value};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on. A non-loopback address needs a token (and then every read needs it
    /// too).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The token of the API's actions (`Authorization: Bearer TOKEN`) and of the dashboard's
    /// login; at least 16 characters. Prefer --auth-token-file or WASMQ_AUTH_TOKEN: a flag shows in
    /// `ps`.
    #[arg(long, env = "WASMQ_AUTH_TOKEN", hide_env_values = true, conflicts_with = "auth_token_file")]
    pub auth_token: Option<String>,
    /// A file whose first line is the token.
    #[arg(long)]
    pub auth_token_file: Option<PathBuf>,
    /// Reads (pages, GET /v1/..., /metrics) need the token too (always so off loopback).
    #[arg(long)]
    pub auth_read: bool,
    /// Refuse every action and show no buttons.
    #[arg(long)]
    pub read_only: bool,
    /// Largest module POST /v1/modules takes.
    #[arg(long, default_value = value::text_size(wasmq::store::DEFAULT_MAX_MODULE_SIZE), value_parser = value::size)]
    pub max_module_size: u64,
    /// Largest task input the API takes.
    #[arg(long, default_value = value::text_size(wasmq::client::DEFAULT_MAX_INPUT_SIZE), value_parser = value::size)]
    pub max_input_size: u64,
}

pub async fn run(g: &Global, a: ServeArgs) -> Outcome {
    let token = match (&a.auth_token, &a.auth_token_file) {
        (Some(t), _) => Some(t.trim().to_string()),
        (None, Some(p)) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?;
            Some(text.lines().next().unwrap_or_default().trim().to_string())
        }
        (None, None) => None,
    };
    let config = wasmq_serve::ServeConfig {
        token,
        auth_read: a.auth_read,
        read_only: a.read_only,
        max_module_size: a.max_module_size,
        max_input_size: a.max_input_size,
    };
    let config = match config.for_address(a.listen) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(exit::USAGE);
        }
    };
    let client = g.client().await?;
    let app = wasmq_serve::router(client, config)?;
    let listener = tokio::net::TcpListener::bind(a.listen).await.with_context(|| format!("cannot listen on {}", a.listen))?;
    let addr = listener.local_addr()?;
    // The address actually bound (with port 0, the one the OS chose): tests and scripts read it.
    println!("listening on http://{addr}");
    tracing::info!("wasmq serve listening on http://{addr}");
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            tokio::select! {
                _ = shutdown => {}
                _ = term.recv() => {}
            }
        })
        .await?;
    Ok(exit::OK)
}
