//! `/metrics`: served on its own port, parsed by an independent parser, and each counted event
//! moves its series by exactly what happened.

use std::time::Duration;

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn metrics_are_served_on_their_own_port_and_on_the_main_one_only_when_asked() {
    let app = spawn_app().await;
    let main = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(main.status(), 404, "not on the main port unless configured");

    let own = format!("http://{}", app.metrics_addr);
    let scrape = app.http.get(format!("{own}/metrics")).send().await.unwrap();
    assert_eq!(scrape.status(), 200);
    assert_eq!(
        scrape.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let other = app
        .http
        .get(format!("{own}/graphql/"))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404, "only /metrics on the metrics port");
    let post = app
        .http
        .post(format!("{own}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 405);

    let scrape = app.metrics().await;
    assert!(scrape.value("mmsub_process_open_fds", &[]) >= 3.0);
    assert!(scrape.value("mmsub_process_resident_memory_bytes", &[]) > 1e6);
    assert!(scrape.value("mmsub_process_cpu_seconds_total", &[]) > 0.0);
    assert_eq!(
        scrape.value("mmsub_http_requests_total", &[("route", "other")]),
        1.0,
        "the main port's /metrics, a 404 there"
    );

    let shared = spawn_app_with(|c| c.metrics.on_main_port = true).await;
    let main = shared
        .http
        .get(shared.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(main.status(), 200);
    assert!(main
        .text()
        .await
        .unwrap()
        .contains("mmsub_deliveries_total 0"));
}

#[tokio::test]
async fn a_message_is_counted_from_its_mutation_to_each_subscriber() {
    let app = spawn_app().await;
    let alice = app.signed_up("alice").await;
    let subscribe = |id: &str, kind: &str| json!({ "id": id, "type": kind, "payload": { "query": NEW_MESSAGE_SUBSCRIPTION, "variables": { "c": "town-square" } } });
    let mut modern = app.transport_ws(&alice).await;
    modern.send_json(subscribe("1", "subscribe")).await;
    let mut legacy = app.ws("graphql-ws").await;
    legacy.send_json(json!({ "type": "connection_init", "payload": { "headers": { "Authorization": format!("JWT {alice}") } } })).await;
    assert_eq!(legacy.recv_json().await["type"], "connection_ack");
    legacy.send_json(subscribe("1", "start")).await;
    app.wait_for_subscriptions(2).await;

    let before = app.metrics().await;
    let sent = 3;
    for i in 0..sent {
        app.send(&alice, "town-square", &format!("hello {i}")).await;
    }
    for _ in 0..sent {
        assert_eq!(modern.recv_json().await["type"], "next");
        let data = loop {
            let message = legacy.recv_json().await;
            // The legacy protocol's keep-alive, sent once after the ack.
            if message["type"] != "ka" {
                break message;
            }
        };
        assert_eq!(data["type"], "data");
    }
    let after = app.metrics().await;
    let moved = |name: &str, labels: &[(&str, &str)]| {
        after.value(name, labels) - before.value(name, labels)
    };
    let send = [("operation", "textMessageSend")];
    assert_eq!(moved("mmsub_graphql_requests_total", &send), 3.0);
    assert_eq!(
        after.histogram_count("mmsub_graphql_request_duration_seconds", &send)
            - before.histogram_count("mmsub_graphql_request_duration_seconds", &send),
        3
    );
    assert_eq!(
        moved("mmsub_http_requests_total", &[("route", "/graphql/")]),
        3.0
    );
    assert_eq!(
        moved("mmsub_deliveries_total", &[]),
        6.0,
        "3 messages × 2 subscribers"
    );
    assert_eq!(
        after.histogram_count("mmsub_delivery_latency_seconds", &[])
            - before.histogram_count("mmsub_delivery_latency_seconds", &[]),
        6
    );
    for protocol in ["graphql-transport-ws", "graphql-ws"] {
        let labels = [("protocol", protocol)];
        assert_eq!(
            after.value("mmsub_ws_connections", &labels),
            1.0,
            "{protocol}"
        );
        assert_eq!(
            after.value("mmsub_ws_subscriptions", &labels),
            1.0,
            "{protocol}"
        );
    }
    assert_eq!(
        after.value("mmsub_subscription_groups", &[]),
        1.0,
        "one selection, one group"
    );

    // Closing gives the gauges back.
    drop(modern);
    drop(legacy);
    for _ in 0..500 {
        let now = app.metrics().await;
        if now.value("mmsub_ws_connections", &[("protocol", "graphql-ws")]) == 0.0
            && now.value(
                "mmsub_ws_connections",
                &[("protocol", "graphql-transport-ws")],
            ) == 0.0
        {
            assert_eq!(
                now.value("mmsub_ws_subscriptions", &[("protocol", "graphql-ws")]),
                0.0
            );
            assert_eq!(now.value("mmsub_subscription_groups", &[]), 0.0);
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the connection gauges did not go back to 0");
}

#[tokio::test]
async fn failed_requests_are_counted_by_kind() {
    let app = spawn_app_with(|c| c.api.max_body_bytes = 1000).await;
    let post = |body: &'static str, content_type: &'static str| {
        app.http
            .post(app.url("/graphql/"))
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let before = app.metrics().await;
    assert_eq!(
        post("{not json", "application/json")
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(post("{}", "text/plain").await.unwrap().status(), 415);
    let big = app
        .http
        .post(app.url("/graphql/"))
        .header("content-type", "application/json")
        .body("x".repeat(2000))
        .send()
        .await
        .unwrap();
    assert_eq!(big.status(), 413);
    let unknown = app.graphql("{ noSuchField }", json!({}), None).await;
    assert!(unknown["errors"].is_array(), "{unknown}");
    let after = app.metrics().await;
    for (kind, count) in [
        ("bad_body", 1.0),
        ("media_type", 1.0),
        ("body_too_large", 1.0),
        ("graphql", 1.0),
        ("refused", 0.0),
    ] {
        let labels = [("kind", kind)];
        assert_eq!(
            after.value("mmsub_graphql_errors_total", &labels)
                - before.value("mmsub_graphql_errors_total", &labels),
            count,
            "{kind}"
        );
    }
    assert_eq!(
        after.value("mmsub_graphql_requests_total", &[("operation", "other")])
            - before.value("mmsub_graphql_requests_total", &[("operation", "other")]),
        1.0,
        "a field outside the contract is `other`"
    );
}

#[tokio::test]
async fn the_metrics_listener_closes_connections_over_its_cap_and_silent_ones_in_time() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app_with(|c| {
        c.metrics.max_connections = 1;
        c.metrics.header_read_timeout = Duration::from_millis(500);
    })
    .await;
    // One silent connection takes the only place.
    let _silent = tokio::net::TcpStream::connect(app.metrics_addr)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut over = tokio::net::TcpStream::connect(app.metrics_addr)
        .await
        .unwrap();
    let _ = over
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: metrics\r\n\r\n")
        .await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), over.read_to_end(&mut answer)).await;
    assert!(
        matches!(read, Ok(Ok(0) | Err(_))),
        "the connection over the cap is closed unanswered: {:?}",
        String::from_utf8_lossy(&answer)
    );
    // The silent one is closed at the header timeout, and scrapes are answered again.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(app.metrics().await.value("mmsub_process_open_fds", &[]) > 0.0);
}
