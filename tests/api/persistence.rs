//! The embedded store and the generated secret survive a restart.

use serde_json::json;

use crate::helpers::spawn_app_with;

#[tokio::test]
async fn users_channels_messages_and_tokens_survive_a_restart() {
    // No explicit secret: the server generates one into its data dir and must reuse it.
    let app = spawn_app_with(|c| c.jwt_secret = None).await;
    let alice = app.signed_up("alice").await;
    app.signed_up("bob").await;
    app.channel(&alice, "kept", &["bob"]).await;
    let texts: Vec<String> = (0..5).map(|i| format!("m{i}")).collect();
    let ids: Vec<_> =
        futures::future::join_all(texts.iter().map(|t| app.send(&alice, "kept", t))).await;

    let app = app.restart().await;
    let history = app
        .graphql(
            "{ getMessageList(channelIdentifier: \"kept\") { data { id } } }",
            json!({}),
            Some(&alice),
        )
        .await;
    let mut stored: Vec<_> = history["data"]["getMessageList"]["data"]
        .as_array()
        .unwrap_or_else(|| panic!("the old token still works: {history}"))
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    let mut sent = ids.clone();
    stored.sort();
    sent.sort();
    assert_eq!(stored, sent);
    app.token("bob").await;
    let again = app
        .user_create("alice", "new@example.com", crate::helpers::PASSWORD)
        .await;
    assert_eq!(again["statusCode"], 400, "usernames stay taken");
}
