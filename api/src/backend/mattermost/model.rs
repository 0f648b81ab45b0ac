//! The parts of Mattermost's JSON objects (`definitions.yaml` in the API reference) that this
//! server reads. Unknown fields are ignored; missing optional ones default.

use std::collections::HashMap;

use serde::Deserialize;

use crate::backend::{Channel, Post, User};

/// A user as Mattermost's `User` schema describes it (the fields mmsub reads).
#[derive(Debug, Clone, Deserialize)]
pub struct MmUser {
    /// The user's id.
    pub id: String,
    /// The user's name.
    pub username: String,
    /// The user's email address.
    #[serde(default)]
    pub email: String,
    /// Space-separated role names; `system_admin` is staff.
    #[serde(default)]
    pub roles: String,
    /// Non-zero when the account is deactivated.
    #[serde(default)]
    pub delete_at: i64,
}

impl MmUser {
    /// The user as the contract shows users (`isStaff` from `system_admin`).
    pub fn to_user(&self) -> User {
        User {
            id: self.id.clone(),
            username: self.username.clone(),
            email: self.email.clone(),
            is_staff: self.roles.split_whitespace().any(|r| r == "system_admin"),
        }
    }
}

/// A team as Mattermost's `Team` schema describes it.
#[derive(Debug, Clone, Deserialize)]
pub struct MmTeam {
    /// The team's id.
    pub id: String,
    /// The team's name (its URL part).
    pub name: String,
    /// The team's display name.
    #[serde(default)]
    pub display_name: String,
}

/// A channel as Mattermost's `Channel` schema describes it.
#[derive(Debug, Clone, Deserialize)]
pub struct MmChannel {
    /// The channel's id.
    pub id: String,
    /// The channel's name (its URL part).
    pub name: String,
    /// The channel's display name.
    #[serde(default)]
    pub display_name: String,
    /// The team it belongs to.
    #[serde(default)]
    pub team_id: String,
    /// `O` open, `P` private, `D` direct, `G` group.
    #[serde(default, rename = "type")]
    pub channel_type: String,
    /// Time of the newest post, in milliseconds: changes exactly when a post is added.
    #[serde(default)]
    pub last_post_at: i64,
    /// When it was archived (milliseconds; 0 when live).
    #[serde(default)]
    pub delete_at: i64,
}

impl MmChannel {
    /// The channel as the backend trait sees channels.
    pub fn to_channel(&self) -> Channel {
        Channel {
            id: self.id.clone(),
            name: self.name.clone(),
            display_name: self.display_name.clone(),
        }
    }
}

/// A post as Mattermost's `Post` schema describes it.
#[derive(Debug, Clone, Deserialize)]
pub struct MmPost {
    /// The post's id.
    pub id: String,
    /// Its channel's id.
    pub channel_id: String,
    /// Its author's id.
    pub user_id: String,
    /// The text.
    #[serde(default)]
    pub message: String,
    /// When it was posted (milliseconds).
    pub create_at: i64,
    /// When it was deleted (milliseconds; 0 when not).
    #[serde(default)]
    pub delete_at: i64,
    /// Mattermost's post type (empty for plain text).
    #[serde(default, rename = "type")]
    pub post_type: String,
    /// When it was last changed (milliseconds; an edit or a deletion moves it).
    #[serde(default)]
    pub update_at: i64,
}

impl MmPost {
    /// The post with its author resolved.
    pub fn to_post(&self, author: User) -> Post {
        Post {
            id: self.id.clone(),
            channel_id: self.channel_id.clone(),
            message: self.message.clone(),
            create_at: self.create_at,
            post_type: self.post_type.clone(),
            author,
        }
    }
}

/// `PostList`: `order` holds ids newest first.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PostList {
    /// Post ids, newest first.
    #[serde(default)]
    pub order: Vec<String>,
    /// The posts by id.
    #[serde(default)]
    pub posts: HashMap<String, MmPost>,
    /// Set when newer posts exist.
    #[serde(default)]
    pub next_post_id: String,
    /// Set when older posts exist.
    #[serde(default)]
    pub prev_post_id: String,
}

impl PostList {
    /// The posts oldest first, without deleted ones.
    pub fn oldest_first(mut self) -> Vec<MmPost> {
        let mut posts: Vec<MmPost> = self
            .order
            .iter()
            .rev()
            .filter_map(|id| self.posts.remove(id))
            .filter(|p| p.delete_at == 0)
            .collect();
        posts.dedup_by(|a, b| a.id == b.id);
        posts
    }
}

/// `GET /users/stats`.
#[derive(Debug, Clone, Deserialize)]
pub struct UsersStats {
    /// Users on the server.
    pub total_users_count: u64,
}
