//! The embedded store's unit tests: its SQL, its writer and its files.

use super::*;

fn new_user(name: &str) -> NewUser {
    NewUser {
        username: name.into(),
        email: format!("{name}@example.com"),
        password: "Str0ng!Pass".into(),
    }
}

#[cfg(unix)]
#[tokio::test]
async fn the_data_directory_and_database_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("data");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let store = EmbeddedStore::open(&dir, "main").unwrap();
    store.create_user(new_user("alice")).await.unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
}

#[tokio::test]
async fn concurrent_sends_commit_together_and_keep_their_order_in_history() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(dir.path(), "main").unwrap());
    store.create_user(new_user("alice")).await.unwrap();
    let sends = (0..50).map(|i| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .send_message(&Actor::named("alice"), DEFAULT_CHANNEL, &format!("m{i}"))
                .await
        })
    });
    let mut ids = Vec::new();
    for send in sends {
        ids.push(send.await.unwrap().unwrap().post.id);
    }
    let page = store
        .messages(
            &Actor::named("alice"),
            DEFAULT_CHANNEL,
            PageRequest {
                size: 100,
                number: 0,
                max_bytes: u64::MAX,
            },
        )
        .await
        .unwrap();
    // 50 messages plus alice's own "joined the team" post.
    assert_eq!(page.posts.len(), 51);
    let mut stored: Vec<_> = page.posts.iter().skip(1).map(|p| p.id.clone()).collect();
    stored.sort();
    ids.sort();
    assert_eq!(stored, ids);
}

#[tokio::test]
async fn channel_lists_carry_each_channels_newest_post_or_none() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path(), "main").unwrap();
    store.create_user(new_user("erin")).await.unwrap();
    store
        .create_channel(&Actor::named("erin"), "quiet", &[])
        .await
        .unwrap();
    store
        .create_channel(&Actor::named("erin"), "busy", &[])
        .await
        .unwrap();
    store
        .send_message(&Actor::named("erin"), "busy", "first")
        .await
        .unwrap();
    let newest = store
        .send_message(&Actor::named("erin"), "busy", "second")
        .await
        .unwrap();
    let page = store
        .member_channels(
            &Actor::named("erin"),
            PageRequest {
                size: 10,
                number: 0,
                max_bytes: u64::MAX,
            },
        )
        .await
        .unwrap();
    let summary: Vec<_> = page
        .channels
        .iter()
        .map(|c| {
            (
                c.channel.name.as_str(),
                c.last_message.as_ref().map(|p| p.id.as_str()),
            )
        })
        .collect();
    let welcome = summary[2].1.expect("town-square has the join post");
    assert_eq!(
        summary,
        [
            ("busy", Some(newest.post.id.as_str())),
            ("quiet", None),
            ("town-square", Some(welcome))
        ]
    );
    assert_eq!(page.channels[0].channel.display_name, "busy");
    assert_eq!(
        page.channels[0]
            .last_message
            .as_ref()
            .unwrap()
            .author
            .username,
        "erin"
    );
}

#[tokio::test]
async fn a_failed_job_does_not_spoil_its_batch() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(dir.path(), "main").unwrap());
    let (a, b) = tokio::join!(
        store.create_user(new_user("carol")),
        store.create_user(new_user("carol"))
    );
    assert!(
        a.is_ok() != b.is_ok(),
        "exactly one of two identical sign-ups wins"
    );
    let stored = store
        .read(|conn, _| user_by_name(conn, "carol"))
        .await
        .unwrap();
    assert!(stored.is_some());
}

#[tokio::test]
async fn refresh_tokens_are_single_use_and_stored_hashed() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path(), "main").unwrap();
    let dave = store.create_user(new_user("dave")).await.unwrap().user;
    let login = Login {
        user: dave,
        credential: None,
    };
    let token = store
        .issue_refresh_token(&login, Duration::from_secs(60))
        .await
        .unwrap();
    let raw = std::fs::read(store.database_path()).unwrap_or_default();
    assert!(!raw.windows(token.len()).any(|w| w == token.as_bytes()));
    assert_eq!(
        store
            .redeem_refresh_token(&token)
            .await
            .unwrap()
            .unwrap()
            .user
            .username,
        "dave"
    );
    assert!(store.redeem_refresh_token(&token).await.unwrap().is_none());
}
