//! What the store's test binaries share.

use mmsub_api::backend::{Post, User};

/// A post by alice in `channel`.
pub fn post(channel: &str, id: &str, create_at: i64) -> Post {
    Post {
        id: id.into(),
        channel_id: channel.into(),
        message: format!("text of {id}"),
        create_at,
        post_type: String::new(),
        author: User {
            id: "u1".into(),
            username: "alice".into(),
            email: "alice@example.com".into(),
            is_staff: false,
        },
    }
}
