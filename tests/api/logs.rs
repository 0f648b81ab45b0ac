//! `--log-format json`: every line a log shipper reads is one JSON object with the event's
//! fields at the top level.

use serde_json::{json, Value};

use crate::helpers::*;

#[tokio::test]
async fn json_logs_are_one_object_per_line_with_the_events_fields() {
    let server =
        ServerProcess::start(&["--log-format", "json", "--login-rate-per-client", "1/min:1"]).await;
    let login = "mutation { tokenAuth(username: \"nobody\", password: \"wrong\") { token } }";
    for _ in 0..2 {
        server.graphql(login, json!({}), None).await;
    }
    let throttled = server.log_lines("login throttled").await;
    assert_eq!(throttled.len(), 1, "{throttled:?}");
    let line: Value = serde_json::from_str(&throttled[0]).expect("a JSON object");
    assert_eq!(line["level"], "WARN", "{line}");
    assert_eq!(line["message"], "login throttled", "{line}");
    assert_eq!(line["limit"], "login_per_client", "{line}");
    assert_eq!(line["username"], "nobody", "{line}");
    assert!(
        line["timestamp"].is_string() && line["target"].is_string(),
        "{line}"
    );
    for line in server.log_lines("").await {
        assert!(
            serde_json::from_str::<Value>(&line).is_ok_and(|v| v.is_object()),
            "not one JSON object: {line}"
        );
    }
}

#[tokio::test]
async fn an_answer_carries_the_requests_id_or_a_fresh_one() {
    let app = spawn_app().await;
    let ask = |id: Option<&'static str>| {
        let mut request = app
            .http
            .post(app.url("/graphql/"))
            .json(&json!({ "query": "{ __typename }" }));
        if let Some(id) = id {
            request = request.header("X-Request-Id", id);
        }
        request.send()
    };
    let kept = ask(Some("trace-42")).await.unwrap();
    assert_eq!(kept.headers()["x-request-id"], "trace-42");
    let long: &'static str = Box::leak("x".repeat(65).into_boxed_str());
    for hostile in [Some("not a token"), Some("a\"quote"), Some(long), None] {
        let made = ask(hostile).await.unwrap();
        let id = made.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert_eq!(id.len(), 16, "{hostile:?} gave {id}");
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    }
}
