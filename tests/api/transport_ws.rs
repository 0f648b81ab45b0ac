//! graphql-transport-ws, as its PROTOCOL.md defines it.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{
    assert_text, jwt, spawn_app, spawn_app_with, JWT_SECRET, NEW_MESSAGE_SUBSCRIPTION,
};

#[tokio::test]
async fn members_receive_every_message_in_order_whatever_the_token_source() {
    let app = spawn_app().await;
    let alice = app.signed_up("alice").await;
    let bob = app.signed_up("bob").await;
    let channel_id = app.channel(&alice, "room", &["bob"]).await;

    // Token in the connection_init payload...
    let mut by_payload = app.transport_ws(&bob).await;
    assert_eq!(
        by_payload.negotiated.as_deref(),
        Some("graphql-transport-ws")
    );
    // ...and on the upgrade request, with an empty init payload; subscribing by channel id.
    let mut by_header = app
        .ws_with(
            Some("graphql-transport-ws"),
            Some(&format!("Bearer {alice}")),
        )
        .await;
    by_header
        .send_json(json!({ "type": "connection_init" }))
        .await;
    assert_eq!(by_header.recv_json().await["type"], "connection_ack");

    by_payload.send_json(json!({ "id": "a", "type": "subscribe", "payload": { "query": NEW_MESSAGE_SUBSCRIPTION, "variables": { "c": "room" } } })).await;
    by_header.send_json(json!({ "id": "b", "type": "subscribe", "payload": { "query": NEW_MESSAGE_SUBSCRIPTION, "variables": { "c": channel_id } } })).await;
    app.wait_for_subscriptions(2).await;

    let mut sent = Vec::new();
    for i in 0..20 {
        let token = if i % 2 == 0 { &alice } else { &bob };
        sent.push(app.send(token, "room", &format!("message {i}")).await);
    }
    for (ws, id, identifier) in [
        (&mut by_payload, "a", "room"),
        (&mut by_header, "b", channel_id.as_str()),
    ] {
        for (i, message_id) in sent.iter().enumerate() {
            let next = ws.recv_json().await;
            assert_eq!(next["type"], "next");
            assert_eq!(next["id"], id);
            let event = &next["payload"]["data"]["onNewChatMessage"];
            assert_eq!(event["channelIdentifier"], identifier);
            assert_eq!(event["message"]["id"], message_id.as_str());
            assert_eq!(event["message"]["message"], format!("message {i}"));
            assert_eq!(event["message"]["type"], "str");
            assert_eq!(
                event["message"]["owner"]["username"],
                if i % 2 == 0 { "alice" } else { "bob" }
            );
        }
    }
}

#[tokio::test]
async fn a_refused_subscription_gets_error_and_the_connection_stays_usable() {
    let app = spawn_app().await;
    let alice = app.signed_up("alice").await;
    let eve = app.signed_up("eve").await;
    app.channel(&alice, "private", &[]).await;

    let mut ws = app.transport_ws(&eve).await;
    ws.send_json(json!({ "id": "1", "type": "subscribe", "payload": { "query": NEW_MESSAGE_SUBSCRIPTION, "variables": { "c": "private" } } })).await;
    let error = ws.recv_json().await;
    assert_eq!(
        (error["type"].as_str(), error["id"].as_str()),
        (Some("error"), Some("1"))
    );
    assert_text(&error, "/payload/0/message", "Channel not found");

    ws.send_json(json!({ "id": "2", "type": "subscribe", "payload": { "query": NEW_MESSAGE_SUBSCRIPTION, "variables": { "c": "nowhere" } } })).await;
    let error = ws.recv_json().await;
    assert_text(&error, "/payload/0/message", "Channel not found");

    ws.send_json(json!({ "id": "3", "type": "subscribe", "payload": { "query": "subscription { noSuchField }" } })).await;
    assert_eq!(ws.recv_json().await["type"], "error");

    // The same id may be reused once its operation ended; the connection still works.
    ws.send_json(json!({ "id": "1", "type": "subscribe", "payload": { "query": NEW_MESSAGE_SUBSCRIPTION, "variables": { "c": "town-square" } } })).await;
    app.wait_for_subscriptions(1).await;
    app.send(&alice, "town-square", "hello eve").await;
    let next = ws.recv_json().await;
    assert_eq!(
        next["payload"]["data"]["onNewChatMessage"]["message"]["message"],
        "hello eve"
    );
}

#[tokio::test]
async fn an_anonymous_connection_is_acknowledged_but_cannot_subscribe() {
    let app = spawn_app().await;
    let mut ws = app.ws("graphql-transport-ws").await;
    ws.send_json(json!({ "type": "connection_init", "payload": {} }))
        .await;
    assert_eq!(ws.recv_json().await["type"], "connection_ack");
    ws.send_json(json!({ "id": "1", "type": "subscribe", "payload": { "query": NEW_MESSAGE_SUBSCRIPTION, "variables": { "c": "town-square" } } })).await;
    let error = ws.recv_json().await;
    assert_eq!(error["type"], "error");
    assert_eq!(
        error["payload"][0]["message"],
        "You do not have permission to perform this action"
    );
}

#[tokio::test]
async fn every_protocol_violation_closes_with_its_code() {
    let app =
        spawn_app_with(|c| c.gateway.connection_init_timeout = Duration::from_millis(300)).await;
    let alice = app.signed_up("alice").await;
    let subscribe = json!({ "id": "1", "type": "subscribe", "payload": { "query": NEW_MESSAGE_SUBSCRIPTION, "variables": { "c": "town-square" } } });

    let mut ws = app.ws("graphql-transport-ws").await;
    assert_eq!(
        ws.expect_close().await,
        (4408, "Connection initialisation timeout".into())
    );

    let mut ws = app.ws("graphql-transport-ws").await;
    ws.send_text("{ not json").await;
    assert_eq!(ws.expect_close().await.0, 4400);

    let mut ws = app.ws("graphql-transport-ws").await;
    ws.send_json(json!({ "type": "connection_init" })).await;
    ws.recv_json().await;
    ws.send_json(json!({ "type": "no_such_type" })).await;
    assert_eq!(ws.expect_close().await.0, 4400);

    let mut ws = app.ws("graphql-transport-ws").await;
    ws.send_json(json!({ "type": "connection_init" })).await;
    ws.recv_json().await;
    ws.send_json(json!({ "type": "subscribe", "payload": { "query": "{ __typename }" } }))
        .await;
    assert_eq!(ws.expect_close().await.0, 4400, "subscribe without id");

    let mut ws = app.ws("graphql-transport-ws").await;
    ws.send_json(subscribe.clone()).await;
    assert_eq!(ws.expect_close().await, (4401, "Unauthorized".into()));

    for payload in [
        json!({ "Authorization": "JWT garbage" }),
        json!({ "token": "garbage" }),
        json!({ "token": jwt("alice", -5, 100, JWT_SECRET) }),
        json!({ "Authorization": "Basic x" }),
    ] {
        let mut ws = app.ws("graphql-transport-ws").await;
        ws.send_json(json!({ "type": "connection_init", "payload": payload }))
            .await;
        assert_eq!(ws.expect_close().await.0, 4403, "{payload}");
    }
    let mut ws = app
        .ws_with(Some("graphql-transport-ws"), Some("JWT garbage"))
        .await;
    ws.send_json(json!({ "type": "connection_init" })).await;
    assert_eq!(
        ws.expect_close().await.0,
        4403,
        "bad token on the upgrade request"
    );

    let mut ws = app.transport_ws(&alice).await;
    ws.send_json(subscribe.clone()).await;
    ws.send_json(subscribe.clone()).await;
    assert_eq!(
        ws.expect_close().await,
        (4409, "Subscriber for 1 already exists".into())
    );

    let mut ws = app.transport_ws(&alice).await;
    ws.send_json(json!({ "type": "connection_init" })).await;
    assert_eq!(
        ws.expect_close().await,
        (4429, "Too many initialisation requests".into())
    );

    // Like the graphql-ws reference server: finish the handshake without a subprotocol, then
    // close with 4406. (Strict clients, browsers among them, fail the handshake instead.)
    assert_eq!(
        raw_upgrade_then_close_code(app.addr, "some-other-protocol").await,
        4406
    );
}

/// Upgrades with a hand-written request and returns the code of the server's close frame.
async fn raw_upgrade_then_close_code(addr: std::net::SocketAddr, protocol: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET /ws/graphql/ HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: {protocol}\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(
            n > 0,
            "connection ended before a close frame: {}",
            String::from_utf8_lossy(&received)
        );
        received.extend_from_slice(&buf[..n]);
        let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&received[..end]).to_string();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert!(
            !head.to_ascii_lowercase().contains("sec-websocket-protocol"),
            "no subprotocol chosen: {head}"
        );
        let frame = &received[end + 4..];
        if frame.len() >= 4 {
            assert_eq!(frame[0], 0x88, "a close frame");
            return u16::from_be_bytes([frame[2], frame[3]]);
        }
    }
}

#[tokio::test]
async fn ping_and_pong_work_both_ways() {
    let app = spawn_app_with(|c| c.gateway.keepalive_interval = Duration::from_millis(200)).await;
    let alice = app.signed_up("alice").await;
    let mut ws = app.transport_ws(&alice).await;
    ws.send_json(json!({ "type": "ping", "payload": { "n": 1 } }))
        .await;
    let pong = ws.recv_json().await;
    assert_eq!(pong, json!({ "type": "pong", "payload": { "n": 1 } }));
    assert_eq!(
        ws.recv_json().await["type"],
        "ping",
        "the server pings on its keep-alive interval"
    );
    ws.send_json(json!({ "type": "pong" })).await;
    assert_eq!(
        ws.recv_json().await["type"],
        "ping",
        "and keeps the connection after our pong"
    );
}

#[tokio::test]
async fn complete_from_the_client_stops_delivery_and_queries_complete_by_themselves() {
    let app = spawn_app().await;
    let alice = app.signed_up("alice").await;
    let mut ws = app.transport_ws(&alice).await;
    ws.send_json(json!({ "id": "s", "type": "subscribe", "payload": { "query": NEW_MESSAGE_SUBSCRIPTION, "variables": { "c": "town-square" } } })).await;
    app.wait_for_subscriptions(1).await;
    app.send(&alice, "town-square", "one").await;
    assert_eq!(ws.recv_json().await["type"], "next");
    ws.send_json(json!({ "id": "s", "type": "complete" })).await;
    app.wait_for_subscriptions(0).await;
    app.send(&alice, "town-square", "two").await;

    // A query over the socket answers next then complete; nothing of "two" arrives before it.
    ws.send_json(
        json!({ "id": "q", "type": "subscribe", "payload": { "query": "{ userList { count } }" } }),
    )
    .await;
    let next = ws.recv_json().await;
    assert_eq!(
        (next["id"].as_str(), next["type"].as_str()),
        (Some("q"), Some("next"))
    );
    assert_eq!(next["payload"]["data"]["userList"]["count"], 1);
    assert_eq!(
        ws.recv_json().await,
        json!({ "id": "q", "type": "complete" })
    );
    ws.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn subscriptions_per_connection_are_limited_with_an_error() {
    let app = spawn_app_with(|c| c.gateway.max_subscriptions_per_connection = 2).await;
    let alice = app.signed_up("alice").await;
    let mut ws = app.transport_ws(&alice).await;
    for id in ["1", "2", "3"] {
        ws.send_json(json!({ "id": id, "type": "subscribe", "payload": { "query": NEW_MESSAGE_SUBSCRIPTION, "variables": { "c": "town-square" } } })).await;
    }
    let error = ws.recv_json().await;
    assert_eq!(
        (error["id"].as_str(), error["type"].as_str()),
        (Some("3"), Some("error"))
    );
    assert_text(&error, "/payload/0/message", "limit is 2");
    app.wait_for_subscriptions(2).await;
    app.send(&alice, "town-square", "still open").await;
    let mut ids: Vec<_> = [ws.recv_json().await, ws.recv_json().await]
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    assert_eq!(ids, ["1", "2"]);
}

const RESUME_SUBSCRIPTION: &str = "subscription($c: String!, $after: String) {
  onNewChatMessage(channelIdentifier: $c, afterMessageId: $after) { message { id message } }
}";

fn message_text(next: &serde_json::Value) -> &str {
    next["payload"]["data"]["onNewChatMessage"]["message"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("a message: {next}"))
}

/// A subscriber that lost its connection resumes from the last message it saw: it gets what it
/// missed, in order, then live messages, with nothing twice.
#[tokio::test]
async fn a_dropped_subscriber_resumes_from_the_last_message_it_saw() {
    let app = spawn_app().await;
    let alice = app.signed_up("alice").await;
    app.channel(&alice, "resumable", &[]).await;
    let subscribe = |after: Option<&str>| json!({ "id": "r", "type": "subscribe", "payload": { "query": RESUME_SUBSCRIPTION, "variables": { "c": "resumable", "after": after } } });

    let mut ws = app.transport_ws(&alice).await;
    ws.send_json(subscribe(None)).await;
    app.wait_for_subscriptions(1).await;
    let first = app.send(&alice, "resumable", "m1").await;
    assert_eq!(message_text(&ws.recv_json().await), "m1");
    drop(ws);
    app.wait_for_subscriptions(0).await;

    app.send(&alice, "resumable", "m2").await;
    app.send(&alice, "resumable", "m3").await;

    let mut ws = app.transport_ws(&alice).await;
    ws.send_json(subscribe(Some(&first))).await;
    assert_eq!(message_text(&ws.recv_json().await), "m2");
    assert_eq!(message_text(&ws.recv_json().await), "m3");
    app.wait_for_subscriptions(1).await;
    app.send(&alice, "resumable", "m4").await;
    assert_eq!(message_text(&ws.recv_json().await), "m4");
    ws.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn resuming_from_an_unknown_message_or_too_far_back_is_an_error() {
    let app = spawn_app_with(|c| c.api.max_resume_messages = 2).await;
    let alice = app.signed_up("alice").await;
    app.channel(&alice, "resumable", &[]).await;
    let first = app.send(&alice, "resumable", "m1").await;
    for text in ["m2", "m3", "m4"] {
        app.send(&alice, "resumable", text).await;
    }
    let mut ws = app.transport_ws(&alice).await;
    for (id, after, expected) in [
        ("a", "no-such-message", "Message not found"),
        ("b", first.as_str(), "getMessageList"),
    ] {
        ws.send_json(json!({ "id": id, "type": "subscribe", "payload": { "query": RESUME_SUBSCRIPTION, "variables": { "c": "resumable", "after": after } } }))
            .await;
        let error = ws.recv_json().await;
        assert_eq!(
            (error["type"].as_str(), error["id"].as_str()),
            (Some("error"), Some(id))
        );
        assert_text(&error, "/payload/0/message", expected);
    }
}

#[tokio::test]
async fn resuming_past_the_replay_byte_bound_is_an_error() {
    let app = spawn_app_with(|c| c.api.max_resume_bytes = 10_000).await;
    let alice = app.signed_up("alice").await;
    app.channel(&alice, "resumable", &[]).await;
    let first = app.send(&alice, "resumable", "m1").await;
    for _ in 0..3 {
        app.send(&alice, "resumable", &"w".repeat(4000)).await;
    }
    for protocol in ["graphql-transport-ws", "graphql-ws"] {
        let mut ws = app.ws(protocol).await;
        ws.send_json(json!({ "type": "connection_init", "payload": { "Authorization": format!("JWT {alice}") } })).await;
        assert_eq!(ws.recv_data().await["type"], "connection_ack");
        let start = if protocol == "graphql-ws" {
            "start"
        } else {
            "subscribe"
        };
        ws.send_json(json!({ "id": "r", "type": start, "payload": { "query": RESUME_SUBSCRIPTION, "variables": { "c": "resumable", "after": first } } }))
            .await;
        let error = ws.recv_data().await;
        assert_eq!(error["type"], "error", "{error}");
        let message = error["payload"]
            .pointer("/0/message")
            .or(error["payload"].pointer("/message"))
            .and_then(|m| m.as_str())
            .unwrap_or_default()
            .to_owned();
        assert!(
            message.contains("10000 bytes") && message.contains("getMessageList"),
            "{error}"
        );
    }
}

#[tokio::test]
async fn shutting_down_closes_live_sessions_with_going_away() {
    let mut app = spawn_app().await;
    let alice = app.signed_up("alice").await;
    let mut modern = app.transport_ws(&alice).await;
    let mut legacy = app.ws("graphql-ws").await;
    app.stop().await;
    assert_eq!(
        modern.expect_close().await,
        (1001, "Server shutting down".into())
    );
    assert_eq!(legacy.expect_close().await.0, 1001);
}

#[tokio::test]
async fn a_subscription_rooted_in_a_fragment_is_refused_with_an_error() {
    let app = spawn_app().await;
    let alice = app.signed_up("alice").await;
    for (protocol, query) in [
        ("graphql-transport-ws", "subscription { ...F } fragment F on Subscription { onNewChatMessage(channelIdentifier: \"town-square\") { channelIdentifier } }"),
        ("graphql-ws", "subscription { ... on Subscription { onNewChatMessage(channelIdentifier: \"town-square\") { channelIdentifier } } }"),
    ] {
        let mut ws = app.ws(protocol).await;
        ws.send_json(json!({ "type": "connection_init", "payload": { "Authorization": format!("JWT {alice}") } }))
            .await;
        assert_eq!(ws.recv_data().await["type"], "connection_ack");
        let start = if protocol == "graphql-ws" { "start" } else { "subscribe" };
        ws.send_json(json!({ "id": "f", "type": start, "payload": { "query": query } }))
            .await;
        let error = ws.recv_data().await;
        assert_eq!((error["type"].as_str(), error["id"].as_str()), (Some("error"), Some("f")), "{error}");
        assert!(error.to_string().contains("not through a fragment"), "{error}");
    }
}
