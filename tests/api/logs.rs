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
