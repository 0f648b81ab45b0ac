//! `scylla-standin ADDR [USER PASSWORD]`: serves the CQL stand-in on ADDR until killed.

use std::net::SocketAddr;

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let mut args = std::env::args().skip(1);
    let Some(addr) = args.next() else {
        eprintln!("usage: scylla-standin 127.0.0.1:PORT [USER PASSWORD]");
        std::process::exit(2);
    };
    let addr: SocketAddr = match addr.parse() {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("scylla-standin: {addr} is not an address: {e}");
            std::process::exit(2);
        }
    };
    let credentials = match (args.next(), args.next()) {
        (Some(user), Some(password)) => Some((user, password)),
        (None, None) => None,
        _ => {
            eprintln!("scylla-standin: give both USER and PASSWORD, or neither");
            std::process::exit(2);
        }
    };
    let standin = match scylla_standin::Standin::start_with(addr, credentials).await {
        Ok(standin) => standin,
        Err(e) => {
            eprintln!("scylla-standin: cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    println!("scylla-standin listening on {}", standin.addr());
    let _ = tokio::signal::ctrl_c().await;
}
