//! The contract on the Mattermost backend, end to end: a real mmsub server in front of the
//! stand-in Mattermost (`tests/mattermost-standin`; a real Mattermost cannot run here, the
//! stand-in follows its published API and is checked against it in `mattermost_spec`).

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{
    assert_text, jwt, spawn_app_on_mattermost, TestApp, WsClient, JWT_SECRET,
    NEW_MESSAGE_SUBSCRIPTION, PASSWORD,
};

async fn subscribe(app: &TestApp, token: &str, channel: &str, live: u64) -> WsClient {
    let mut ws = app.transport_ws(token).await;
    ws.send_json(json!({ "id": "1", "type": "subscribe", "payload": {
        "query": NEW_MESSAGE_SUBSCRIPTION, "variables": { "c": channel } } }))
        .await;
    app.wait_for_subscriptions(live).await;
    ws
}

/// The next `onNewChatMessage` message text.
async fn next_message(ws: &mut WsClient) -> String {
    let frame = ws.recv_data().await;
    assert_eq!(frame["type"], "next", "{frame}");
    frame["payload"]["data"]["onNewChatMessage"]["message"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("a message: {frame}"))
        .to_owned()
}

const MESSAGES: &str =
    "query($c: String!) { getMessageList(channelIdentifier: $c, page: {pageSize: 50}) {
    hasNext hasPrevious data { id message type createAt owner { username email } } } }";
const CHANNELS: &str = "{ channelList(page: {pageSize: 10}) { hasNext data { channelId channelName
    lastMessage { id message owner { username } } } } }";

#[tokio::test]
async fn every_contract_operation_works_against_mattermost() {
    let (app, standin) = spawn_app_on_mattermost(|_| {}).await;

    // userCreate makes the Mattermost account with the user's own password, in the team.
    let alice = app.signed_up("alice").await;
    let bob = app.signed_up("bob").await;
    let bad = app.user_create("x", "x@example.com", PASSWORD).await;
    assert_eq!(bad["statusCode"], 400, "{bad}");
    let again = app
        .user_create("alice", "other@example.com", PASSWORD)
        .await;
    assert_eq!(again["statusCode"], 400, "{again}");
    assert_text(&again, "/message", "already exists");

    // The session inside the token is sealed: the token's payload does not show it.
    let verified = app
        .data(
            "verifyToken",
            "mutation($t: String) { verifyToken(token: $t) { payload } }",
            json!({ "t": alice }),
            None,
        )
        .await;
    assert_eq!(verified["payload"]["username"], "alice");
    let sealed = verified["payload"]["mmSession"].as_str().unwrap();
    assert!(sealed.len() > 40 && !sealed.contains('.'), "{sealed}");

    // userGetToken: wrong password is the contract's 404; right one gives a refresh token.
    let failed = app
        .data("userGetToken", "mutation { userGetToken(username: \"alice\", password: \"Wrong-Pass1!\") { ... on ResponseBase { statusCode message } } }", json!({}), None)
        .await;
    assert_eq!(failed["statusCode"], 404, "{failed}");
    let got = app
        .data("userGetToken", "mutation($p: String!) { userGetToken(username: \"bob\", password: $p) { ... on ResponseWithToken { statusCode token refreshToken metadata } } }", json!({ "p": PASSWORD }), None)
        .await;
    assert_eq!(got["statusCode"], 200, "{got}");
    assert_eq!(got["metadata"]["username"], "bob");
    let refreshed = app
        .data(
            "refreshToken",
            "mutation($r: String) { refreshToken(refreshToken: $r) { token refreshToken } }",
            json!({ "r": got["refreshToken"] }),
            None,
        )
        .await;
    let bob_again = refreshed["token"].as_str().expect("a new token").to_owned();
    let refreshed = app
        .data(
            "refreshToken",
            "mutation($t: String) { refreshToken(token: $t) { token } }",
            json!({ "t": alice }),
            None,
        )
        .await;
    let alice_again = refreshed["token"].as_str().expect("a new token").to_owned();

    // channelCreate, textMessageSend, getMessageList, channelList, userList.
    let channel_id = app.channel(&alice_again, "project", &["bob"]).await;
    let first = app.send(&alice_again, "project", "hello bob").await;
    let second = app.send(&bob_again, &channel_id, "hello alice").await;
    let page = app
        .data(
            "getMessageList",
            MESSAGES,
            json!({ "c": "project" }),
            Some(&bob),
        )
        .await;
    let ids: Vec<&str> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [first.as_str(), second.as_str()]);
    assert_eq!(page["data"][0]["owner"]["username"], "alice");
    assert_eq!(page["data"][1]["type"], "str");
    assert!(page["data"][0]["createAt"]
        .as_str()
        .unwrap()
        .ends_with("+00:00"));
    assert_eq!(
        (page["hasNext"].as_bool(), page["hasPrevious"].as_bool()),
        (Some(false), Some(false))
    );

    let channels = app
        .data("channelList", CHANNELS, json!({}), Some(&bob))
        .await;
    let project = channels["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["channelName"] == "project")
        .unwrap_or_else(|| panic!("project is listed: {channels}"));
    assert_eq!(project["lastMessage"]["message"], "hello alice");
    assert_eq!(project["lastMessage"]["owner"]["username"], "bob");

    let users = app
        .data(
            "userList",
            "{ userList(page: {pageSize: 10}) { count data { username isStaff } } }",
            json!({}),
            Some(&bob),
        )
        .await;
    assert_eq!(users["count"], 3, "admin, alice, bob: {users}");
    assert!(users["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|u| u["username"] == "admin" && u["isStaff"] == true));

    // Members only: carol is not in project.
    let carol = app.signed_up("carol").await;
    let denied = app.send_message(&carol, "project", "let me in").await;
    assert_eq!(denied["statusCode"], 404, "{denied}");
    let missing = app.send_message(&carol, "nowhere", "hi").await;
    assert_eq!(missing["statusCode"], 404, "{missing}");
    // Everything landed in Mattermost itself.
    assert_eq!(standin.post_count("project"), 2);
}

#[tokio::test]
async fn posts_reach_subscribers_once_whether_sent_here_or_in_mattermost() {
    let (app, standin) = spawn_app_on_mattermost(|_| {}).await;
    let alice = app.signed_up("alice").await;
    app.signed_up("bob").await;
    app.channel(&alice, "project", &["bob"]).await;
    let mut ws = subscribe(&app, &alice, "project", 1).await;

    // Through mmsub: published by the API, then seen again by the ingest; delivered once.
    app.send(&alice, "project", "via graphql").await;
    assert_eq!(next_message(&mut ws).await, "via graphql");
    // Directly in Mattermost: only the ingest sees it.
    standin.post_as("bob", "project", "via mattermost");
    assert_eq!(next_message(&mut ws).await, "via mattermost");
    app.send(&alice, "project", "after").await;
    assert_eq!(next_message(&mut ws).await, "after");
    ws.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_dropped_mattermost_websocket_reconnects_and_catches_up_without_duplicates() {
    let (app, mut standin) = spawn_app_on_mattermost(|_| {}).await;
    let alice = app.signed_up("alice").await;
    app.signed_up("bob").await;
    app.channel(&alice, "project", &["bob"]).await;
    let mut ws = subscribe(&app, &alice, "project", 1).await;
    standin.post_as("bob", "project", "before the drop");
    assert_eq!(next_message(&mut ws).await, "before the drop");

    // Mattermost goes away for a moment; posts made meanwhile must not be lost.
    standin.go_down();
    tokio::time::sleep(Duration::from_millis(100)).await;
    standin.post_as("bob", "project", "while down 1");
    standin.post_as("bob", "project", "while down 2");
    standin.come_back().await;
    for want in ["while down 1", "while down 2"] {
        assert_eq!(next_message(&mut ws).await, want);
    }
    standin.post_as("bob", "project", "live again");
    assert_eq!(next_message(&mut ws).await, "live again");
    // The catch-up overlapped "before the drop"; it was not delivered again.
    ws.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn operations_make_a_small_bounded_number_of_mattermost_requests() {
    let (app, standin) = spawn_app_on_mattermost(|_| {}).await;
    let alice = app.signed_up("alice").await;
    for name in ["a1", "a2", "a3"] {
        app.channel(&alice, name, &[]).await;
        app.send(&alice, name, "hi").await;
    }
    standin.take_requests();

    app.data("channelList", CHANNELS, json!({}), Some(&alice))
        .await;
    let first = standin.take_requests();
    // The channels, then each channel's newest post (4 with town-square); authors are cached.
    // Sending cached alice before the post was made, so the ingest, which saw her posts on
    // Mattermost's WebSocket at its own pace, had no request of its own to add here.
    assert!(first.len() <= 1 + 4 + 1, "{first:?}");
    app.data("channelList", CHANNELS, json!({}), Some(&alice))
        .await;
    let again = standin.take_requests();
    assert_eq!(
        again,
        ["GET /users/{user_id}/teams/{team_id}/channels"],
        "nothing changed, one request"
    );

    let posts = [("method", "POST"), ("route", "/posts"), ("status", "2xx")];
    let before = app
        .metrics()
        .await
        .value("mmsub_mattermost_requests_total", &posts);
    app.send(&alice, "a1", "more").await;
    assert_eq!(
        standin.take_requests(),
        [
            "GET /users/{user_id}/teams/{team_id}/channels",
            "POST /posts"
        ]
    );
    let after = app
        .metrics()
        .await
        .value("mmsub_mattermost_requests_total", &posts);
    assert_eq!(
        after - before,
        1.0,
        "one post, counted once by its route template"
    );
    app.data(
        "getMessageList",
        MESSAGES,
        json!({ "c": "a1" }),
        Some(&alice),
    )
    .await;
    let read = standin.take_requests();
    assert_eq!(
        read,
        [
            "GET /users/{user_id}/teams/{team_id}/channels",
            "GET /channels/{channel_id}/posts"
        ],
        "authors cached"
    );
    app.token("alice").await;
    assert_eq!(standin.take_requests(), ["POST /users/login"]);

    // Mattermost's refusal of a wrong password is counted as its 4xx, on the login's route.
    let refused = [
        ("method", "POST"),
        ("route", "/users/login"),
        ("status", "4xx"),
    ];
    let before = app
        .metrics()
        .await
        .value("mmsub_mattermost_requests_total", &refused);
    let wrong = app
        .graphql(
            "mutation { tokenAuth(username: \"alice\", password: \"wrong\") { token } }",
            json!({}),
            None,
        )
        .await;
    assert!(wrong["errors"].is_array(), "{wrong}");
    let after = app
        .metrics()
        .await
        .value("mmsub_mattermost_requests_total", &refused);
    assert_eq!(after - before, 1.0);
}

#[tokio::test]
async fn mattermost_down_or_slow_is_a_clear_error_and_service_resumes() {
    let (app, mut standin) = spawn_app_on_mattermost(|config| {
        if let Some(mm) = config.mattermost.as_mut() {
            mm.limits.request_timeout = Duration::from_millis(400);
        }
    })
    .await;
    let alice = app.signed_up("alice").await;

    standin.slow_down(Duration::from_secs(2));
    let slow = app.send_message(&alice, "town-square", "slow").await;
    assert_eq!(slow["statusCode"], 503, "{slow}");
    assert_text(&slow, "/message", "did not answer within");
    standin.slow_down(Duration::ZERO);

    standin.go_down();
    let down = app.send_message(&alice, "town-square", "anyone?").await;
    assert_eq!(down["statusCode"], 503, "{down}");
    assert_text(&down, "/message", "Mattermost is unreachable");
    let query = app
        .graphql(MESSAGES, json!({ "c": "town-square" }), Some(&alice))
        .await;
    assert_text(&query, "/errors/0/message", "Mattermost is unreachable");
    assert_eq!(
        app.readyz().await["status"],
        "ready",
        "the server itself stays up"
    );

    let scrape = app.metrics().await;
    let ended =
        |status: &str| scrape.total("mmsub_mattermost_requests_total", &[("status", status)]);
    assert!(
        ended("timeout") >= 1.0,
        "the slow answer is counted as a timeout"
    );
    assert!(
        ended("unreachable") >= 1.0,
        "the refused connection as unreachable"
    );

    standin.come_back().await;
    app.send(&alice, "town-square", "back").await;
}

#[tokio::test]
async fn expired_sessions_rate_limits_and_foreign_tokens() {
    let (app, standin) = spawn_app_on_mattermost(|_| {}).await;
    let alice = app.signed_up("alice").await;

    // 429 storm: calls wait out X-Ratelimit-Reset and then succeed.
    standin.rate_limit(2, 1);
    app.send(&alice, "town-square", "patient").await;

    // Every session expires: the admin logs in again by itself (userCreate works); a user's
    // session cannot be renewed without their password, so they are told to log in again.
    standin.expire_sessions();
    app.signed_up("bob").await;
    let expired = app.send_message(&alice, "town-square", "hello?").await;
    assert_eq!(expired["statusCode"], 401, "{expired}");
    assert_text(&expired, "/message", "log in again");
    let fresh = app.token("alice").await;
    app.send(&fresh, "town-square", "logged in again").await;

    // A token without a Mattermost session (e.g. one the original server issued).
    let original = jwt("alice", 600, 0, JWT_SECRET);
    let answer: Value = app.send_message(&original, "town-square", "hi").await;
    assert_eq!(answer["statusCode"], 401, "{answer}");
    assert_text(&answer, "/message", "log in again");
}

#[tokio::test]
async fn pages_larger_than_mattermosts_are_read_in_its_pages_of_200() {
    let (app, standin) = spawn_app_on_mattermost(|_| {}).await;
    let alice = app.signed_up("alice").await;
    app.signed_up("bob").await;
    app.channel(&alice, "project", &["bob"]).await;
    let before = standin.post_count("project");
    for n in 0..450 {
        standin.post_as("bob", "project", &format!("p{n}"));
    }
    // A page's texts, oldest first, and its (hasNext, hasPrevious).
    let page = |number: u32| {
        let query = format!("{{ getMessageList(channelIdentifier: \"project\", page: {{ pageSize: 300, pageNumber: {number} }}) {{ data {{ message }} hasNext hasPrevious }} }}");
        let (app, alice) = (&app, &alice);
        async move {
            let answer = app.graphql(&query, json!({}), Some(alice)).await;
            let list = &answer["data"]["getMessageList"];
            let texts: Vec<String> = list["data"]
                .as_array()
                .unwrap_or_else(|| panic!("a page: {answer}"))
                .iter()
                .map(|m| m["message"].as_str().unwrap().to_owned())
                .collect();
            (
                texts,
                (list["hasNext"].clone(), list["hasPrevious"].clone()),
            )
        }
    };
    let (newest, flags) = page(0).await;
    assert_eq!(newest.len(), 300);
    assert_eq!((newest[0].as_str(), newest[299].as_str()), ("p150", "p449"));
    assert_eq!(flags, (json!(false), json!(true)));
    let (older, flags) = page(1).await;
    assert_eq!(older.len(), 150 + before);
    assert_eq!(older.last().map(String::as_str), Some("p149"));
    assert_eq!(flags, (json!(true), json!(false)));
}

/// The stand-in's outage is a real one: a connection kept alive from before it is closed, and
/// a new one is refused, until it comes back (a Mattermost that went down does not go on
/// answering on old connections, which would hide a client that never reconnects).
#[tokio::test]
async fn the_standin_going_down_closes_kept_alive_connections_and_refuses_new_ones() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut standin =
        mattermost_standin::StandIn::start(mattermost_standin::StandInConfig::default()).await;
    let request = b"GET /api/v4/system/ping HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut kept = tokio::net::TcpStream::connect(standin.addr).await.unwrap();
    kept.write_all(request).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = kept.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 "), "an answer");

    standin.go_down();
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = kept.write_all(request).await;
        kept.read(&mut buf).await
    })
    .await
    .expect("no hang on a closed connection");
    assert!(
        matches!(closed, Ok(0) | Err(_)),
        "the kept-alive connection is closed: {closed:?}"
    );
    assert!(
        tokio::net::TcpStream::connect(standin.addr).await.is_err(),
        "new connections are refused"
    );

    standin.come_back().await;
    let mut again = tokio::net::TcpStream::connect(standin.addr).await.unwrap();
    again.write_all(request).await.unwrap();
    let n = again.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 "), "answers again");
}
