//! The stand-in's data ([`Store`]) and what it answers with: an [`Answer`], or a [`Failure`]
//! with Mattermost's status code and error id. The routes that read and change it are in
//! `routes.rs`.

use std::collections::{HashMap, HashSet};

use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::records::now;
pub use crate::records::{new_id, ChannelRec, PostRec, TeamRec, UserRec};
use crate::{shapes, StandInConfig};

/// A WebSocket event for the members of a channel.
#[derive(Clone, Debug)]
pub struct Event {
    pub channel_id: String,
    pub body: Value,
}

#[derive(Default)]
pub struct Store {
    pub users: Vec<UserRec>,
    pub sessions: HashMap<String, String>,
    pub teams: Vec<TeamRec>,
    pub team_members: HashSet<(String, String)>,
    pub channels: Vec<ChannelRec>,
    pub channel_members: HashSet<(String, String)>,
    /// In creation order.
    pub posts: Vec<PostRec>,
    last_create_at: i64,
}

pub struct Req<'a> {
    pub method: &'a str,
    pub template: &'static str,
    pub params: &'a HashMap<&'static str, String>,
    pub query: &'a HashMap<String, String>,
    pub body: &'a Value,
    /// The user id of the session, if the request carried a valid one.
    pub caller: Option<&'a str>,
}

pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
    pub token: Option<String>,
    pub events: Vec<Event>,
}

impl Answer {
    pub(crate) fn ok(body: Value) -> Self {
        Self {
            status: StatusCode::OK,
            body,
            token: None,
            events: Vec::new(),
        }
    }
    pub(crate) fn created(body: Value) -> Self {
        Self {
            status: StatusCode::CREATED,
            ..Self::ok(body)
        }
    }
}

#[derive(Debug)]
pub struct Failure {
    pub status: StatusCode,
    pub id: &'static str,
    pub message: String,
}

pub(crate) fn fail(status: StatusCode, id: &'static str, message: impl Into<String>) -> Failure {
    Failure {
        status,
        id,
        message: message.into(),
    }
}

pub(crate) fn not_found(what: &str) -> Failure {
    fail(
        StatusCode::NOT_FOUND,
        "app.store.get.missing.app_error",
        format!("Unable to find the existing {what}."),
    )
}

pub(crate) fn forbidden() -> Failure {
    fail(
        StatusCode::FORBIDDEN,
        "api.context.permissions.app_error",
        "You do not have the appropriate permissions.",
    )
}

pub(crate) fn bad_param(name: &str) -> Failure {
    fail(
        StatusCode::BAD_REQUEST,
        "api.context.invalid_body_param.app_error",
        format!("Invalid or missing {name} in request body."),
    )
}

pub(crate) type Outcome = Result<Answer, Failure>;

impl Store {
    pub fn new(config: &StandInConfig) -> Self {
        let mut store = Store::default();
        let admin = store
            .create_user(
                &config.admin_username,
                &format!("{}@example.com", config.admin_username),
                &config.admin_password,
                "system_user system_admin",
            )
            .expect("fresh store");
        store.create_team(&config.team, &admin);
        store
    }

    pub fn user_by_name(&self, name: &str) -> Option<&UserRec> {
        self.users.iter().find(|u| u.username == name)
    }

    pub(crate) fn user(&self, id: &str) -> Option<&UserRec> {
        self.users.iter().find(|u| u.id == id)
    }

    pub(crate) fn is_admin(&self, id: &str) -> bool {
        self.user(id)
            .is_some_and(|u| u.roles.split_whitespace().any(|r| r == "system_admin"))
    }

    pub fn is_member(&self, channel_id: &str, user_id: &str) -> bool {
        self.channel_members
            .contains(&(channel_id.to_owned(), user_id.to_owned()))
    }

    pub fn create_user(
        &mut self,
        username: &str,
        email: &str,
        password: &str,
        roles: &str,
    ) -> Result<String, Failure> {
        if self.user_by_name(username).is_some() {
            return Err(fail(
                StatusCode::BAD_REQUEST,
                "app.user.save.username_exists.app_error",
                "An account with that username already exists.",
            ));
        }
        if self.users.iter().any(|u| u.email == email) {
            return Err(fail(
                StatusCode::BAD_REQUEST,
                "app.user.save.email_exists.app_error",
                "An account with that email already exists.",
            ));
        }
        let id = new_id();
        self.users.push(UserRec {
            id: id.clone(),
            username: username.to_owned(),
            email: email.to_owned(),
            password: password.to_owned(),
            roles: roles.to_owned(),
            create_at: now(),
            delete_at: 0,
        });
        Ok(id)
    }

    pub(crate) fn create_team(&mut self, name: &str, creator: &str) -> String {
        let id = new_id();
        self.teams.push(TeamRec {
            id: id.clone(),
            name: name.to_owned(),
            display_name: name.to_owned(),
            create_at: now(),
            delete_at: 0,
        });
        for default in ["town-square", "off-topic"] {
            self.create_channel(&id, default, creator);
        }
        self.join_team(&id, creator);
        id
    }

    pub(crate) fn create_channel(&mut self, team_id: &str, name: &str, creator: &str) -> String {
        let id = new_id();
        self.channels.push(ChannelRec {
            id: id.clone(),
            team_id: team_id.to_owned(),
            name: name.to_owned(),
            display_name: name.to_owned(),
            channel_type: "O".into(),
            creator_id: creator.to_owned(),
            create_at: now(),
            delete_at: 0,
            last_post_at: 0,
            total_msg_count: 0,
        });
        self.channel_members
            .insert((id.clone(), creator.to_owned()));
        id
    }

    /// Adds the user to the team and its town-square, where Mattermost posts the join.
    pub fn join_team(&mut self, team_id: &str, user_id: &str) -> Vec<Event> {
        if !self
            .team_members
            .insert((team_id.to_owned(), user_id.to_owned()))
        {
            return Vec::new();
        }
        let square = self
            .channels
            .iter()
            .find(|c| c.team_id == team_id && c.name == "town-square")
            .map(|c| c.id.clone());
        let Some(square) = square else {
            return Vec::new();
        };
        self.channel_members
            .insert((square.clone(), user_id.to_owned()));
        let username = self
            .user(user_id)
            .map(|u| u.username.clone())
            .unwrap_or_default();
        let (_, event) = self.create_post(
            &square,
            user_id,
            &format!("{username} joined the team."),
            "system_join_team",
        );
        vec![event]
    }

    /// Stores a post and returns its id and the `posted` event.
    pub fn create_post(
        &mut self,
        channel_id: &str,
        user_id: &str,
        message: &str,
        post_type: &str,
    ) -> (String, Event) {
        // Strictly increasing, as Mattermost's millisecond clock is in practice per channel.
        let create_at = now().max(self.last_create_at + 1);
        self.last_create_at = create_at;
        let post = PostRec {
            id: new_id(),
            channel_id: channel_id.to_owned(),
            user_id: user_id.to_owned(),
            message: message.to_owned(),
            post_type: post_type.to_owned(),
            create_at,
            delete_at: 0,
            update_at: create_at,
            edit_at: 0,
        };
        let channel = self
            .channels
            .iter_mut()
            .find(|c| c.id == channel_id)
            .expect("posting to a known channel");
        channel.last_post_at = create_at;
        channel.total_msg_count += 1;
        let sender = self
            .user(user_id)
            .map(|u| u.username.clone())
            .unwrap_or_default();
        let channel = self
            .channels
            .iter()
            .find(|c| c.id == channel_id)
            .expect("known");
        let body = json!({
            "event": "posted",
            "data": {
                "channel_display_name": channel.display_name,
                "channel_name": channel.name,
                "channel_type": channel.channel_type,
                // Mattermost sends the post as a JSON-encoded string.
                "post": shapes::post(&post).to_string(),
                "sender_name": format!("@{sender}"),
                "team_id": channel.team_id,
            },
            "broadcast": { "omit_users": null, "user_id": "", "channel_id": channel_id, "team_id": "" },
        });
        let id = post.id.clone();
        self.posts.push(post);
        (
            id,
            Event {
                channel_id: channel_id.to_owned(),
                body,
            },
        )
    }

    pub(crate) fn live_channel(&self, id: &str) -> Result<&ChannelRec, Failure> {
        self.channels
            .iter()
            .find(|c| c.id == id && c.delete_at == 0)
            .ok_or_else(|| not_found("channel"))
    }

    pub(crate) fn team(&self, id: &str) -> Result<&TeamRec, Failure> {
        self.teams
            .iter()
            .find(|t| t.id == id && t.delete_at == 0)
            .ok_or_else(|| not_found("team"))
    }

    /// Edits (`Some(text)`) or deletes (`None`) a post as Mattermost's own clients do, and
    /// returns the `post_edited` / `post_deleted` event (`data.post` a JSON string, as for
    /// `posted`).
    pub fn change_post(&mut self, post_id: &str, text: Option<&str>) -> Event {
        let at = now().max(
            self.posts
                .iter()
                .find(|p| p.id == post_id)
                .map_or(0, |p| p.update_at + 1),
        );
        let post = self
            .posts
            .iter_mut()
            .find(|p| p.id == post_id && p.delete_at == 0)
            .expect("changing a live post");
        post.update_at = at;
        let event = match text {
            Some(text) => {
                text.clone_into(&mut post.message);
                post.edit_at = at;
                "post_edited"
            }
            None => {
                post.delete_at = at;
                "post_deleted"
            }
        };
        Event {
            channel_id: post.channel_id.clone(),
            body: json!({
                "event": event,
                "data": { "post": shapes::post(post).to_string() },
                "broadcast": { "omit_users": null, "user_id": "", "channel_id": post.channel_id, "team_id": "" },
            }),
        }
    }

    /// Posts of a channel, newest first, without deleted ones.
    pub(crate) fn channel_posts(&self, channel_id: &str) -> Vec<&PostRec> {
        self.posts
            .iter()
            .rev()
            .filter(|p| p.channel_id == channel_id && p.delete_at == 0)
            .collect()
    }
}
