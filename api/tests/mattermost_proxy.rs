//! Every operation of `MattermostAdminProxy` and `MattermostUserProxy`, against the stand-in
//! Mattermost (a real one cannot run here; the stand-in follows the published API and is
//! checked against it by the root crate's `mattermost_spec` test).

use std::time::Duration;

use mattermost_standin::{StandIn, StandInConfig};
use mmsub_api::backend::mattermost::{
    MattermostAdminProxy, MattermostError, MattermostUserProxy, RestClient, RestLimits,
};
use mmsub_api::backend::NewUser;

const PASSWORD: &str = "Str0ng!Pass";

async fn admin(standin: &StandIn) -> MattermostAdminProxy {
    let api = RestClient::new(&standin.url(), RestLimits::default()).unwrap();
    let c = &standin.config;
    MattermostAdminProxy::login(api, &c.admin_username, &c.admin_password)
        .await
        .unwrap()
}

fn new_user(name: &str) -> NewUser {
    NewUser {
        username: name.into(),
        email: format!("{name}@example.com"),
        password: PASSWORD.into(),
    }
}

#[tokio::test]
async fn admin_operations() {
    let standin = StandIn::start(StandInConfig::default()).await;
    let admin = admin(&standin).await;

    // create_user validates like the original before asking Mattermost.
    let weak = admin
        .create_user(&NewUser {
            password: "short".into(),
            ..new_user("alice")
        })
        .await;
    assert!(
        matches!(
            weak,
            Err(MattermostError::Api {
                status_code: 400,
                ..
            })
        ),
        "{weak:?}"
    );
    let alice = admin.create_user(&new_user("alice")).await.unwrap();
    assert_eq!(alice.username, "alice");
    let again = admin.create_user(&new_user("alice")).await.unwrap_err();
    assert!(again.to_string().contains("already exists"), "{again}");

    // Teams: list, create-and-join, add a user (by name or id), remove.
    let teams = admin.list_all_teams().await.unwrap();
    assert_eq!(teams.len(), 1);
    assert!(admin.create_join_team("bad_name").await.is_err());
    let crew = admin.create_join_team("crew").await.unwrap();
    admin.add_user_to_team("alice", "crew").await.unwrap();
    admin.add_user_to_team(&alice.id, &crew.id).await.unwrap();
    admin.add_user_to_team("alice", "main").await.unwrap();

    // Channels: create-and-join, list public, add a user, remove.
    let general = admin.create_join_channel("general", "main").await.unwrap();
    let public = admin.list_all_public_channels("main").await.unwrap();
    assert!(public.iter().any(|c| c.id == general.id));
    admin
        .add_user_to_channel("general", "alice", "main")
        .await
        .unwrap();
    let user = MattermostUserProxy::login(admin.session().rest().clone(), "alice", PASSWORD)
        .await
        .unwrap();
    let team = user.team("main").await.unwrap();
    assert!(user
        .own_channel(&team.id, "general")
        .await
        .unwrap()
        .is_some());
    admin.remove_channel(&general.id, "main").await.unwrap();
    assert!(user
        .own_channel(&team.id, "general")
        .await
        .unwrap()
        .is_none());
    admin.remove_team("crew").await.unwrap();
    assert_eq!(admin.list_all_teams().await.unwrap().len(), 1);

    // Accounts: deactivate (login fails), activate (works again), remove.
    admin.deactivate_user("alice").await.unwrap();
    let api = admin.session().rest().clone();
    assert!(MattermostUserProxy::login(api.clone(), "alice", PASSWORD)
        .await
        .is_err());
    admin.activate_user(&alice.id).await.unwrap();
    MattermostUserProxy::login(api, "alice", PASSWORD)
        .await
        .unwrap();
    admin.remove_user("alice").await.unwrap();
    assert!(admin.user("alice").await.unwrap_err().is_status(404));
}

#[tokio::test]
async fn user_operations() {
    let standin = StandIn::start(StandInConfig::default()).await;
    let admin = admin(&standin).await;
    for name in ["alice", "bob"] {
        let created = admin.create_user(&new_user(name)).await.unwrap();
        admin.add_user_to_team(&created.id, "main").await.unwrap();
    }
    let api = admin.session().rest().clone();
    let alice = MattermostUserProxy::login(api.clone(), "alice", PASSWORD)
        .await
        .unwrap();
    let bob = MattermostUserProxy::login(api, "bob@example.com", PASSWORD)
        .await
        .unwrap();
    assert_eq!(bob.me().username, "bob");

    let users = alice.list_users(0, 10).await.unwrap();
    assert_eq!(users.len(), 3);
    assert_eq!(alice.user_count().await.unwrap(), 3);
    let by_id = alice.users_by_ids(&[bob.me().id.clone()]).await.unwrap();
    assert_eq!(by_id[0].username, "bob");
    let by_name = alice.users_by_usernames(&["bob".into()]).await.unwrap();
    assert_eq!(by_name[0].id, bob.me().id);

    let teams = alice.list_own_teams().await.unwrap();
    assert_eq!(teams.len(), 1);
    let team = &teams[0].id;

    // Channels by name or id; join, send, read, leave.
    let room = admin.create_join_channel("room", "main").await.unwrap();
    alice.join_channel(team, "room").await.unwrap();
    bob.join_channel(team, &room.id).await.unwrap();
    let first = alice.send_message(&room.id, "one").await.unwrap();
    let second = bob.send_message(&room.id, "two").await.unwrap();
    let third = alice.send_message(&room.id, "three").await.unwrap();

    let newest = alice.get_messages(&room.id, 0, 2).await.unwrap();
    assert_eq!(newest.order, [third.id.clone(), second.id.clone()]);
    assert!(newest.next_post_id.is_empty());
    assert_eq!(newest.prev_post_id, first.id);
    let oldest = alice
        .get_messages(&room.id, 1, 2)
        .await
        .unwrap()
        .oldest_first();
    assert_eq!(
        oldest
            .iter()
            .map(|p| p.message.as_str())
            .collect::<Vec<_>>(),
        ["one"]
    );
    assert_eq!(
        alice.last_post(&room.id).await.unwrap().unwrap().id,
        third.id
    );
    let after = alice
        .posts_after(&room.id, &first.id, 10)
        .await
        .unwrap()
        .oldest_first();
    assert_eq!(
        after.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
        [second.id.as_str(), third.id.as_str()]
    );
    let since = alice
        .posts_since(&room.id, second.create_at)
        .await
        .unwrap()
        .oldest_first();
    assert_eq!(since.len(), 2);

    // Own channels, paged, each with its last message.
    let (page, has_next) = alice.list_own_channels_page(team, 1, 2).await.unwrap();
    let names: Vec<&str> = page.iter().map(|(c, _)| c.name.as_str()).collect();
    assert_eq!(names, ["room", "town-square"]);
    assert!(!has_next);
    assert_eq!(page[0].1.as_ref().unwrap().message, "three");

    bob.leave_channel(team, "room").await.unwrap();
    assert!(bob.own_channel(team, "room").await.unwrap().is_none());
    assert!(bob
        .send_message(&room.id, "let me back")
        .await
        .unwrap_err()
        .is_status(403));
}

#[tokio::test]
async fn sessions_rate_limits_and_timeouts() {
    let standin = StandIn::start(StandInConfig::default()).await;
    let admin = admin(&standin).await;

    // A proxy with credentials logs in again once after a 401.
    standin.expire_sessions();
    assert_eq!(admin.list_all_teams().await.unwrap().len(), 1);

    // 429: waits until X-Ratelimit-Reset, then succeeds; beyond the allowed wait it fails.
    standin.rate_limit(1, 1);
    let started = std::time::Instant::now();
    admin.list_all_teams().await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(900));
    let limits = RestLimits {
        max_rate_limit_wait: Duration::from_secs(1),
        ..RestLimits::default()
    };
    let impatient = RestClient::new(&standin.url(), limits).unwrap();
    standin.rate_limit(1, 30);
    let refused = impatient
        .send(
            &mmsub_api::backend::mattermost::rest::Call::get("/teams"),
            None,
        )
        .await;
    assert!(
        matches!(refused, Err(MattermostError::RateLimited(_))),
        "{:?}",
        refused.err()
    );
    standin.rate_limit(0, 0);

    // Every call has a timeout.
    let limits = RestLimits {
        request_timeout: Duration::from_millis(200),
        ..RestLimits::default()
    };
    let hasty = RestClient::new(&standin.url(), limits).unwrap();
    standin.slow_down(Duration::from_secs(1));
    let late = MattermostAdminProxy::login(hasty, "admin", &standin.config.admin_password).await;
    assert!(matches!(late, Err(MattermostError::Timeout(_))), "{late:?}");
}
