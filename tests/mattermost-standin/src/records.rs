//! The stand-in's records: users, teams, channels and posts as it stores them, and the id and
//! clock Mattermost's records carry.

use std::time::{SystemTime, UNIX_EPOCH};

use rand::Rng;

pub fn new_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..26)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

pub struct UserRec {
    pub id: String,
    pub username: String,
    pub email: String,
    pub password: String,
    pub roles: String,
    pub create_at: i64,
    pub delete_at: i64,
}

pub struct TeamRec {
    pub id: String,
    pub name: String,
    pub display_name: String,
    pub create_at: i64,
    pub delete_at: i64,
}

pub struct ChannelRec {
    pub id: String,
    pub team_id: String,
    pub name: String,
    pub display_name: String,
    pub channel_type: String,
    pub creator_id: String,
    pub create_at: i64,
    pub delete_at: i64,
    pub last_post_at: i64,
    pub total_msg_count: i64,
}

pub struct PostRec {
    pub id: String,
    pub channel_id: String,
    pub user_id: String,
    pub message: String,
    pub post_type: String,
    pub create_at: i64,
    pub delete_at: i64,
    /// When it last changed (an edit or a deletion); `create_at` until then.
    pub update_at: i64,
    /// When its text was last edited; 0 if never.
    pub edit_at: i64,
}
