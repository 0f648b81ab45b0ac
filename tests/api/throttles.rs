//! What an attacker can repeat is throttled: logins per username and per client address
//! (each alias counting, before any password is hashed), sign-ups per address, sends per user,
//! and operations per WebSocket connection. Clients are told when to retry.

use serde_json::{json, Value};

use crate::helpers::{spawn_app_with, TestApp, PASSWORD};
use mmsub_api::client::TrustedProxies;
use mmsub_api::throttle::RateLimit;

/// A server behind a "proxy" on loopback, so that `X-Forwarded-For` names distinct clients.
async fn behind_proxy(configure: impl FnOnce(&mut mmsub::ServerConfig)) -> TestApp {
    spawn_app_with(|c| {
        c.connections.trusted_proxies = TrustedProxies::parse(&["127.0.0.1".into()]).unwrap();
        configure(c);
    })
    .await
}

async fn graphql_from(app: &TestApp, client: &str, query: &str, variables: Value) -> Value {
    app.http
        .post(app.url("/graphql/"))
        .header("x-forwarded-for", client)
        .json(&json!({ "query": query, "variables": variables }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn messages(answer: &Value) -> Vec<String> {
    answer["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| e["message"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// One mutation of `count` aliased `tokenAuth` attempts; `username(n)` names the n-th one's user.
fn guesses(count: usize, username: impl Fn(usize) -> String) -> String {
    let guesses = (0..count)
        .map(|n| {
            let user = username(n);
            format!("g{n}: tokenAuth(username: \"{user}\", password: \"guess{n}\") {{ token }}")
        })
        .collect::<Vec<_>>()
        .join(" ");
    format!("mutation {{ {guesses} }}")
}

/// How many of the answer's errors contain `text`.
fn count_errors(answer: &Value, text: &str) -> usize {
    messages(answer).iter().filter(|m| m.contains(text)).count()
}

/// `query` (which reads `$u` and `$p`) from `client`, as `username` with the test password.
async fn login_from(app: &TestApp, client: &str, query: &str, username: &str) -> Value {
    graphql_from(app, client, query, json!({ "u": username, "p": PASSWORD })).await
}

const LOGIN: &str =
    "mutation($u: String!, $p: String!) { tokenAuth(username: $u, password: $p) { token } }";

#[tokio::test]
async fn a_document_of_many_logins_is_refused_whole_before_any_is_checked() {
    let app = behind_proxy(|_| {}).await;
    app.signed_up("alice").await;
    let answer = graphql_from(
        &app,
        "203.0.113.66",
        &guesses(500, |_| "alice".into()),
        json!({}),
    )
    .await;
    assert!(answer["data"].is_null(), "{answer}");
    assert_eq!(
        answer["errors"][0]["extensions"]["code"], "TOO_MANY_PASSWORD_CHECKS",
        "{answer}"
    );
    // A sign-up and a login together are one client's normal request.
    let both = login_from(
        &app,
        "203.0.113.67",
        "mutation($u: String!, $p: String!) { userCreate(username: $u, password: $p, email: \"b@example.com\") { statusCode } tokenAuth(username: $u, password: $p) { token } }",
        "bobby",
    )
    .await;
    assert!(both["data"]["tokenAuth"]["token"].is_string(), "{both}");
}

#[tokio::test]
async fn aliased_password_guesses_are_throttled_before_they_are_hashed() {
    // Allowed many logins in one request, each alias still counts against the buckets.
    let app = behind_proxy(|c| c.api.max_password_checks_per_request = 1000).await;
    app.signed_up("alice").await;
    // One request, 500 guesses.
    let answer = graphql_from(
        &app,
        "203.0.113.66",
        &guesses(500, |_| "alice".into()),
        json!({}),
    )
    .await;
    let checked = count_errors(&answer, "valid credentials");
    let throttled = count_errors(&answer, "Too many login attempts");
    assert!(
        checked <= 10,
        "at most the username's burst is checked, got {checked}"
    );
    assert_eq!(checked + throttled, 500);
    let retry = answer["errors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["extensions"]["code"] == "TOO_MANY_REQUESTS")
        .expect("a throttled attempt");
    assert!(
        retry["extensions"]["retryAfter"].as_u64().unwrap() >= 1,
        "{retry}"
    );

    // userGetToken says the same as a ResponseBase.
    let answer = graphql_from(
        &app,
        "203.0.113.66",
        "mutation { userGetToken(username: \"alice\", password: \"again\") { ... on ResponseBase { statusCode message metadata } } }",
        json!({}),
    )
    .await;
    let base = &answer["data"]["userGetToken"];
    assert_eq!(base["statusCode"], 429, "{answer}");
    assert!(
        base["metadata"]["retryAfter"].as_u64().unwrap() >= 1,
        "{answer}"
    );

    // Another user from another address is not held back by the attack.
    app.signed_up("carol").await;
    let carol = login_from(&app, "198.51.100.7", LOGIN, "carol").await;
    assert!(carol["data"]["tokenAuth"]["token"].is_string(), "{carol}");
}

#[tokio::test]
async fn one_address_guessing_many_usernames_is_throttled_per_address() {
    let app = behind_proxy(|c| {
        c.api.login_rate_per_client = RateLimit {
            per_minute: 5,
            burst: 5,
        };
        c.api.max_password_checks_per_request = 1000;
    })
    .await;
    let answer = graphql_from(
        &app,
        "203.0.113.5",
        &guesses(20, |n| format!("user{n}")),
        json!({}),
    )
    .await;
    let throttled = count_errors(&answer, "Too many login attempts");
    assert_eq!(throttled, 15, "{answer}");
    let limit = [("limit", "login_per_client")];
    assert_eq!(
        app.metrics().await.value("mmsub_throttled_total", &limit),
        15.0,
        "each throttled login is counted once"
    );
}

#[tokio::test]
async fn sign_ups_are_throttled_per_address_and_sends_per_user() {
    let app = behind_proxy(|c| {
        c.api.signup_rate_per_client = RateLimit {
            per_minute: 1,
            burst: 2,
        };
        c.api.send_rate_per_user = RateLimit {
            per_minute: 60,
            burst: 3,
        };
    })
    .await;
    let sign_up = |n: u32| {
        graphql_from(
            &app,
            "203.0.113.20",
            "mutation($u: String!, $p: String!, $e: String!) { userCreate(username: $u, password: $p, email: $e) { statusCode message metadata } }",
            json!({ "u": format!("user{n}"), "p": PASSWORD, "e": format!("user{n}@example.com") }),
        )
    };
    assert_eq!(sign_up(1).await["data"]["userCreate"]["statusCode"], 200);
    assert_eq!(sign_up(2).await["data"]["userCreate"]["statusCode"], 200);
    let third = sign_up(3).await;
    assert_eq!(third["data"]["userCreate"]["statusCode"], 429, "{third}");
    assert!(
        third["data"]["userCreate"]["metadata"]["retryAfter"]
            .as_u64()
            .unwrap()
            >= 1
    );

    let alice = app.signed_up("alice").await;
    for n in 0..3 {
        assert_eq!(
            app.send_message(&alice, "town-square", &format!("m{n}"))
                .await["statusCode"],
            200
        );
    }
    let fourth = app
        .send_message(&alice, "town-square", "one too many")
        .await;
    assert_eq!(fourth["statusCode"], 429, "{fourth}");
    assert!(
        fourth["message"].as_str().unwrap().contains("retry in"),
        "{fourth}"
    );
}

#[tokio::test]
async fn subscribe_churn_on_one_connection_is_throttled() {
    let app = spawn_app_with(|c| {
        c.gateway.operation_rate = RateLimit {
            per_minute: 60,
            burst: 3,
        }
    })
    .await;
    let alice = app.signed_up("alice").await;
    let mut ws = app.transport_ws(&alice).await;
    for n in 0..4 {
        ws.send_json(json!({ "id": format!("s{n}"), "type": "subscribe", "payload": { "query": "subscription { onNewChatMessage(channelIdentifier: \"town-square\") { channelIdentifier } }" } }))
            .await;
        ws.send_json(json!({ "id": format!("s{n}"), "type": "complete" }))
            .await;
    }
    let refused = ws.recv_json().await;
    assert_eq!(
        (refused["type"].as_str(), refused["id"].as_str()),
        (Some("error"), Some("s3")),
        "{refused}"
    );
    assert_eq!(
        refused["payload"][0]["extensions"]["code"],
        "TOO_MANY_REQUESTS"
    );
}

#[tokio::test]
async fn on_mattermost_a_login_burst_stops_here_before_it_reaches_mattermost() {
    let (app, standin) =
        crate::helpers::spawn_app_on_mattermost(|c| c.api.max_password_checks_per_request = 1000)
            .await;
    app.signed_up("alice").await;
    standin.take_requests();
    let answer = app
        .graphql(&guesses(50, |_| "alice".into()), json!({}), None)
        .await;
    let throttled = count_errors(&answer, "Too many login attempts");
    let logins = standin
        .take_requests()
        .iter()
        .filter(|r| r.contains("/users/login"))
        .count();
    assert!(logins <= 10, "{logins} logins reached Mattermost");
    assert_eq!(logins + throttled, 50, "{answer}");
}
