//! The JSON the stand-in answers with, one function per object of `definitions.yaml`. Field
//! names are the spec's; [`shapes`] hands one of each to the test that checks them.

use serde_json::{json, Value};

use crate::records::{ChannelRec, PostRec, TeamRec, UserRec};

pub fn user(u: &UserRec) -> Value {
    json!({
        "id": u.id,
        "create_at": u.create_at,
        "update_at": u.create_at,
        "delete_at": u.delete_at,
        "username": u.username,
        "first_name": "",
        "last_name": "",
        "nickname": "",
        "email": u.email,
        "email_verified": true,
        "auth_service": "",
        "roles": u.roles,
        "locale": "en",
        "timezone": { "useAutomaticTimezone": "true", "automaticTimezone": "", "manualTimezone": "" },
    })
}

pub fn team(t: &TeamRec) -> Value {
    json!({
        "id": t.id,
        "create_at": t.create_at,
        "update_at": t.create_at,
        "delete_at": t.delete_at,
        "display_name": t.display_name,
        "name": t.name,
        "description": "",
        "email": "",
        "type": "O",
        "allowed_domains": "",
        "invite_id": "",
        "allow_open_invite": true,
    })
}

pub fn channel(c: &ChannelRec) -> Value {
    json!({
        "id": c.id,
        "create_at": c.create_at,
        "update_at": c.create_at,
        "delete_at": c.delete_at,
        "team_id": c.team_id,
        "type": c.channel_type,
        "display_name": c.display_name,
        "name": c.name,
        "header": "",
        "purpose": "",
        "last_post_at": c.last_post_at,
        "total_msg_count": c.total_msg_count,
        "extra_update_at": 0,
        "creator_id": c.creator_id,
    })
}

pub fn post(p: &PostRec) -> Value {
    json!({
        "id": p.id,
        "create_at": p.create_at,
        "update_at": p.update_at,
        "delete_at": p.delete_at,
        "edit_at": p.edit_at,
        "user_id": p.user_id,
        "channel_id": p.channel_id,
        "root_id": "",
        "original_id": "",
        "message": p.message,
        "type": p.post_type,
        "props": {},
        "hashtag": "",
        "file_ids": [],
        "pending_post_id": "",
        "metadata": {},
    })
}

pub fn post_list(posts: &[&PostRec], next_post_id: &str, prev_post_id: &str) -> Value {
    json!({
        "order": posts.iter().map(|p| p.id.clone()).collect::<Vec<_>>(),
        "posts": posts.iter().map(|p| (p.id.clone(), post(p))).collect::<serde_json::Map<_, _>>(),
        "next_post_id": next_post_id,
        "prev_post_id": prev_post_id,
    })
}

pub fn channel_member(channel_id: &str, user_id: &str) -> Value {
    json!({
        "channel_id": channel_id,
        "user_id": user_id,
        "roles": "channel_user",
        "last_viewed_at": 0,
        "msg_count": 0,
        "mention_count": 0,
        "notify_props": {},
        "last_update_at": 0,
    })
}

pub fn team_member(team_id: &str, user_id: &str) -> Value {
    json!({ "team_id": team_id, "user_id": user_id, "roles": "team_user", "delete_at": 0, "scheme_user": true, "scheme_admin": false })
}

pub fn status_ok() -> Value {
    json!({ "status": "OK" })
}

pub fn users_stats(total: usize) -> Value {
    json!({ "total_users_count": total })
}

/// One of each object the stand-in serves, by its name in `definitions.yaml`.
pub fn shapes() -> Vec<(&'static str, Value)> {
    let u = UserRec {
        id: "u".into(),
        username: "alice".into(),
        email: "a@example.com".into(),
        password: String::new(),
        roles: "system_user".into(),
        create_at: 1,
        delete_at: 0,
    };
    let t = TeamRec {
        id: "t".into(),
        name: "main".into(),
        display_name: "main".into(),
        create_at: 1,
        delete_at: 0,
    };
    let c = ChannelRec {
        id: "c".into(),
        team_id: "t".into(),
        name: "general".into(),
        display_name: "general".into(),
        channel_type: "O".into(),
        creator_id: "u".into(),
        create_at: 1,
        delete_at: 0,
        last_post_at: 1,
        total_msg_count: 1,
    };
    let p = PostRec {
        id: "p".into(),
        channel_id: "c".into(),
        user_id: "u".into(),
        message: "hi".into(),
        post_type: String::new(),
        create_at: 1,
        delete_at: 0,
        update_at: 1,
        edit_at: 0,
    };
    vec![
        ("User", user(&u)),
        ("Team", team(&t)),
        ("Channel", channel(&c)),
        ("Post", post(&p)),
        ("PostList", post_list(&[&p], "", "")),
        ("ChannelMember", channel_member("c", "u")),
        ("TeamMember", team_member("t", "u")),
        ("StatusOK", status_ok()),
        ("UsersStats", users_stats(1)),
        (
            "AppError",
            serde_json::json!({"id": "x", "message": "m", "detailed_error": "", "request_id": "r", "status_code": 400}),
        ),
    ]
}
