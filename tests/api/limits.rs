//! Every configured limit answers with a clear error or close code, and a slow consumer is
//! disconnected without holding anyone else back.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{
    assert_text, raw_client_frame, spawn_app, spawn_app_with, WsClient, NEW_MESSAGE_SUBSCRIPTION,
};

#[tokio::test]
async fn oversized_bodies_and_costly_queries_are_refused() {
    let app = spawn_app_with(|c| {
        c.api.max_body_bytes = 2048;
        c.api.max_query_depth = 4;
        c.api.max_query_complexity = 100;
    })
    .await;
    let big = app
        .http
        .post(app.url("/graphql/"))
        .json(&json!({ "query": "x".repeat(4096) }))
        .send()
        .await
        .unwrap();
    assert_eq!(big.status(), 413);
    let body: Value = big.json().await.unwrap();
    assert_text(&body, "/errors/0/message", "2048 bytes");

    let alice = app.signed_up("alice").await;
    let deep = app
        .graphql(
            "{ channelList { data { lastMessage { owner { id } } } } }",
            json!({}),
            Some(&alice),
        )
        .await;
    assert_text(&deep, "/errors/0/message", "nested too deep");
    let wide = app
        .graphql(
            "{ userList(page: { pageSize: 20 }) { count pageCount data { id username email isStaff } } }",
            json!({}),
            Some(&alice),
        )
        .await;
    assert_text(&wide, "/errors/0/message", "too complex");
}

#[tokio::test]
async fn oversized_and_malformed_frames_close_with_the_standard_codes() {
    let app = spawn_app_with(|c| {
        c.gateway.max_frame_bytes = 1024;
        c.gateway.max_message_bytes = 2048;
    })
    .await;

    // (subprotocol, frames the client sends, close code, why): 0x01 text, 0x02 binary,
    // 0x00 continuation; 0x80 marks the final frame, 0x40 a reserved bit.
    let oversized_frame = format!(
        "{{\"type\":\"connection_init\",\"payload\":{{\"pad\":\"{}\"}}}}",
        "x".repeat(1100)
    );
    let cases: Vec<(&str, Vec<Vec<u8>>, u16, &str)> = vec![
        (
            "graphql-transport-ws",
            vec![raw_client_frame(0x81, oversized_frame.as_bytes())],
            1009,
            "frame over the limit",
        ),
        (
            "graphql-transport-ws",
            // Each 900-byte fragment fits; the 2700-byte message does not.
            vec![
                raw_client_frame(0x01, &[b' '; 900]),
                raw_client_frame(0x00, &[b' '; 900]),
                raw_client_frame(0x80, &[b' '; 900]),
            ],
            1009,
            "message over the limit",
        ),
        (
            "graphql-transport-ws",
            vec![raw_client_frame(0x81, &[0xff, 0xfe, 0xfd])],
            1007,
            "text that is not UTF-8",
        ),
        (
            "graphql-transport-ws",
            vec![raw_client_frame(0xC1, b"{}")],
            1002,
            "reserved bit set",
        ),
        (
            "graphql-transport-ws",
            vec![raw_client_frame(0x88, &999u16.to_be_bytes())],
            1002,
            "a close code no peer may send (999)",
        ),
        (
            "graphql-ws",
            vec![raw_client_frame(0x88, &1005u16.to_be_bytes())],
            1002,
            "the reserved 'no status' code 1005 in a frame",
        ),
        (
            "graphql-ws",
            vec![raw_client_frame(0x88, &[0x03])],
            1002,
            "a one-byte close payload",
        ),
        (
            "graphql-transport-ws",
            vec![raw_client_frame(0x88, &[0x0f, 0xa0, 0xff, 0xfe])],
            1007,
            "a close reason that is not UTF-8",
        ),
        (
            "graphql-transport-ws",
            vec![raw_client_frame(0x88, &4000u16.to_be_bytes())],
            4000,
            "an application's close code, echoed",
        ),
        (
            "graphql-transport-ws",
            vec![raw_client_frame(0x80, b"{}")],
            1002,
            "continuation without a start",
        ),
        (
            "graphql-transport-ws",
            vec![vec![0x81, 0x02, b'{', b'}']],
            1002,
            "an unmasked client frame",
        ),
        (
            "graphql-transport-ws",
            vec![raw_client_frame(0x09, b"ping")],
            1002,
            "a fragmented control frame",
        ),
        (
            "graphql-transport-ws",
            vec![raw_client_frame(0x83, b"{}")],
            1002,
            "an unknown opcode",
        ),
        (
            "graphql-transport-ws",
            vec![raw_client_frame(0x82, b"{}")],
            4400,
            "binary message on graphql-transport-ws",
        ),
        (
            "graphql-ws",
            vec![raw_client_frame(0x82, b"{}")],
            1003,
            "binary message on graphql-ws",
        ),
    ];
    for (protocol, frames, code, why) in cases {
        let mut ws = app.ws(protocol).await;
        for frame in frames {
            ws.send_raw(&frame).await;
        }
        assert_eq!(ws.expect_close().await.0, code, "{why}");
    }

    // Fragments within the limits are reassembled.
    let mut ws = app.ws("graphql-transport-ws").await;
    ws.send_raw(&raw_client_frame(0x01, br#"{"type":"conn"#))
        .await;
    ws.send_raw(&raw_client_frame(0x80, br#"ection_init"}"#))
        .await;
    assert_eq!(ws.recv_json().await["type"], "connection_ack");

    // WebSocket-level ping frames are answered with pong frames.
    let mut ws = app.ws("graphql-transport-ws").await;
    ws.send_raw(&raw_client_frame(0x89, b"are you there")).await;
    let pong = tokio::time::timeout(Duration::from_secs(5), ws.stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(pong, Message::Pong(b"are you there".to_vec().into()));
}

/// A subscriber that stops reading is closed with 1013 once its queue is full. What it did
/// receive is an unbroken prefix of the channel, and a reading subscriber gets everything.
#[tokio::test]
async fn a_slow_consumer_is_disconnected_and_does_not_hold_back_others() {
    let app = spawn_app_with(|c| {
        c.gateway.send_queue_limit = 4;
        c.gateway.write_timeout = Duration::from_secs(60);
        // This test floods a channel faster than one user may send.
        c.api.send_rate_per_user = mmsub_api::throttle::RateLimit::OFF;
    })
    .await;
    let alice = app.signed_up("alice").await;
    let subscribe = json!({ "id": "1", "type": "subscribe", "payload": { "query": NEW_MESSAGE_SUBSCRIPTION, "variables": { "c": "town-square" } } });

    // The slow client: a tiny receive buffer, and it will not read until the end.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(app.addr).await.unwrap();
    let mut request = format!("ws://{}/ws/graphql/", app.addr)
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("graphql-transport-ws"),
    );
    let (stream, _) =
        tokio_tungstenite::client_async(request, tokio_tungstenite::MaybeTlsStream::Plain(tcp))
            .await
            .unwrap();
    let mut slow = WsClient {
        stream,
        negotiated: None,
    };
    slow.send_json(json!({ "type": "connection_init", "payload": { "token": alice } }))
        .await;
    assert_eq!(slow.recv_json().await["type"], "connection_ack");
    slow.send_json(subscribe.clone()).await;

    let mut fast = app.transport_ws(&alice).await;
    fast.send_json(subscribe).await;
    app.wait_for_subscriptions(2).await;

    let total = 400;
    let padding = "p".repeat(16_000);
    let reader = tokio::spawn(async move {
        let mut seen = Vec::new();
        for _ in 0..total {
            let next = fast.recv_json().await;
            seen.push(
                next["payload"]["data"]["onNewChatMessage"]["message"]["message"]
                    .as_str()
                    .unwrap()[..8]
                    .to_owned(),
            );
        }
        seen
    });
    for i in 0..total {
        app.send(&alice, "town-square", &format!("{i:08}{padding}"))
            .await;
    }
    let fast_seen = reader.await.unwrap();
    assert_eq!(
        fast_seen,
        (0..total).map(|i| format!("{i:08}")).collect::<Vec<_>>(),
        "the reading subscriber got every message in order"
    );

    let mut received = 0;
    let code = loop {
        match tokio::time::timeout(Duration::from_secs(10), slow.stream.next())
            .await
            .expect("the slow client hears back")
        {
            Some(Ok(Message::Text(text))) => {
                let next: Value = serde_json::from_str(&text).unwrap();
                let message = next["payload"]["data"]["onNewChatMessage"]["message"]["message"]
                    .as_str()
                    .unwrap();
                assert_eq!(
                    &message[..8],
                    format!("{received:08}"),
                    "no gap before the close"
                );
                received += 1;
            }
            Some(Ok(Message::Close(Some(frame)))) => break u16::from(frame.code),
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(code, 1013);
    assert!(
        received < total,
        "the slow consumer was cut off ({received} of {total})"
    );
    let scrape = app.metrics().await;
    assert_eq!(
        scrape.value("mmsub_ws_closes_total", &[("code", "1013")]),
        1.0,
        "one slow-consumer close, counted once"
    );
    // The reader's frames, and the slow one's: what it received, and what its queue held when
    // it was closed (at most its send queue limit).
    let deliveries = scrape.value("mmsub_deliveries_total", &[]);
    let (least, most) = (total + received, total + received + 4);
    assert!(
        (f64::from(least)..=f64::from(most)).contains(&deliveries),
        "{deliveries} deliveries, not {least}–{most}"
    );
}

#[tokio::test]
async fn connections_beyond_the_limit_get_503() {
    let app = spawn_app_with(|c| c.gateway.max_connections = 2).await;
    let _a = app.ws("graphql-transport-ws").await;
    let _b = app.ws("graphql-transport-ws").await;
    let request = format!("ws://{}/ws/graphql/", app.addr)
        .into_client_request()
        .unwrap();
    match tokio_tungstenite::connect_async(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503);
        }
        other => panic!("expected HTTP 503, got {other:?}"),
    }
    drop(_a);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _c = app.ws("graphql-transport-ws").await;
}

#[tokio::test]
async fn plain_http_to_the_websocket_endpoint_is_told_to_upgrade() {
    let app = spawn_app().await;
    let response = app.http.get(app.url("/ws/graphql/")).send().await.unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_text(&body, "/errors/0/message", "Upgrade");
}

/// Subscribes beyond the admission limit wait their turn: every one of a burst becomes live
/// and receives the next message, even when only one admission may run at a time.
#[tokio::test]
async fn a_burst_beyond_the_admission_limit_is_admitted_in_turn() {
    let app = spawn_app_with(|c| c.gateway.max_concurrent_admissions = 1).await;
    let alice = app.signed_up("alice").await;
    let mut clients = Vec::new();
    for _ in 0..4 {
        let mut ws = app.transport_ws(&alice).await;
        for id in ["1", "2", "3"] {
            ws.send_json(json!({ "id": id, "type": "subscribe", "payload": { "query": NEW_MESSAGE_SUBSCRIPTION, "variables": { "c": "town-square" } } })).await;
        }
        clients.push(ws);
    }
    app.wait_for_subscriptions(12).await;
    app.send(&alice, "town-square", "to all twelve").await;
    for ws in &mut clients {
        let mut ids: Vec<String> = Vec::new();
        for _ in 0..3 {
            let next = ws.recv_json().await;
            assert_eq!(next["type"], "next", "{next}");
            ids.push(next["id"].as_str().unwrap().to_owned());
        }
        ids.sort();
        assert_eq!(ids, ["1", "2", "3"]);
    }
}

/// GraphiQL's introspection query (graphql-js `getIntrospectionQuery()`, with descriptions).
pub const INTROSPECTION_QUERY: &str = r#"
query IntrospectionQuery {
  __schema {
    queryType { name }
    mutationType { name }
    subscriptionType { name }
    types { ...FullType }
    directives { name description locations args { ...InputValue } }
  }
}
fragment FullType on __Type {
  kind name description
  fields(includeDeprecated: true) {
    name description
    args { ...InputValue }
    type { ...TypeRef }
    isDeprecated deprecationReason
  }
  inputFields { ...InputValue }
  interfaces { ...TypeRef }
  enumValues(includeDeprecated: true) { name description isDeprecated deprecationReason }
  possibleTypes { ...TypeRef }
}
fragment InputValue on __InputValue { name description type { ...TypeRef } defaultValue }
fragment TypeRef on __Type {
  kind name
  ofType { kind name ofType { kind name ofType { kind name ofType { kind name
    ofType { kind name ofType { kind name ofType { kind name } } } } } } }
}"#;

#[tokio::test]
async fn the_default_limits_let_graphiql_introspect_the_schema() {
    let app = spawn_app().await;
    let answer = app.graphql(INTROSPECTION_QUERY, json!({}), None).await;
    assert!(answer.get("errors").is_none(), "{answer}");
    assert_eq!(answer["data"]["__schema"]["queryType"]["name"], "Query");
}

/// Sends `count` messages of `text` to `channel`, 50 at a time (they share commits).
async fn send_many(
    app: &crate::helpers::TestApp,
    token: &str,
    channel: &str,
    count: usize,
    text: &str,
) {
    for batch in 0..count.div_ceil(50) {
        let texts: Vec<String> = (batch * 50..((batch + 1) * 50).min(count))
            .map(|n| format!("{n} {text}"))
            .collect();
        futures::future::join_all(texts.iter().map(|t| app.send(token, channel, t))).await;
    }
}

#[tokio::test]
async fn large_pages_work_as_in_the_original_within_the_byte_ceiling() {
    // 1,000 messages from one user: more than one user may send in a minute.
    let app =
        spawn_app_with(|c| c.api.send_rate_per_user = mmsub_api::throttle::RateLimit::OFF).await;
    let alice = app.signed_up("alice").await;
    app.channel(&alice, "archive", &[]).await;
    // 1,000 posts of 16 KB: the page ceiling and the answer's byte ceiling both let it through.
    send_many(&app, &alice, "archive", 1000, &"x".repeat(16_000)).await;
    let page = app
        .graphql(
            "{ getMessageList(channelIdentifier: \"archive\", page: { pageSize: 1000 }) { data { id message owner { username } } hasPrevious } }",
            json!({}),
            Some(&alice),
        )
        .await;
    assert!(page.get("errors").is_none(), "{}", &page.to_string()[..300]);
    let posts = page["data"]["getMessageList"]["data"].as_array().unwrap();
    assert_eq!(posts.len(), 1000);
    assert!(posts[0]["message"].as_str().unwrap().starts_with("0 "));
    assert!(posts[999]["message"].as_str().unwrap().starts_with("999 "));
    let users = app
        .graphql(
            "{ userList(page: { pageSize: 1000 }) { count data { username } } }",
            json!({}),
            Some(&alice),
        )
        .await;
    assert_eq!(users["data"]["userList"]["count"], 1, "{users}");
}

#[tokio::test]
async fn an_answer_past_the_byte_ceiling_is_refused_however_it_is_split() {
    let app = spawn_app_with(|c| c.api.max_response_bytes = 100_000).await;
    let alice = app.signed_up("alice").await;
    app.channel(&alice, "big", &[]).await;
    send_many(&app, &alice, "big", 10, &"y".repeat(16_000)).await;
    let one_page = app
        .graphql(
            "{ getMessageList(channelIdentifier: \"big\") { data { message } } }",
            json!({}),
            Some(&alice),
        )
        .await;
    assert_text(
        &one_page,
        "/errors/0/message",
        "larger than the limit of 100000 bytes",
    );
    assert!(one_page["data"]["getMessageList"].is_null(), "{one_page}");
    // Four pages of 4 posts each fit alone but not together: the later ones are refused.
    let split = app
        .graphql(
            "query { a: getMessageList(channelIdentifier: \"big\", page: { pageSize: 4 }) { data { message } }
                     b: getMessageList(channelIdentifier: \"big\", page: { pageSize: 4 }) { data { message } } }",
            json!({}),
            Some(&alice),
        )
        .await;
    let served = ["a", "b"]
        .iter()
        .filter(|k| split["data"][**k].is_object())
        .count();
    assert_eq!(served, 1, "one page fits, the second passes the ceiling");
    assert_text(&split, "/errors/0/message", "larger than the limit");
    // The channel list with its last messages counts too.
    let small = spawn_app_with(|c| c.api.max_response_bytes = 1_000).await;
    let bob = small.signed_up("bob").await;
    small.channel(&bob, "c1", &[]).await;
    small.send(&bob, "c1", &"z".repeat(2000)).await;
    let list = small
        .graphql(
            "{ channelList { data { lastMessage { message } } } }",
            json!({}),
            Some(&bob),
        )
        .await;
    assert_text(&list, "/errors/0/message", "larger than the limit");
}

#[tokio::test]
async fn channel_create_takes_a_bounded_member_list() {
    let app = spawn_app_with(|c| c.api.max_channel_members = 3).await;
    let alice = app.signed_up("alice").await;
    let created = app
        .channel_create(&alice, "crowd", &["a", "b", "c", "d"])
        .await;
    assert_eq!(created["statusCode"], 400, "{created}");
    assert_text(&created, "/message", "at most 3");
}
