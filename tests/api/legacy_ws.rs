//! The legacy `graphql-ws` protocol (subscriptions-transport-ws), which the original tester speaks.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{assert_text, spawn_app, spawn_app_with, NEW_MESSAGE_SUBSCRIPTION};

/// The original tester's exact flow: legacy protocol, the JWT under `headers` in
/// `connection_init`, `start` sent right after init without waiting for the ack.
#[tokio::test]
async fn the_original_tester_flow_receives_messages() {
    let app = spawn_app().await;
    let token = app.signed_up("tester").await;
    let mut ws = app.ws("graphql-ws").await;
    assert_eq!(ws.negotiated.as_deref(), Some("graphql-ws"));
    ws.send_json(json!({ "type": "connection_init", "payload": { "headers": { "Authorization": format!("JWT {token}") } } })).await;
    ws.send_json(json!({
        "id": "1",
        "type": "start",
        "payload": { "query": "subscription subscription{ onNewChatMessage(channelIdentifier:\"town-square\"){ message{ id message createAt owner{ username } } } }" }
    }))
    .await;
    assert_eq!(ws.recv_json().await["type"], "connection_ack");
    assert_eq!(
        ws.recv_json().await["type"],
        "ka",
        "legacy clients expect a keep-alive right after the ack"
    );
    app.wait_for_subscriptions(1).await;

    let sent = app
        .send(&token, "town-square", "hello from the tester")
        .await;
    let data = ws.recv_data().await;
    assert_eq!(
        (data["type"].as_str(), data["id"].as_str()),
        (Some("data"), Some("1"))
    );
    let message = &data["payload"]["data"]["onNewChatMessage"]["message"];
    assert_eq!(message["id"], sent.as_str());
    assert_eq!(message["message"], "hello from the tester");
    assert_eq!(message["owner"]["username"], "tester");
    assert_text(message, "/createAt", "T");
}

#[tokio::test]
async fn a_connection_without_subprotocol_speaks_legacy() {
    let app = spawn_app().await;
    let token = app.signed_up("tester").await;
    let mut ws = app.ws_with(None, None).await;
    ws.send_json(json!({ "type": "connection_init", "payload": { "token": token } }))
        .await;
    assert_eq!(ws.recv_json().await["type"], "connection_ack");
}

#[tokio::test]
async fn keep_alive_stop_and_terminate() {
    let app = spawn_app_with(|c| c.gateway.keepalive_interval = Duration::from_millis(150)).await;
    let token = app.signed_up("alice").await;
    let mut ws = app.ws("graphql-ws").await;
    ws.send_json(json!({ "type": "connection_init", "payload": { "Authorization": format!("JWT {token}") } })).await;
    assert_eq!(ws.recv_json().await["type"], "connection_ack");
    assert_eq!(ws.recv_json().await["type"], "ka");
    assert_eq!(ws.recv_json().await["type"], "ka", "periodic keep-alive");

    ws.send_json(json!({ "id": "7", "type": "start", "payload": { "query": NEW_MESSAGE_SUBSCRIPTION, "variables": { "c": "town-square" } } })).await;
    app.wait_for_subscriptions(1).await;
    ws.send_json(json!({ "id": "7", "type": "stop" })).await;
    assert_eq!(
        ws.recv_data().await,
        json!({ "id": "7", "type": "complete" })
    );
    app.wait_for_subscriptions(0).await;

    ws.send_json(json!({ "type": "connection_terminate" }))
        .await;
    assert_eq!(ws.expect_close().await.0, 1000);
}

#[tokio::test]
async fn errors_are_reported_without_dropping_the_connection() {
    let app = spawn_app().await;
    let alice = app.signed_up("alice").await;
    let eve = app.signed_up("eve").await;
    app.channel(&alice, "private", &[]).await;
    let mut ws = app.ws("graphql-ws").await;

    ws.send_json(json!({ "id": "0", "type": "start", "payload": { "query": NEW_MESSAGE_SUBSCRIPTION, "variables": { "c": "town-square" } } })).await;
    let early = ws.recv_data().await;
    assert_eq!(
        (early["type"].as_str(), early["id"].as_str()),
        (Some("error"), Some("0")),
        "start before init"
    );

    ws.send_json(json!({ "type": "connection_init", "payload": { "headers": { "Authorization": format!("JWT {eve}") } } })).await;
    assert_eq!(ws.recv_data().await["type"], "connection_ack");
    ws.send_text("not json").await;
    assert_eq!(
        ws.recv_data().await["payload"]["message"],
        "Message must be JSON-parseable"
    );
    ws.send_json(json!({ "type": "whatever" })).await;
    assert_eq!(
        ws.recv_data().await["payload"]["message"],
        "Invalid message type!"
    );

    ws.send_json(json!({ "id": "1", "type": "start", "payload": { "query": NEW_MESSAGE_SUBSCRIPTION, "variables": { "c": "private" } } })).await;
    let refused = ws.recv_data().await;
    assert_eq!(
        (refused["type"].as_str(), refused["id"].as_str()),
        (Some("error"), Some("1"))
    );
    assert_text(&refused, "/payload/message", "Channel not found");

    ws.send_json(json!({ "id": "2", "type": "start", "payload": { "query": NEW_MESSAGE_SUBSCRIPTION, "variables": { "c": "town-square" } } })).await;
    app.wait_for_subscriptions(1).await;
    app.send(&alice, "town-square", "still here").await;
    assert_eq!(
        ws.recv_data().await["payload"]["data"]["onNewChatMessage"]["message"]["message"],
        "still here"
    );
}

#[tokio::test]
async fn a_bad_token_gets_connection_error_then_close() {
    let app = spawn_app().await;
    let mut ws = app.ws("graphql-ws").await;
    ws.send_json(json!({ "type": "connection_init", "payload": { "headers": { "Authorization": "JWT garbage" } } })).await;
    let error = ws.recv_json().await;
    assert_eq!(error["type"], "connection_error");
    assert_text(&error, "/payload/message", "Error decoding signature");
    assert_eq!(ws.expect_close().await.0, 4403);
}
