//! A WebSocket connection is authorized by its token for as long as that token is valid, as
//! HTTP would be: it ends with the protocol's authorization answer when the token expires
//! unrenewed, a mutation on the socket renews it, and the client resumes without a gap. A user
//! removed from a channel stops receiving it within the membership re-check interval.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{jwt, spawn_app, spawn_app_with, TestApp, WsClient, JWT_SECRET};

const RESUME: &str = "subscription($c: String!, $after: String) {
  onNewChatMessage(channelIdentifier: $c, afterMessageId: $after) { message { id message } }
}";

fn start_type(protocol: &str) -> &'static str {
    if protocol == "graphql-ws" {
        "start"
    } else {
        "subscribe"
    }
}

/// Connects with `token` in `connection_init` and subscribes as `id`, resuming after `after`.
async fn subscribed(app: &TestApp, protocol: &str, token: &str, after: Option<&str>) -> WsClient {
    let mut ws = app.ws(protocol).await;
    ws.send_json(json!({ "type": "connection_init", "payload": { "Authorization": format!("JWT {token}") } }))
        .await;
    assert_eq!(ws.recv_data().await["type"], "connection_ack");
    ws.send_json(json!({ "id": "s", "type": start_type(protocol), "payload": { "query": RESUME, "variables": { "c": "room", "after": after } } }))
        .await;
    app.wait_for_subscriptions(1).await;
    ws
}

fn message(next: &Value) -> (String, String) {
    let m = &next["payload"]["data"]["onNewChatMessage"]["message"];
    (
        m["id"]
            .as_str()
            .unwrap_or_else(|| panic!("a message: {next}"))
            .to_owned(),
        m["message"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn an_expired_token_ends_the_socket_and_the_client_resumes_with_no_gap() {
    for protocol in ["graphql-transport-ws", "graphql-ws"] {
        let app = spawn_app().await;
        let alice = app.signed_up("alice").await;
        app.channel(&alice, "room", &[]).await;
        let short = jwt("alice", 2, 0, JWT_SECRET);
        let mut ws = subscribed(&app, protocol, &short, None).await;
        app.send(&alice, "room", "before").await;
        let (last_id, text) = message(&ws.recv_data().await);
        assert_eq!(text, "before");

        if protocol == "graphql-ws" {
            let error = ws.recv_data().await;
            assert_eq!(error["type"], "connection_error", "{error}");
        }
        let (code, reason) = ws.expect_close().await;
        assert_eq!(code, 4403, "{protocol}: {reason}");
        assert!(reason.contains("token expired"), "{reason}");

        // Posted while the client was away; it reconnects with a fresh token and resumes.
        app.send(&alice, "room", "while away").await;
        let mut ws = subscribed(&app, protocol, &alice, Some(&last_id)).await;
        assert_eq!(message(&ws.recv_data().await).1, "while away");
        app.send(&alice, "room", "after").await;
        assert_eq!(message(&ws.recv_data().await).1, "after");
    }
}

#[tokio::test]
async fn from_expiry_on_no_operation_is_authorized_and_the_grace_ends_the_socket() {
    let app = spawn_app_with(|c| c.gateway.token_grace = Duration::from_secs(3)).await;
    let alice = app.signed_up("alice").await;
    app.channel(&alice, "room", &[]).await;
    let short = jwt("alice", 1, 0, JWT_SECRET);
    let mut ws = subscribed(&app, "graphql-transport-ws", &short, None).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Expired: a new operation is refused as over HTTP; the live one goes on in the grace.
    ws.send_json(json!({ "id": "late", "type": "subscribe", "payload": { "query": RESUME, "variables": { "c": "room" } } }))
        .await;
    let refused = ws.recv_json().await;
    assert_eq!(
        (refused["type"].as_str(), refused["id"].as_str()),
        (Some("error"), Some("late")),
        "{refused}"
    );
    ws.send_json(json!({ "id": "post", "type": "subscribe", "payload": { "query": "mutation { textMessageSend(channelIdentifier: \"room\", textMessage: \"as alice\") { statusCode } }" } }))
        .await;
    let post = ws.recv_json().await;
    assert_eq!(post["type"], "error", "{post}");
    assert_eq!(
        post["payload"][0]["extensions"]["code"], "FORBIDDEN",
        "{post}"
    );
    app.send(&alice, "room", "in the grace").await;
    assert_eq!(message(&ws.recv_json().await).1, "in the grace");
    assert_eq!(ws.expect_close().await.0, 4403);
}

#[tokio::test]
async fn a_refresh_on_the_socket_renews_the_connection() {
    let app = spawn_app().await;
    let alice = app.signed_up("alice").await;
    app.channel(&alice, "room", &[]).await;
    let short = jwt("alice", 2, 0, JWT_SECRET);
    let mut ws = subscribed(&app, "graphql-transport-ws", &short, None).await;
    ws.send_json(json!({ "id": "renew", "type": "subscribe", "payload": { "query": "mutation($t: String) { refreshToken(token: $t) { token } }", "variables": { "t": short } } }))
        .await;
    let renewed = ws.recv_json().await;
    assert!(
        renewed["payload"]["data"]["refreshToken"]["token"].is_string(),
        "{renewed}"
    );
    assert_eq!(ws.recv_json().await["type"], "complete");
    tokio::time::sleep(Duration::from_millis(3000)).await;
    app.send(&alice, "room", "still here").await;
    assert_eq!(message(&ws.recv_json().await).1, "still here");
}

#[tokio::test]
async fn the_originals_never_expiring_sockets_are_a_setting() {
    let app = spawn_app_with(|c| c.gateway.tokens_never_expire = true).await;
    let alice = app.signed_up("alice").await;
    app.channel(&alice, "room", &[]).await;
    let short = jwt("alice", 1, 0, JWT_SECRET);
    let mut ws = subscribed(&app, "graphql-ws", &short, None).await;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    app.send(&alice, "room", "kept").await;
    assert_eq!(message(&ws.recv_data().await).1, "kept");
}

/// Takes `username` out of `channel` in the embedded store's database, as an administrator
/// would (the contract has no operation for it).
fn remove_from_embedded(app: &TestApp, channel: &str, username: &str) {
    let db = rusqlite::Connection::open(app.config.data_dir.join("mmsub.db")).unwrap();
    let removed = db
        .execute(
            "DELETE FROM channel_members WHERE channel_id = (SELECT id FROM channels WHERE name = ?1)
               AND user_id = (SELECT id FROM users WHERE username = ?2)",
            [channel, username],
        )
        .unwrap();
    assert_eq!(removed, 1);
}

async fn removed_member_stops_receiving(app: &TestApp, remove: impl FnOnce()) {
    let alice = app.signed_up("alice").await;
    app.signed_up("bob").await;
    app.channel(&alice, "room", &["bob"]).await;
    let bob = app.token("bob").await;
    let mut modern = subscribed_as(app, "graphql-transport-ws", &bob).await;
    let mut legacy = subscribed_as(app, "graphql-ws", &bob).await;
    app.send(&alice, "room", "while a member").await;
    assert_eq!(message(&modern.recv_data().await).1, "while a member");
    assert_eq!(message(&legacy.recv_data().await).1, "while a member");
    remove();
    for ws in [&mut modern, &mut legacy] {
        let ended = tokio::time::timeout(Duration::from_secs(5), ws.recv_data())
            .await
            .expect("the subscription ends within the re-check interval");
        assert_eq!(
            (ended["type"].as_str(), ended["id"].as_str()),
            (Some("error"), Some("s")),
            "{ended}"
        );
        assert!(ended.to_string().contains("no longer a member"), "{ended}");
    }
    app.send(&alice, "room", "after the removal").await;
    modern.expect_silence(Duration::from_millis(300)).await;
    legacy.expect_silence(Duration::from_millis(300)).await;
}

async fn subscribed_as(app: &TestApp, protocol: &str, token: &str) -> WsClient {
    let mut ws = app.ws(protocol).await;
    ws.send_json(json!({ "type": "connection_init", "payload": { "Authorization": format!("JWT {token}") } }))
        .await;
    assert_eq!(ws.recv_data().await["type"], "connection_ack");
    let live = app.readyz().await["subscriptions"].as_u64().unwrap();
    ws.send_json(json!({ "id": "s", "type": start_type(protocol), "payload": { "query": RESUME, "variables": { "c": "room" } } }))
        .await;
    app.wait_for_subscriptions(live + 1).await;
    ws
}

#[tokio::test]
async fn a_member_removed_from_the_embedded_store_stops_receiving() {
    let app = spawn_app_with(|c| c.gateway.membership_recheck = Duration::from_secs(1)).await;
    removed_member_stops_receiving(&app, || remove_from_embedded(&app, "room", "bob")).await;
}

#[tokio::test]
async fn a_member_removed_in_mattermost_stops_receiving() {
    let (app, standin) = crate::helpers::spawn_app_on_mattermost(|c| {
        c.gateway.membership_recheck = Duration::from_secs(1);
    })
    .await;
    removed_member_stops_receiving(&app, || standin.remove_member("room", "bob")).await;
}
