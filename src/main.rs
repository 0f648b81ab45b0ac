use clap::Parser;

/// mimalloc instead of the system allocator: a gateway holds thousands of small, long-lived
/// per-connection allocations among short-lived request ones, and mimalloc returns freed pages
/// where glibc's arenas keep them (idle RSS per connection, README "Measured").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use mmsub::config::{Cli, LogFormat};
use mmsub::roles::Role;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // The original read its settings from `.env`; a missing file is fine.
    let _ = dotenvy::dotenv();
    let (role, args) = Cli::parse().into_role();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    match args.log_format {
        // Colours only on a terminal: a log file or a collector gets plain text.
        LogFormat::Human => tracing_subscriber::fmt()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .with_env_filter(filter)
            .init(),
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_env_filter(filter)
            .init(),
    }
    let server = mmsub::start(args.into_role_config(role)?).await?;
    let addr = server.local_addr;
    match role {
        Role::Serve => tracing::info!(
            "mmsub listening on http://{addr}: GraphQL and GraphiQL at /graphql/, WebSocket at ws://{addr}/ws/graphql/"
        ),
        Role::Api => tracing::info!("mmsub api listening on http://{addr}: GraphQL and GraphiQL at /graphql/"),
        Role::Gateway => tracing::info!("mmsub gateway listening on http://{addr}: WebSocket at ws://{addr}/ws/graphql/"),
        Role::Relay | Role::Ingest => {
            tracing::info!("mmsub {} listening on http://{addr}: /healthz and /readyz", role.name());
        }
    }
    if terminated().await {
        tracing::info!("SIGTERM: shutting down");
        server.shutdown().await;
    } else {
        tracing::info!("interrupted: shutting down without the drain");
        server.shutdown_now().await;
    }
    Ok(())
}

/// Waits for SIGTERM (`true`: an orchestrator stops the node, so it drains first) or Ctrl-C
/// (`false`: someone at a terminal, who wants it gone now).
async fn terminated() -> bool {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => false,
            _ = term.recv() => true,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        false
    }
}
