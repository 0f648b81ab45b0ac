//! Every query and mutation of the contract over HTTP, with its error paths.

use serde_json::{json, Value};

use crate::helpers::{assert_text, jwt, spawn_app, spawn_app_with, TestApp, JWT_SECRET, PASSWORD};

const PERMISSION: &str = "You do not have permission to perform this action";

use mmsub_api::clock::unix_seconds as unix_now;

fn first_error(response: &Value) -> String {
    response["errors"][0]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("expected an error: {response}"))
        .to_owned()
}

#[tokio::test]
async fn user_create_validates_like_mattermost_and_refuses_duplicates() {
    let app = spawn_app().await;
    let created = app
        .user_create("alice", "alice@example.com", PASSWORD)
        .await;
    assert_eq!(created["status"], "OK");
    assert_eq!(created["statusCode"], 200);
    assert_eq!(created["message"], "User created successfully!");

    for (username, email, password, expected) in [
        ("Al", "x@example.com", PASSWORD, "Invalid username"),
        ("1alice", "x@example.com", PASSWORD, "Invalid username"),
        ("bob", "not-an-email", PASSWORD, "Invalid email"),
        ("bob", "bob@example.com", "short1!A", "Invalid password"),
        (
            "bob",
            "bob@example.com",
            "nouppercase1!",
            "Invalid password",
        ),
        (
            "bob",
            "bob@example.com",
            "NoSymbols1234",
            "Invalid password",
        ),
        (
            "alice",
            "other@example.com",
            PASSWORD,
            "username already exists",
        ),
        ("bob", "ALICE@example.com", PASSWORD, "email already exists"),
    ] {
        let answer = app.user_create(username, email, password).await;
        assert_eq!(
            answer["status"], "BAD_REQUEST",
            "{username} {email}: {answer}"
        );
        assert_eq!(answer["statusCode"], 400);
        assert_text(&answer, "/message", expected);
    }
}

#[tokio::test]
async fn user_get_token_answers_the_union() {
    let app = spawn_app().await;
    app.signed_up("alice").await;
    let query = "mutation($u: String!, $p: String!) { userGetToken(username: $u, password: $p) {
        __typename
        ... on ResponseWithToken { status statusCode message token refreshToken metadata }
        ... on ResponseBase { status statusCode message }
    } }";

    let ok = app
        .graphql(query, json!({ "u": "alice", "p": PASSWORD }), None)
        .await["data"]["userGetToken"]
        .clone();
    assert_eq!(ok["__typename"], "ResponseWithToken");
    assert_eq!(ok["status"], "OK");
    assert_eq!(ok["message"], "Login Successfully!");
    assert_eq!(ok["metadata"]["username"], "alice");
    assert_eq!(ok["metadata"]["email"], "alice@example.com");
    assert!(ok["metadata"]["id"].is_string());
    let token = ok["token"].as_str().unwrap();
    let users = app
        .graphql("{ userList { count } }", json!({}), Some(token))
        .await;
    assert_eq!(
        users["data"]["userList"]["count"], 1,
        "the token works: {users}"
    );

    for (user, password) in [("alice", "Wrong!Pass123"), ("nobody", PASSWORD)] {
        let failed = app
            .graphql(query, json!({ "u": user, "p": password }), None)
            .await["data"]["userGetToken"]
            .clone();
        assert_eq!(failed["__typename"], "ResponseBase");
        assert_eq!(failed["status"], "NOT_FOUND");
        assert_eq!(failed["statusCode"], 404);
        assert_eq!(failed["message"], "Login Failed!");
    }
}

#[tokio::test]
async fn token_auth_verify_and_refresh_follow_django_graphql_jwt() {
    let app = spawn_app().await;
    app.signed_up("alice").await;
    let auth = app
        .graphql(
            "mutation { tokenAuth(username: \"alice\", password: \"Str0ng!Pass\") { token payload refreshExpiresIn } }",
            json!({}),
            None,
        )
        .await["data"]["tokenAuth"]
        .clone();
    let payload = &auth["payload"];
    assert_eq!(payload["username"], "alice");
    let (exp, orig_iat) = (
        payload["exp"].as_i64().unwrap(),
        payload["origIat"].as_i64().unwrap(),
    );
    assert_eq!(exp - orig_iat, 30 * 60, "access tokens live 30 minutes");
    assert_eq!(
        auth["refreshExpiresIn"].as_i64().unwrap(),
        orig_iat + 7 * 24 * 3600
    );

    let wrong = app
        .graphql(
            "mutation { tokenAuth(username: \"alice\", password: \"x\") { token } }",
            json!({}),
            None,
        )
        .await;
    assert_eq!(first_error(&wrong), "Please enter valid credentials");

    let verify = "mutation($t: String) { verifyToken(token: $t) { payload } }";
    let verified = app
        .graphql(verify, json!({ "t": auth["token"] }), None)
        .await;
    assert_eq!(
        verified["data"]["verifyToken"]["payload"]["username"],
        "alice"
    );
    assert_eq!(
        first_error(&app.graphql(verify, json!({ "t": "garbage" }), None).await),
        "Error decoding signature"
    );
    let expired = jwt("alice", -5, 100, JWT_SECRET);
    assert_eq!(
        first_error(&app.graphql(verify, json!({ "t": expired }), None).await),
        "Signature has expired"
    );

    // A JWT refreshes within 7 days of origIat, keeping origIat; even once expired.
    let refresh = "mutation($t: String) { refreshToken(token: $t) { token payload refreshExpiresIn refreshToken } }";
    let refreshed =
        app.graphql(refresh, json!({ "t": expired }), None).await["data"]["refreshToken"].clone();
    assert_eq!(
        refreshed["payload"]["origIat"].as_i64().unwrap(),
        unix_now() - 100
    );
    assert!(refreshed["payload"]["exp"].as_i64().unwrap() > unix_now());
    let too_old = jwt("alice", -5, 8 * 24 * 3600, JWT_SECRET);
    assert_eq!(
        first_error(&app.graphql(refresh, json!({ "t": too_old }), None).await),
        "Refresh has expired"
    );

    // userGetToken's refresh token is single-use and replaced on each use.
    let issued = app
        .graphql(
            "mutation { userGetToken(username: \"alice\", password: \"Str0ng!Pass\") { ... on ResponseWithToken { refreshToken } } }",
            json!({}),
            None,
        )
        .await["data"]["userGetToken"]["refreshToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let first =
        app.graphql(refresh, json!({ "t": issued }), None).await["data"]["refreshToken"].clone();
    assert_eq!(first["payload"]["username"], "alice");
    let replacement = first["refreshToken"].as_str().expect("a new refresh token");
    assert_ne!(replacement, issued);
    assert_eq!(
        first_error(&app.graphql(refresh, json!({ "t": issued }), None).await),
        "Invalid refresh token"
    );
    let second = app
        .graphql(refresh, json!({ "t": replacement }), None)
        .await;
    assert_eq!(
        second["data"]["refreshToken"]["payload"]["username"],
        "alice"
    );
}

#[tokio::test]
async fn tokens_signed_by_the_original_server_work_with_both_schemes() {
    let app = spawn_app().await;
    app.signed_up("alice").await;
    // What django-graphql-jwt issued with the same DJANGO_SECRET_KEY.
    let original = jwt("alice", 300, 0, JWT_SECRET);
    for scheme in ["JWT", "Bearer"] {
        let authorization = format!("{scheme} {original}");
        let response = app
            .graphql_with_authorization("{ userList { count } }", json!({}), Some(&authorization))
            .await;
        assert_eq!(
            response["data"]["userList"]["count"], 1,
            "{scheme}: {response}"
        );
    }
}

#[tokio::test]
async fn protected_operations_need_a_valid_token() {
    let app = spawn_app().await;
    app.signed_up("alice").await;
    let expired = jwt("alice", -5, 100, JWT_SECRET);
    let forged = jwt("alice", 300, 0, "another secret");
    for query in [
        "{ userList { count } }",
        "{ channelList { hasNext } }",
        "{ getMessageList(channelIdentifier: \"town-square\") { hasNext } }",
        "mutation { textMessageSend(channelIdentifier: \"town-square\", textMessage: \"x\") { status } }",
        "mutation { channelCreate(channelName: \"x\", members: []) { status } }",
    ] {
        for token in [None, Some("garbage"), Some(expired.as_str()), Some(forged.as_str())] {
            let response = app.graphql(query, json!({}), token).await;
            assert_eq!(first_error(&response), PERMISSION, "{query} with {token:?}");
        }
    }
}

async fn two_users(app: &TestApp) -> (String, String) {
    (app.signed_up("alice").await, app.signed_up("bob").await)
}

#[tokio::test]
async fn channels_have_members_and_only_members_read_or_post() {
    let app = spawn_app().await;
    let (alice, bob) = two_users(&app).await;
    let carol = app.signed_up("carol").await;

    let team = app.channel(&alice, "team-a", &["bob"]).await;
    let created = app.channel_create(&alice, "team-a", &[]).await;
    assert_eq!(
        (created["status"].as_str(), created["statusCode"].as_i64()),
        (Some("BAD_REQUEST"), Some(400))
    );
    let unknown = app
        .channel_create(&alice, "team-b", &["bob", "nobody"])
        .await;
    assert_eq!(unknown["status"], "NOT_FOUND");
    assert_text(&unknown, "/message", "nobody");
    let invalid = app.channel_create(&alice, "Not Valid", &[]).await;
    assert_eq!(invalid["statusCode"], 400);
    assert_text(&invalid, "/message", "Invalid channel name");

    // Members post by name or id; a non-member cannot post or read, and is told what a
    // missing channel would tell (no enumeration of channel names).
    app.send(&bob, "team-a", "from bob").await;
    app.send(&alice, &team, "from alice").await;
    let refused = app.send_message(&carol, "team-a", "let me in").await;
    assert_eq!(
        (refused["status"].as_str(), refused["statusCode"].as_i64()),
        (Some("NOT_FOUND"), Some(404))
    );
    assert_text(&refused, "/message", "Channel not found");
    let history = app
        .graphql(
            "{ getMessageList(channelIdentifier: \"team-a\") { hasNext } }",
            json!({}),
            Some(&carol),
        )
        .await;
    assert_eq!(history["errors"][0]["extensions"]["statusCode"], 404);
    assert_text(&history, "/errors/0/message", "Channel not found");
    let missing = app.send_message(&alice, "no-such-channel", "hello").await;
    assert_eq!(
        (missing["status"].as_str(), missing["statusCode"].as_i64()),
        (Some("NOT_FOUND"), Some(404))
    );
    let history = app
        .graphql(
            "{ getMessageList(channelIdentifier: \"nope\") { hasNext } }",
            json!({}),
            Some(&alice),
        )
        .await;
    assert!(first_error(&history).contains("Channel not found"));

    // channelList: the caller's channels with their last message.
    let list = app
        .graphql("{ channelList { hasNext data { channelId channelName lastMessage { message owner { username } } } } }", json!({}), Some(&bob))
        .await["data"]["channelList"]
        .clone();
    assert_eq!(list["hasNext"], false);
    let channels = list["data"].as_array().unwrap();
    let names: Vec<_> = channels
        .iter()
        .map(|c| c["channelName"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["team-a", "town-square"]);
    assert_eq!(channels[0]["channelId"], team.as_str());
    assert_eq!(channels[0]["lastMessage"]["message"], "from alice");
    assert_eq!(channels[0]["lastMessage"]["owner"]["username"], "alice");
    let carols = app
        .graphql(
            "{ channelList { data { channelName } } }",
            json!({}),
            Some(&carol),
        )
        .await;
    assert_eq!(
        carols["data"]["channelList"]["data"],
        json!([{ "channelName": "town-square" }])
    );

    let paged = app
        .graphql(
            "{ channelList(page: {pageSize: 1, pageNumber: 1}) { hasNext data { channelName } } }",
            json!({}),
            Some(&bob),
        )
        .await;
    assert_eq!(paged["data"]["channelList"]["hasNext"], true);
    let last = app
        .graphql(
            "{ channelList(page: {pageSize: 1, pageNumber: 2}) { hasNext data { channelName } } }",
            json!({}),
            Some(&bob),
        )
        .await;
    assert_eq!(
        last["data"]["channelList"],
        json!({ "hasNext": false, "data": [{ "channelName": "town-square" }] })
    );

    let long = app
        .send_message(&alice, "team-a", &"x".repeat(16_384))
        .await;
    assert_eq!(long["statusCode"], 400);
    assert_text(&long, "/message", "too long");
    let empty = app.send_message(&alice, "team-a", "   ").await;
    assert_eq!(empty["statusCode"], 400);
}

#[tokio::test]
async fn message_history_pages_from_the_newest_and_each_page_reads_oldest_first() {
    let app = spawn_app().await;
    let alice = app.signed_up("alice").await;
    let channel = app.channel(&alice, "history", &[]).await;
    for i in 1..=25 {
        app.send(&alice, "history", &format!("m{i}")).await;
    }
    let page = |n: i64| {
        let app = &app;
        let alice = &alice;
        let channel = &channel;
        async move {
            app.graphql(
                "query($c: String!, $n: Int) { getMessageList(channelIdentifier: $c, page: {pageSize: 10, pageNumber: $n}) {
                    hasNext hasPrevious data { id message type createAt owner { username email isStaff id } } } }",
                json!({ "c": channel, "n": n }),
                Some(alice),
            )
            .await["data"]["getMessageList"]
                .clone()
        }
    };
    let texts = |p: &Value| {
        p["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["message"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };

    let newest = page(0).await;
    assert_eq!(
        texts(&newest),
        (16..=25).map(|i| format!("m{i}")).collect::<Vec<_>>()
    );
    assert_eq!(
        (newest["hasNext"].as_bool(), newest["hasPrevious"].as_bool()),
        (Some(false), Some(true))
    );
    let message = &newest["data"][0];
    assert_eq!(message["type"], "str");
    assert_eq!(message["owner"]["username"], "alice");
    assert_eq!(message["owner"]["isStaff"], false);
    assert!(
        message["createAt"].as_str().unwrap().ends_with("+00:00"),
        "{message}"
    );

    let middle = page(1).await;
    assert_eq!(
        texts(&middle),
        (6..=15).map(|i| format!("m{i}")).collect::<Vec<_>>()
    );
    assert_eq!(
        (middle["hasNext"].as_bool(), middle["hasPrevious"].as_bool()),
        (Some(true), Some(true))
    );
    let oldest = page(2).await;
    assert_eq!(
        texts(&oldest),
        (1..=5).map(|i| format!("m{i}")).collect::<Vec<_>>()
    );
    assert_eq!(
        (oldest["hasNext"].as_bool(), oldest["hasPrevious"].as_bool()),
        (Some(true), Some(false))
    );

    let by_name = app
        .graphql(
            "{ getMessageList(channelIdentifier: \"history\") { data { message } } }",
            json!({}),
            Some(&alice),
        )
        .await;
    assert_eq!(
        by_name["data"]["getMessageList"]["data"]
            .as_array()
            .unwrap()
            .len(),
        10,
        "default page size 10"
    );

    for bad in ["{pageSize: 0}", "{pageSize: 10001}", "{pageNumber: -1}"] {
        let response = app.graphql(&format!("{{ getMessageList(channelIdentifier: \"history\", page: {bad}) {{ hasNext }} }}"), json!({}), Some(&alice)).await;
        assert_text(&response, "/errors/0/message", "page");
    }
}

#[tokio::test]
async fn the_welcome_post_reads_as_in_the_original() {
    let app = spawn_app_with(|c| c.api.time_zone = chrono_tz::Tz::Asia__Tehran).await;
    let alice = app.signed_up("alice").await;
    let response = app
        .graphql("{ getMessageList(channelIdentifier: \"town-square\") { data { message type createAt } } }", json!({}), Some(&alice))
        .await;
    let welcome = &response["data"]["getMessageList"]["data"][0];
    assert_eq!(welcome["message"], "Welcome");
    assert_eq!(welcome["type"], "system_join_team");
    assert!(
        welcome["createAt"].as_str().unwrap().ends_with("+03:30"),
        "TIME_ZONE applies: {welcome}"
    );
}

#[tokio::test]
async fn user_list_pages_from_one() {
    let app = spawn_app().await;
    let alice = app.signed_up("alice").await;
    app.signed_up("bob").await;
    app.signed_up("carol").await;
    let list = |size: i64, number: i64| {
        let (app, alice) = (&app, &alice);
        async move {
            app.graphql(
                "query($s: Int, $n: Int) { userList(page: {pageSize: $s, pageNumber: $n}) { count pageCount data { id username email isStaff } } }",
                json!({ "s": size, "n": number }),
                Some(alice),
            )
            .await
        }
    };
    let first = list(2, 1).await["data"]["userList"].clone();
    assert_eq!(
        (first["count"].as_i64(), first["pageCount"].as_i64()),
        (Some(3), Some(2))
    );
    assert_eq!(first["data"][0]["username"], "alice");
    assert_eq!(first["data"][1]["username"], "bob");
    let second = list(2, 2).await["data"]["userList"].clone();
    assert_eq!(second["data"].as_array().unwrap().len(), 1);
    assert_eq!(second["data"][0]["username"], "carol");
    assert!(first_error(&list(2, 0).await).contains("pageNumber"));
}

#[tokio::test]
async fn endpoints_graphiql_health_and_bad_requests() {
    let app = spawn_app().await;
    for path in ["/graphql/", "/graphql"] {
        let page = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(page.status(), 200);
        assert!(page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        let html = page.text().await.unwrap();
        assert!(
            html.contains("graphiql") && html.contains("/ws/graphql/"),
            "GraphiQL with subscriptions"
        );
    }
    let no_slash = app
        .http
        .post(app.url("/graphql"))
        .json(&json!({ "query": "{ __typename }" }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        no_slash.json::<Value>().await.unwrap()["data"]["__typename"],
        "Query"
    );
    assert_eq!(
        app.http
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let ready = app.readyz().await;
    assert_eq!(ready["status"], "ready");
    assert_eq!(
        app.http
            .get(app.url("/nope"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    let malformed = app
        .http
        .post(app.url("/graphql/"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);
    let body: Value = malformed.json().await.unwrap();
    assert_text(&body, "/errors/0/message", "JSON");
    let syntax = app.graphql("{ userList { ", json!({}), None).await;
    assert!(!first_error(&syntax).is_empty());
}
