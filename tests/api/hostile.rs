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
