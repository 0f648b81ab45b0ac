//! The SQL the embedded store's reads and writes share: row mapping, lookups, the post insert,
//! the last post of a channel, the team bootstrap, and how SQLite errors reach clients.

use rusqlite::{params, Connection, OptionalExtension, Row};
use sha2::{Digest, Sha256};

use super::super::{BackendError, BackendResult, ByteCount, Channel, ChannelPost, Post, User};
use super::DEFAULT_CHANNEL;
use crate::clock::unix_millis;
use crate::ids::new_id;

pub(super) fn storage_error(e: rusqlite::Error) -> BackendError {
    tracing::error!(error = %e, "embedded store error");
    BackendError::Unavailable("The message store failed; try again.".into())
}

pub(super) const USER_COLUMNS: &str = "u.id, u.username, u.email, u.is_staff";
pub(super) const POST_COLUMNS: &str =
    "p.id, p.channel_id, p.message, p.create_at, p.post_type, u.id, u.username, u.email, u.is_staff";

pub(super) fn user_from(row: &Row, at: usize) -> rusqlite::Result<User> {
    Ok(User {
        id: row.get(at)?,
        username: row.get(at + 1)?,
        email: row.get(at + 2)?,
        is_staff: row.get(at + 3)?,
    })
}

/// A post from the `POST_COLUMNS` starting at column `at`.
pub(super) fn post_at(row: &Row, at: usize) -> rusqlite::Result<Post> {
    Ok(Post {
        id: row.get(at)?,
        channel_id: row.get(at + 1)?,
        message: row.get(at + 2)?,
        create_at: row.get(at + 3)?,
        post_type: row.get(at + 4)?,
        author: user_from(row, at + 5)?,
    })
}

pub(super) fn ensure_team(conn: &Connection, team_name: &str) -> rusqlite::Result<String> {
    let existing: Option<String> = conn
        .query_row("SELECT id FROM teams WHERE name = ?1", [team_name], |r| {
            r.get(0)
        })
        .optional()?;
    let team_id = match existing {
        Some(id) => id,
        None => {
            let id = new_id();
            conn.execute(
                "INSERT INTO teams (id, name, display_name, create_at) VALUES (?1, ?2, ?2, ?3)",
                params![id, team_name, unix_millis()],
            )?;
            id
        }
    };
    conn.execute(
        "INSERT OR IGNORE INTO channels (id, team_id, name, display_name, create_at)
         VALUES (?1, ?2, ?3, 'Town Square', ?4)",
        params![new_id(), team_id, DEFAULT_CHANNEL, unix_millis()],
    )?;
    Ok(team_id)
}

/// Collects rows until their content passes `max_bytes`, then stops reading with `TooLarge`.
pub(super) fn within_bytes<T>(
    rows: impl Iterator<Item = rusqlite::Result<T>>,
    max_bytes: u64,
    bytes: impl Fn(&T) -> u64,
) -> BackendResult<Vec<T>> {
    let mut count = ByteCount::new(max_bytes);
    let mut items = Vec::new();
    for row in rows {
        let item = row.map_err(storage_error)?;
        count.add(bytes(&item))?;
        items.push(item);
    }
    Ok(items)
}

pub(super) fn post_from(row: &Row) -> rusqlite::Result<Post> {
    post_at(row, 0)
}

pub(super) fn user_by_name(conn: &Connection, username: &str) -> BackendResult<Option<User>> {
    conn.prepare_cached(&format!(
        "SELECT {USER_COLUMNS} FROM users u WHERE u.username = ?1"
    ))
    .and_then(|mut s| s.query_row([username], |r| user_from(r, 0)).optional())
    .map_err(storage_error)
}

/// The actor must exist: a valid token for a user this store does not know is a stale token.
pub(super) fn actor(conn: &Connection, username: &str) -> BackendResult<User> {
    user_by_name(conn, username)?
        .ok_or_else(|| BackendError::Forbidden(format!("Unknown user: {username}")))
}

pub(super) fn channel_by_identifier(
    conn: &Connection,
    team_id: &str,
    identifier: &str,
) -> BackendResult<Channel> {
    conn.prepare_cached(
        "SELECT id, name, display_name FROM channels
         WHERE team_id = ?1 AND (id = ?2 OR name = ?2) ORDER BY id = ?2 DESC LIMIT 1",
    )
    .and_then(|mut s| {
        s.query_row([team_id, identifier], |r| {
            Ok(Channel {
                id: r.get(0)?,
                name: r.get(1)?,
                display_name: r.get(2)?,
            })
        })
        .optional()
    })
    .map_err(storage_error)?
    .ok_or_else(|| BackendError::channel_not_found(identifier))
}

pub(super) fn is_member(conn: &Connection, channel_id: &str, user_id: &str) -> BackendResult<bool> {
    conn.prepare_cached(
        "SELECT EXISTS(SELECT 1 FROM channel_members WHERE channel_id = ?1 AND user_id = ?2)",
    )
    .and_then(|mut s| s.query_row([channel_id, user_id], |r| r.get(0)))
    .map_err(storage_error)
}

pub(super) fn member_channel(
    conn: &Connection,
    team_id: &str,
    user: &User,
    identifier: &str,
) -> BackendResult<Channel> {
    let channel = channel_by_identifier(conn, team_id, identifier)?;
    if !is_member(conn, &channel.id, &user.id)? {
        // The same answer as for a channel that does not exist: names are not enumerable.
        return Err(BackendError::channel_not_found(identifier));
    }
    Ok(channel)
}

pub(super) fn add_member(conn: &Connection, channel_id: &str, user_id: &str) -> BackendResult<()> {
    conn.prepare_cached(
        "INSERT OR IGNORE INTO channel_members (channel_id, user_id) VALUES (?1, ?2)",
    )
    .and_then(|mut s| s.execute([channel_id, user_id]))
    .map_err(storage_error)?;
    Ok(())
}

pub(super) fn insert_post(
    conn: &Connection,
    channel: &Channel,
    author: &User,
    message: &str,
    post_type: &str,
) -> BackendResult<ChannelPost> {
    let post = Post {
        id: new_id(),
        channel_id: channel.id.clone(),
        message: message.to_owned(),
        create_at: unix_millis(),
        post_type: post_type.to_owned(),
        author: author.clone(),
    };
    conn.prepare_cached(
        "INSERT INTO posts (id, channel_id, user_id, message, post_type, create_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .and_then(|mut s| {
        s.execute(params![
            post.id,
            post.channel_id,
            author.id,
            post.message,
            post.post_type,
            post.create_at
        ])
    })
    .map_err(storage_error)?;
    Ok(ChannelPost {
        channel: channel.clone(),
        post,
    })
}

pub(super) fn last_post(conn: &Connection, channel_id: &str) -> BackendResult<Option<Post>> {
    conn.prepare_cached(&format!(
        "SELECT {POST_COLUMNS} FROM posts p JOIN users u ON u.id = p.user_id
         WHERE p.channel_id = ?1 ORDER BY p.seq DESC LIMIT 1"
    ))
    .and_then(|mut s| s.query_row([channel_id], post_from).optional())
    .map_err(storage_error)
}

pub(super) fn unique_violation(e: &rusqlite::Error) -> Option<String> {
    match e {
        rusqlite::Error::SqliteFailure(f, Some(msg))
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE =>
        {
            Some(msg.clone())
        }
        _ => None,
    }
}

pub(super) fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}
