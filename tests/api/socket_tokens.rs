//! A WebSocket connection is authorized by its token for as long as that token is valid, as
//! HTTP would be: it ends with the protocol's authorization answer when the token expires
//! unrenewed, a mutation on the socket renews it, and the client resumes without a gap.

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
