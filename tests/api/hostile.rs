//! Attacks on a node, tried as an attacker would: each against `mmsub serve` as its own
//! process, checking how it is answered (a clear error, before any resolver runs), that the
//! node's RSS grows by less than 150 MB meanwhile, and that `/healthz` keeps answering within
//! 2 s. How fast they are refused is measured on release builds (README "Limits"), not here.

use futures::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{assert_text, ServerProcess};

/// `levels` fragments, each spreading the one before it twice: 2^levels fields when executed.
pub fn fragment_bomb(levels: usize, root: &str) -> String {
    let mut query = format!("{root} {{ ...f{levels} }}\nfragment f0 on Query {{ __typename }}\n");
    if root.starts_with("subscription") {
        query = format!("{root} {{ ...f{levels} }}\nfragment f0 on Subscription {{ onNewChatMessage(channelIdentifier: \"x\") {{ channelIdentifier }} }}\n");
    }
    let on = if root.starts_with("subscription") {
        "Subscription"
    } else {
        "Query"
    };
    for n in 1..=levels {
        query.push_str(&format!(
            "fragment f{n} on {on} {{ ...f{m} ...f{m} }}\n",
            m = n - 1
        ));
    }
    query
}

/// The same expansion through inline fragments and directives: each level spreads the one
/// before it inside two inline fragments, one of them under `@include`.
fn inline_bomb(levels: usize) -> String {
    let mut query = format!(
        "query($yes: Boolean = true) {{ ...f{levels} }}\nfragment f0 on Query {{ __typename }}\n"
    );
    for n in 1..=levels {
        query.push_str(&format!(
            "fragment f{n} on Query {{ ... on Query {{ ...f{m} }} ... @include(if: $yes) {{ ...f{m} }} }}\n",
            m = n - 1
        ));
    }
    query
}

fn refused_as_too_complex(answer: &Value) {
    assert!(
        answer.get("data").is_none_or(Value::is_null),
        "nothing may run: {answer}"
    );
    assert_text(answer, "/errors/0/message", "too complex");
    assert_eq!(
        answer["errors"][0]["extensions"]["code"], "QUERY_TOO_COMPLEX",
        "{answer}"
    );
}

async fn ws_operation(server: &ServerProcess, protocol: &str, query: &str) -> Value {
    let mut request = format!("ws://{}/ws/graphql/", server.addr)
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_str(protocol).unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("upgrade");
    use futures::SinkExt;
    let send = |v: Value| Message::text(v.to_string());
    ws.send(send(json!({ "type": "connection_init" })))
        .await
        .unwrap();
    let start = if protocol == "graphql-ws" {
        "start"
    } else {
        "subscribe"
    };
    ws.send(send(
        json!({ "type": start, "id": "1", "payload": { "query": query } }),
    ))
    .await
    .unwrap();
    loop {
        let message = tokio::time::timeout(std::time::Duration::from_secs(10), ws.next())
            .await
            .expect("an answer within 10 s")
            .expect("open")
            .expect("frame");
        if let Message::Text(text) = message {
            let message: Value = serde_json::from_str(&text).unwrap();
            if message["type"] == "error" {
                // graphql-transport-ws sends a list, legacy one object.
                let error = match &message["payload"] {
                    Value::Array(errors) => errors[0].clone(),
                    other => other.clone(),
                };
                return json!({ "errors": [error] });
            }
            assert!(
                matches!(message["type"].as_str(), Some("connection_ack" | "ka")),
                "expected the operation's error, got {message}"
            );
        }
    }
}

#[tokio::test]
async fn fragment_expansion_is_refused_before_it_runs_over_http_and_both_socket_protocols() {
    let server = ServerProcess::start(&[]).await;
    server
        .under_guard(async {
            for query in [
                fragment_bomb(30, "query"),
                inline_bomb(30),
                fragment_bomb(40, "query"),
            ] {
                refused_as_too_complex(&server.graphql(&query, json!({}), None).await);
            }
            // Deeper than the walk follows: refused for its nesting, before counting further.
            let answer = server
                .graphql(&fragment_bomb(100, "query"), json!({}), None)
                .await;
            assert_text(&answer, "/errors/0/message", "nested too deep");
            let subscription = fragment_bomb(30, "subscription");
            for protocol in ["graphql-transport-ws", "graphql-ws"] {
                refused_as_too_complex(&ws_operation(&server, protocol, &subscription).await);
                refused_as_too_complex(
                    &ws_operation(&server, protocol, &fragment_bomb(30, "query")).await,
                );
            }
        })
        .await;
}

#[tokio::test]
async fn aliased_pages_are_refused_before_any_resolver_runs() {
    let server = ServerProcess::start(&[]).await;
    let token = server.signed_up("mallory").await;
    let page = "getMessageList(channelIdentifier: \"town-square\", page: { pageSize: 200 }) { data { id message createAt owner { username } } }";
    let aliased = format!(
        "{{ {} }}",
        (0..160)
            .map(|n| format!("m{n}: {page}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let by_variable = format!(
        "query($p: PageType) {{ {} }}",
        (0..40)
            .map(|n| format!("m{n}: getMessageList(channelIdentifier: \"town-square\", page: $p) {{ data {{ message }} }}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    server
        .under_guard(async {
            refused_as_too_complex(&server.graphql(&aliased, json!({}), Some(&token)).await);
            refused_as_too_complex(
                &server
                    .graphql(&by_variable, json!({ "p": { "pageSize": 1000 } }), Some(&token))
                    .await,
            );
            let members: Vec<String> = (0..60_000).map(|n| format!("u{n}")).collect();
            refused_as_too_complex(
                &server
                    .graphql(
                        "mutation($m: [String]!) { channelCreate(channelName: \"big\", members: $m) { status } }",
                        json!({ "m": members }),
                        Some(&token),
                    )
                    .await,
            );
        })
        .await;
}

#[tokio::test]
async fn text_nested_too_deep_for_the_parser_is_refused() {
    let server = ServerProcess::start(&[]).await;
    server
        .under_guard(async {
            for query in [
                "{".repeat(500_000),
                format!("{{ a(x: {}) }}", "[".repeat(100_000)),
            ] {
                let answer = server.graphql(&query, json!({}), None).await;
                assert_text(&answer, "/errors/0/message", "nested too deep");
            }
        })
        .await;
}

/// A WebSocket upgrade request as raw text, with `headers` (each ending in CRLF) added.
fn upgrade_request(headers: &str) -> String {
    format!("GET /ws/graphql/ HTTP/1.1\r\nHost: x\r\n{headers}Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
}

/// Sends raw bytes on a fresh connection and returns everything the server wrote before it
/// closed (or before `wait` passed).
async fn raw_exchange(
    addr: std::net::SocketAddr,
    bytes: &[u8],
    wait: std::time::Duration,
) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(wait, stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn a_body_that_never_ends_is_answered_408_at_the_body_deadline() {
    let app = crate::helpers::spawn_app_with(|c| {
        c.api.body_read_timeout = std::time::Duration::from_millis(300);
    })
    .await;
    let wait = std::time::Duration::from_secs(5);
    let started = std::time::Instant::now();
    let short = raw_exchange(
        app.addr,
        b"POST /graphql/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"query\":",
        wait,
    )
    .await;
    assert!(short.starts_with("HTTP/1.1 408"), "{short}");
    assert!(short.contains("did not arrive within 300 ms"), "{short}");
    let chunked = raw_exchange(
        app.addr,
        b"POST /graphql/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"que\r\n",
        wait,
    )
    .await;
    assert!(chunked.starts_with("HTTP/1.1 408"), "{chunked}");
    assert!(
        started.elapsed() < wait,
        "answered at the deadline, not at the client's leisure"
    );
}

#[tokio::test]
async fn only_json_and_graphql_bodies_are_executed() {
    let app = crate::helpers::spawn_app().await;
    let post = |content_type: Option<&'static str>, body: &'static str| {
        let mut request = app.http.post(app.url("/graphql/")).body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        request.send()
    };
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let answer = post(content_type, r#"{"query":"{ __typename }"}"#)
            .await
            .unwrap();
        assert_eq!(answer.status(), 415, "{content_type:?}");
    }
    let json = post(
        Some("application/json; charset=utf-8"),
        r#"{"query":"{ __typename }"}"#,
    )
    .await
    .unwrap();
    assert_eq!(json.status(), 200);
    let graphql = post(Some("application/graphql"), "{ __typename }")
        .await
        .unwrap();
    let body: Value = graphql.json().await.unwrap();
    assert_eq!(body["data"]["__typename"], "Query", "{body}");
}

#[tokio::test]
async fn only_listed_origins_get_cors_and_other_pages_are_refused() {
    let app = crate::helpers::spawn_app_with(|c| {
        c.api.cors_allowed_origins = vec!["https://chat.example.com".into()];
    })
    .await;
    let post = |origin: String| {
        app.http
            .post(app.url("/graphql/"))
            .header("origin", origin)
            .json(&json!({ "query": "{ __typename }" }))
            .send()
    };
    let evil = post("https://evil.example".into()).await.unwrap();
    assert_eq!(evil.status(), 403);
    assert!(evil.headers().get("access-control-allow-origin").is_none());
    let listed = post("https://chat.example.com".into()).await.unwrap();
    assert_eq!(listed.status(), 200);
    assert_eq!(
        listed.headers()["access-control-allow-origin"],
        "https://chat.example.com"
    );
    assert_eq!(listed.headers()["vary"], "Origin");
    // GraphiQL on the server's own origin.
    let same = post(format!("http://{}", app.addr)).await.unwrap();
    assert_eq!(same.status(), 200);
    assert!(same.headers().get("access-control-allow-origin").is_none());
    let preflight = app
        .http
        .request(reqwest::Method::OPTIONS, app.url("/graphql/"))
        .header("origin", "https://chat.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 204);
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "https://chat.example.com"
    );
    // Nothing by default.
    let default = crate::helpers::spawn_app().await;
    let answer = default
        .http
        .post(default.url("/graphql/"))
        .header("origin", "https://chat.example.com")
        .json(&json!({ "query": "{ __typename }" }))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 403);
}

#[tokio::test]
async fn connections_are_capped_per_client_and_in_total() {
    let app = crate::helpers::spawn_app_with(|c| {
        c.connections.max_http_per_client = 3;
        c.gateway.max_connections_per_client = 2;
    })
    .await;
    let wait = std::time::Duration::from_secs(5);
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(tokio::net::TcpStream::connect(app.addr).await.unwrap());
    }
    let refused = raw_exchange(app.addr, b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n", wait).await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(
        refused.contains("Too many connections from your address"),
        "{refused}"
    );
    drop(held);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;

    let _a = app.ws("graphql-transport-ws").await;
    let _b = app.ws("graphql-transport-ws").await;
    let third = raw_exchange(app.addr, upgrade_request("").as_bytes(), wait).await;
    assert!(third.starts_with("HTTP/1.1 503"), "{third}");
    assert!(
        third.contains("Too many WebSocket connections from your address"),
        "{third}"
    );

    // The total: beyond it a request gets 503, but liveness still answers.
    let total = crate::helpers::spawn_app_with(|c| c.connections.max_open_connections = 2).await;
    let _x = tokio::net::TcpStream::connect(total.addr).await.unwrap();
    let _y = tokio::net::TcpStream::connect(total.addr).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let over = raw_exchange(
        total.addr,
        b"POST /graphql/ HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        wait,
    )
    .await;
    assert!(over.starts_with("HTTP/1.1 503"), "{over}");
    assert!(over.contains("connection limit"), "{over}");
    let alive = raw_exchange(
        total.addr,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        wait,
    )
    .await;
    assert!(alive.starts_with("HTTP/1.1 200"), "{alive}");
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_cap() {
    let app = crate::helpers::spawn_app_with(|c| {
        c.connections.trusted_proxies =
            mmsub_api::client::TrustedProxies::parse(&["127.0.0.1".into()]).unwrap();
        c.gateway.max_connections_per_client = 1;
    })
    .await;
    let upgrade = |client: &str| upgrade_request(&format!("X-Forwarded-For: {client}\r\n"));
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut first = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    first
        .write_all(upgrade("203.0.113.1").as_bytes())
        .await
        .unwrap();
    let mut head = [0u8; 12];
    first.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 101");
    let wait = std::time::Duration::from_secs(2);
    let same = raw_exchange(app.addr, upgrade("203.0.113.1").as_bytes(), wait).await;
    assert!(same.starts_with("HTTP/1.1 503"), "{same}");
    let other = raw_exchange(
        app.addr,
        upgrade("203.0.113.2").as_bytes(),
        std::time::Duration::from_millis(300),
    )
    .await;
    assert!(other.starts_with("HTTP/1.1 101"), "{other}");
}

#[tokio::test]
async fn failed_and_throttled_logins_are_logged_with_address_and_username_never_the_password() {
    let server = ServerProcess::start(&["--login-rate-per-user", "1/min"]).await;
    for _ in 0..2 {
        server
            .graphql(
                "mutation { tokenAuth(username: \"victim\", password: \"hunter2-secret\") { token } }",
                json!({}),
                None,
            )
            .await;
    }
    let failed = server.log_lines("login failed").await;
    assert!(
        failed
            .iter()
            .any(|l| l.contains("client=127.0.0.1") && l.contains("username=victim")),
        "{failed:?}"
    );
    let throttled = server.log_lines("login throttled").await;
    assert!(
        throttled.iter().any(|l| l.contains("client=127.0.0.1")),
        "{throttled:?}"
    );
    assert!(
        server.log_lines("hunter2-secret").await.is_empty(),
        "a password reached the log"
    );
}

#[tokio::test]
async fn tokens_no_server_issues_are_refused_over_http_and_sockets() {
    let app = crate::helpers::spawn_app().await;
    app.signed_up("alice").await;
    let now = mmsub_api::clock::unix_seconds();
    let sign = |claims: Value| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(crate::helpers::JWT_SECRET.as_bytes()),
        )
        .unwrap()
    };
    for token in [
        sign(json!({ "username": "alice", "exp": now + 600, "origIat": now, "nbf": now + 300 })),
        sign(json!({ "username": "alice", "exp": now + 86_400 * 365, "origIat": now })),
    ] {
        let answer = app
            .graphql("{ channelList { hasNext } }", json!({}), Some(&token))
            .await;
        assert_text(&answer, "/errors/0/message", "permission");
        let mut ws = app.ws("graphql-transport-ws").await;
        ws.send_json(json!({ "type": "connection_init", "payload": { "Authorization": format!("JWT {token}") } }))
            .await;
        assert_eq!(ws.expect_close().await.0, 4403);
    }
}
