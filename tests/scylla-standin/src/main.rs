//! `scylla-standin ADDR [USER PASSWORD] [--tls CERT.pem KEY.pem]`: serves the CQL stand-in on
//! ADDR until killed; with `--tls`, over TLS only.

use std::net::SocketAddr;
use std::path::PathBuf;

const USAGE: &str = "usage: scylla-standin 127.0.0.1:PORT [USER PASSWORD] [--tls CERT.pem KEY.pem]";

fn fail(message: &str) -> ! {
    eprintln!("scylla-standin: {message}\n{USAGE}");
    std::process::exit(2);
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let mut positional = Vec::new();
    let mut tls_files = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--tls" {
            match (args.next(), args.next()) {
                (Some(cert), Some(key)) => {
                    tls_files = Some((PathBuf::from(cert), PathBuf::from(key)));
                }
                _ => fail("--tls needs CERT.pem and KEY.pem"),
            }
        } else {
            positional.push(arg);
        }
    }
    let mut positional = positional.into_iter();
    let Some(addr) = positional.next() else {
        fail("no address given");
    };
    let addr: SocketAddr = match addr.parse() {
        Ok(addr) => addr,
        Err(e) => fail(&format!("{addr} is not an address: {e}")),
    };
    let credentials = match (positional.next(), positional.next(), positional.next()) {
        (Some(user), Some(password), None) => Some((user, password)),
        (None, None, None) => None,
        _ => fail("give both USER and PASSWORD, or neither"),
    };
    let started = match &tls_files {
        None => scylla_standin::Standin::start_with(addr, credentials).await,
        Some((cert, key)) => match scylla_standin::tls::server_config(cert, key) {
            Ok(tls) => scylla_standin::Standin::start_tls(addr, credentials, tls).await,
            Err(e) => fail(&format!("--tls: {e}")),
        },
    };
    let standin = match started {
        Ok(standin) => standin,
        Err(e) => {
            eprintln!("scylla-standin: cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    let mode = if tls_files.is_some() { " (TLS)" } else { "" };
    println!("scylla-standin listening on {}{mode}", standin.addr());
    let _ = tokio::signal::ctrl_c().await;
}
