//! Runs the stand-in on its own, to try `mmsub` against "Mattermost" by hand:
//! `cargo run -p mattermost-standin -- [ADDR]` (default `127.0.0.1:8065`, loopback only).

use mattermost_standin::{StandIn, StandInConfig};

#[tokio::main]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8065".into());
    let listener = match tokio::net::TcpListener::bind(&addr).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("mattermost-standin: cannot listen on {addr}: {err}");
            std::process::exit(1);
        }
    };
    let config = StandInConfig::default();
    let standin = StandIn::start_on(config.clone(), listener);
    println!(
        "Mattermost stand-in on {url}\n\n\
         MATTERMOST_SERVER_URL={url}\n\
         MATTERMOST_ADMIN_LOGIN_ID={admin}\n\
         MATTERMOST_ADMIN_LOGIN_PASSWORD={password}\n\
         MATTERMOST_TEAM_IDENTIFIER={team}\n\n\
         State is in memory and ends with this process (Ctrl-C).",
        url = standin.url(),
        admin = config.admin_username,
        password = config.admin_password,
        team = config.team,
    );
    let _ = tokio::signal::ctrl_c().await;
}
