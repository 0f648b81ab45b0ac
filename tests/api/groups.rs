//! Subscription groups, seen from outside: subscribers that asked for the same payload share
//! one rendering (visible as `subscriptionGroups` in /readyz), and each still gets exactly the
//! shape, id and protocol it asked for.

use serde_json::json;

use crate::helpers::{spawn_app, NEW_MESSAGE_SUBSCRIPTION};

const SAME_SELECTION_SPELLED_DIFFERENTLY: &str = "# the same payload as NEW_MESSAGE_SUBSCRIPTION
subscription OnRoom { onNewChatMessage(channelIdentifier: \"room\") {
  channelIdentifier, message { id, message, type, createAt, owner { username } } } }";

const OTHER_SELECTION: &str = "subscription($c: String!) {
  text: onNewChatMessage(channelIdentifier: $c) { message { message } }
}";

#[tokio::test]
async fn equal_selections_share_a_group_and_every_subscriber_gets_its_own_shape() {
    let app = spawn_app().await;
    let alice = app.signed_up("alice").await;
    app.channel(&alice, "room", &[]).await;

    let mut a = app.transport_ws(&alice).await;
    a.send_json(json!({ "id": "a", "type": "subscribe", "payload": { "query": NEW_MESSAGE_SUBSCRIPTION, "variables": { "c": "room" } } })).await;
    let mut b = app.ws("graphql-ws").await;
    b.send_json(json!({ "type": "connection_init", "payload": { "token": alice } }))
        .await;
    assert_eq!(b.recv_json().await["type"], "connection_ack");
    assert_eq!(b.recv_json().await["type"], "ka");
    b.send_json(json!({ "id": "b", "type": "start", "payload": { "query": SAME_SELECTION_SPELLED_DIFFERENTLY } })).await;
    let mut c = app.transport_ws(&alice).await;
    c.send_json(json!({ "id": "c", "type": "subscribe", "payload": { "query": OTHER_SELECTION, "variables": { "c": "room" } } })).await;
    app.wait_for_subscriptions(3).await;
    assert_eq!(app.readyz().await["subscriptionGroups"], 2);

    let sent = app.send(&alice, "room", "hello").await;
    let from_a = a.recv_json().await;
    let from_b = b.recv_data().await;
    assert_eq!(
        (&from_a["type"], &from_a["id"]),
        (&json!("next"), &json!("a"))
    );
    assert_eq!(
        (&from_b["type"], &from_b["id"]),
        (&json!("data"), &json!("b"))
    );
    assert_eq!(
        from_a["payload"], from_b["payload"],
        "one rendering, two protocols"
    );
    assert_eq!(
        from_a["payload"]["data"]["onNewChatMessage"]["message"]["id"],
        sent.as_str()
    );
    assert_eq!(
        c.recv_json().await,
        json!({ "id": "c", "type": "next", "payload": { "data": { "text": { "message": { "message": "hello" } } } } })
    );

    // Leaving a group does not disturb the others; the last member to leave ends it.
    a.send_json(json!({ "id": "a", "type": "complete" })).await;
    app.wait_for_subscriptions(2).await;
    app.send(&alice, "room", "second").await;
    let from_b = b.recv_data().await;
    assert_eq!(
        from_b["payload"]["data"]["onNewChatMessage"]["message"]["message"],
        "second"
    );
    assert_eq!(
        c.recv_json().await["payload"]["data"]["text"]["message"]["message"],
        "second"
    );
    b.send_json(json!({ "id": "b", "type": "stop" })).await;
    assert_eq!(b.recv_json().await["type"], "complete");
    app.wait_for_subscriptions(1).await;
    assert_eq!(app.readyz().await["subscriptionGroups"], 1);
}

#[tokio::test]
async fn a_subscription_must_select_exactly_one_root_field() {
    let app = spawn_app().await;
    let alice = app.signed_up("alice").await;
    let mut ws = app.transport_ws(&alice).await;
    ws.send_json(json!({ "id": "x", "type": "subscribe", "payload": { "query": "subscription { a: onNewChatMessage(channelIdentifier: \"town-square\") { channelIdentifier } b: onNewChatMessage(channelIdentifier: \"town-square\") { channelIdentifier } }" } })).await;
    let error = ws.recv_json().await;
    assert_eq!(
        (&error["type"], &error["id"]),
        (&json!("error"), &json!("x"))
    );
    assert_eq!(
        error["payload"][0]["message"],
        "A subscription operation must select exactly one root field."
    );
}

/// Resuming while messages keep arriving: the replay and the live stream meet without a gap
/// and without a repeat.
#[tokio::test]
async fn a_resume_during_a_burst_sees_every_message_once_in_order() {
    let app = spawn_app().await;
    let alice = app.signed_up("alice").await;
    app.channel(&alice, "busy", &[]).await;
    let mut sent = Vec::new();
    for i in 0..10 {
        sent.push(app.send(&alice, "busy", &format!("m{i}")).await);
    }
    let mut ws = app.transport_ws(&alice).await;
    let burst = async {
        let mut ids = Vec::new();
        for i in 10..40 {
            ids.push(app.send(&alice, "busy", &format!("m{i}")).await);
        }
        ids
    };
    let resume = ws.send_json(json!({ "id": "r", "type": "subscribe", "payload": { "query": "subscription($after: String) { onNewChatMessage(channelIdentifier: \"busy\", afterMessageId: $after) { message { id } } }", "variables": { "after": sent[0] } } }));
    let (burst, ()) = tokio::join!(burst, resume);
    sent.extend(burst);
    for expected in &sent[1..] {
        let next = ws.recv_json().await;
        assert_eq!(
            next["payload"]["data"]["onNewChatMessage"]["message"]["id"],
            expected.as_str(),
            "{next}"
        );
    }
    ws.expect_silence(std::time::Duration::from_millis(200))
        .await;
}
