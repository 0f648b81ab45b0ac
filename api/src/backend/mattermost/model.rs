//! The parts of Mattermost's JSON objects (`definitions.yaml` in the API reference) that this
//! server reads. Unknown fields are ignored; missing optional ones default.

use std::collections::HashMap;

use serde::Deserialize;

use crate::backend::{Channel, Post, User};

#[derive(Debug, Clone, Deserialize)]
pub struct MmUser {
    pub id: String,
    pub username: String,
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
    pub fn to_user(&self) -> User {
        User {
            id: self.id.clone(),
            username: self.username.clone(),
            email: self.email.clone(),
            is_staff: self.roles.split_whitespace().any(|r| r == "system_admin"),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct MmTeam {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub display_name: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct MmChannel {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub display_name: String,
    #[serde(default)]
    pub team_id: String,
    /// `O` open, `P` private, `D` direct, `G` group.
    #[serde(default, rename = "type")]
    pub channel_type: String,
    /// Time of the newest post, in milliseconds: changes exactly when a post is added.
    #[serde(default)]
    pub last_post_at: i64,
    #[serde(default)]
    pub delete_at: i64,
}

impl MmChannel {
    pub fn to_channel(&self) -> Channel {
        Channel {
            id: self.id.clone(),
            name: self.name.clone(),
            display_name: self.display_name.clone(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct MmPost {
    pub id: String,
    pub channel_id: String,
    pub user_id: String,
    #[serde(default)]
    pub message: String,
    pub create_at: i64,
    #[serde(default)]
    pub delete_at: i64,
    #[serde(default, rename = "type")]
    pub post_type: String,
}

impl MmPost {
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
    #[serde(default)]
    pub order: Vec<String>,
    #[serde(default)]
    pub posts: HashMap<String, MmPost>,
    #[serde(default)]
    pub next_post_id: String,
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

#[derive(Debug, Clone, Deserialize)]
pub struct UsersStats {
    pub total_users_count: u64,
}
