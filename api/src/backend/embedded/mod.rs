//! The embedded backend: users, one team, channels, memberships and posts in a SQLite file.
//!
//! What makes `mmsub serve` a complete chat server with nothing else installed. Writes go
//! through the group-commit [`writer`] (WAL journal, `synchronous=FULL`: an acknowledged write
//! survives a crash or power loss); reads use a small pool of connections on the blocking pool,
//! which WAL lets run alongside the writer.

mod files;
mod passwords;
mod pool;
mod sql;
mod writer;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};

use super::{
    Actor, BackendError, BackendResult, Channel, ChannelPage, ChannelPost, ChannelSummary,
    ChatBackend, CreatedUser, Login, MessagePage, Missed, NewUser, PageRequest, Post, User,
    UserPage,
};
use crate::clock::unix_millis;
use crate::ids::{new_id, random_hex};
pub use files::private_dir;
use files::private_files;
use pool::{open, ReaderPool, MAX_READERS};
use sql::{
    actor, add_member, channel_by_identifier, ensure_team, insert_post, last_post, member_channel,
    post_at, post_from, storage_error, token_hash, unique_violation, user_by_name, user_from,
    within_bytes, POST_COLUMNS, USER_COLUMNS,
};
use writer::Writer;

/// The channel every new user joins, as Mattermost's default channel.
pub const DEFAULT_CHANNEL: &str = "town-square";
const DATABASE_FILE: &str = "mmsub.db";

/// The embedded chat backend: one SQLite file, a group-commit writer, a read pool.
pub struct EmbeddedStore {
    writer: Writer,
    passwords: passwords::Passwords,
    readers: Arc<ReaderPool>,
    team_id: String,
}

impl EmbeddedStore {
    /// Opens (or creates) the store under `data_dir`, with `team_name` as the one team and its
    /// `town-square` channel.
    pub fn open(data_dir: &Path, team_name: &str) -> anyhow::Result<Self> {
        private_dir(data_dir)?;
        let path = data_dir.join(DATABASE_FILE);
        let conn = open(&path)?;
        // SQLite gives its -wal and -shm files the database file's mode.
        private_files(&path)?;
        conn.execute_batch(include_str!("schema.sql"))?;
        let team_id = ensure_team(&conn, team_name)?;
        let hashing_threads =
            std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        Ok(Self {
            writer: Writer::spawn(conn)?,
            passwords: passwords::Passwords::spawn(hashing_threads)?,
            readers: Arc::new(ReaderPool {
                path,
                idle: Mutex::new(Vec::new()),
                permits: tokio::sync::Semaphore::new(MAX_READERS),
            }),
            team_id,
        })
    }

    /// The SQLite file.
    pub fn database_path(&self) -> &Path {
        &self.readers.path
    }

    async fn read<T, F>(&self, work: F) -> BackendResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &str) -> BackendResult<T> + Send + 'static,
    {
        let cancelled = || BackendError::Unavailable("A storage read was cancelled.".into());
        let _permit = self
            .readers
            .permits
            .acquire()
            .await
            .map_err(|_| cancelled())?;
        let readers = self.readers.clone();
        let team_id = self.team_id.clone();
        tokio::task::spawn_blocking(move || readers.with(|conn| work(conn, &team_id)))
            .await
            .map_err(|_| cancelled())?
    }

    async fn write<T, F>(&self, work: F) -> BackendResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &str) -> BackendResult<T> + Send + 'static,
    {
        let team_id = self.team_id.clone();
        self.writer.run(move |conn| work(conn, &team_id)).await
    }
}

#[async_trait]
impl ChatBackend for EmbeddedStore {
    async fn create_user(&self, new: NewUser) -> BackendResult<CreatedUser> {
        let hash = self.passwords.hash(new.password.clone()).await?;
        self.write(move |conn, team_id| {
            let user = User { id: new_id(), username: new.username, email: new.email, is_staff: false };
            conn.execute(
                "INSERT INTO users (id, username, email, password_hash, create_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![user.id, user.username, user.email, hash, unix_millis()],
            )
            .map_err(|e| match unique_violation(&e) {
                Some(m) if m.contains("username") => {
                    BackendError::Conflict("An account with that username already exists.".into())
                }
                Some(_) => BackendError::Conflict("An account with that email already exists.".into()),
                None => storage_error(e),
            })?;
            let town_square = channel_by_identifier(conn, team_id, DEFAULT_CHANNEL)?;
            add_member(conn, &town_square.id, &user.id)?;
            let joined = insert_post(conn, &town_square, &user, &format!("{} joined the team.", user.username), "system_join_team")?;
            Ok(CreatedUser { user, announcements: vec![joined] })
        })
        .await
    }

    async fn authenticate(&self, username: &str, password: &str) -> BackendResult<Option<Login>> {
        let username = username.to_owned();
        let found: Option<(User, String)> = self
            .read(move |conn, _| {
                conn.prepare_cached(&format!(
                    "SELECT {USER_COLUMNS}, u.password_hash FROM users u WHERE u.username = ?1"
                ))
                .and_then(|mut s| {
                    s.query_row([&username], |r| Ok((user_from(r, 0)?, r.get(4)?)))
                        .optional()
                })
                .map_err(storage_error)
            })
            .await?;
        let (user, phc) = found.unzip();
        let valid = self.passwords.verify(password.to_owned(), phc).await?;
        Ok(user.filter(|_| valid).map(|user| Login {
            user,
            credential: None,
        }))
    }

    async fn list_users(&self, who: &Actor, page: PageRequest) -> BackendResult<UserPage> {
        let actor_name = who.username.clone();
        self.read(move |conn, _| {
            actor(conn, &actor_name)?;
            let total: u64 = conn
                .query_row("SELECT COUNT(*) FROM users", [], |r| r.get(0))
                .map_err(storage_error)?;
            let users = conn
                .prepare_cached(&format!(
                    "SELECT {USER_COLUMNS} FROM users u ORDER BY u.seq LIMIT ?1 OFFSET ?2"
                ))
                .map_err(storage_error)?
                .query_map(params![page.size, page.offset()], |r| user_from(r, 0))
                .map_err(storage_error)
                .and_then(|rows| within_bytes(rows, page.max_bytes, User::content_bytes))?;
            Ok(UserPage { users, total })
        })
        .await
    }

    async fn create_channel(
        &self,
        who: &Actor,
        name: &str,
        members: &[String],
    ) -> BackendResult<Channel> {
        let actor_name = who.username.clone();
        let name = name.to_owned();
        let members: Vec<String> = members.iter().map(|m| m.trim().to_lowercase()).collect();
        self.write(move |conn, team_id| {
            let creator = actor(conn, &actor_name)?;
            let mut member_ids = vec![creator.id];
            for username in &members {
                let user = user_by_name(conn, username)?
                    .ok_or_else(|| BackendError::NotFound(format!("Members are not valid: unknown user {username}")))?;
                member_ids.push(user.id);
            }
            let channel = Channel { id: new_id(), name: name.clone(), display_name: name };
            conn.execute(
                "INSERT INTO channels (id, team_id, name, display_name, create_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![channel.id, team_id, channel.name, channel.display_name, unix_millis()],
            )
            .map_err(|e| match unique_violation(&e) {
                Some(_) => BackendError::Conflict("A channel with that name already exists on the same team.".into()),
                None => storage_error(e),
            })?;
            for user_id in &member_ids {
                add_member(conn, &channel.id, user_id)?;
            }
            Ok(channel)
        })
        .await
    }

    async fn member_channels(&self, who: &Actor, page: PageRequest) -> BackendResult<ChannelPage> {
        let actor_name = who.username.clone();
        self.read(move |conn, team_id| {
            let user = actor(conn, &actor_name)?;
            // Each channel with its newest post, found through the (channel_id, seq) index: one
            // statement for the whole page.
            let mut channels = conn
                .prepare_cached(&format!(
                    "SELECT c.id, c.name, c.display_name, {POST_COLUMNS} FROM channels c
                     JOIN channel_members m ON m.channel_id = c.id
                     LEFT JOIN posts p ON p.seq = (SELECT MAX(seq) FROM posts WHERE channel_id = c.id)
                     LEFT JOIN users u ON u.id = p.user_id
                     WHERE m.user_id = ?1 AND c.team_id = ?2 ORDER BY c.name LIMIT ?3 OFFSET ?4"
                ))
                .map_err(storage_error)?
                .query_map(params![user.id, team_id, page.size + 1, page.offset()], |r| {
                    let has_post = r.get::<_, Option<String>>(3)?.is_some();
                    Ok(ChannelSummary {
                        channel: Channel { id: r.get(0)?, name: r.get(1)?, display_name: r.get(2)? },
                        last_message: if has_post { Some(post_at(r, 3)?) } else { None },
                    })
                })
                .map_err(storage_error)
                .and_then(|rows| within_bytes(rows, page.max_bytes, ChannelSummary::content_bytes))?;
            let has_next = channels.len() > page.size as usize;
            channels.truncate(page.size as usize);
            Ok(ChannelPage { channels, has_next })
        })
        .await
    }

    async fn member_channel(&self, who: &Actor, identifier: &str) -> BackendResult<Channel> {
        let actor_name = who.username.clone();
        let identifier = identifier.to_owned();
        self.read(move |conn, team_id| {
            member_channel(conn, team_id, &actor(conn, &actor_name)?, &identifier)
        })
        .await
    }

    async fn send_message(
        &self,
        who: &Actor,
        identifier: &str,
        text: &str,
    ) -> BackendResult<ChannelPost> {
        let actor_name = who.username.clone();
        let identifier = identifier.to_owned();
        let text = text.to_owned();
        self.write(move |conn, team_id| {
            let author = actor(conn, &actor_name)?;
            let channel = member_channel(conn, team_id, &author, &identifier)?;
            insert_post(conn, &channel, &author, &text, "")
        })
        .await
    }

    async fn messages_after(
        &self,
        who: &Actor,
        identifier: &str,
        after_id: &str,
        limit: u32,
        max_bytes: u64,
    ) -> BackendResult<Missed> {
        let actor_name = who.username.clone();
        let identifier = identifier.to_owned();
        let after_id = after_id.to_owned();
        self.read(move |conn, team_id| {
            let channel = member_channel(conn, team_id, &actor(conn, &actor_name)?, &identifier)?;
            let (after_seq, anchor_at): (i64, i64) = conn
                .prepare_cached(
                    "SELECT seq, create_at FROM posts WHERE id = ?1 AND channel_id = ?2",
                )
                .and_then(|mut s| {
                    s.query_row([&after_id, &channel.id], |r| Ok((r.get(0)?, r.get(1)?)))
                        .optional()
                })
                .map_err(storage_error)?
                .ok_or_else(|| {
                    BackendError::NotFound(format!("Message not found in this channel: {after_id}"))
                })?;
            conn.prepare_cached(&format!(
                "SELECT {POST_COLUMNS} FROM posts p JOIN users u ON u.id = p.user_id
                 WHERE p.channel_id = ?1 AND p.seq > ?2 ORDER BY p.seq LIMIT ?3"
            ))
            .map_err(storage_error)?
            .query_map(params![channel.id, after_seq, limit], post_from)
            .map_err(storage_error)
            .and_then(|rows| within_bytes(rows, max_bytes, Post::content_bytes))
            .map(|posts| Missed { anchor_at, posts })
        })
        .await
    }

    async fn messages(
        &self,
        who: &Actor,
        identifier: &str,
        page: PageRequest,
    ) -> BackendResult<MessagePage> {
        let actor_name = who.username.clone();
        let identifier = identifier.to_owned();
        self.read(move |conn, team_id| {
            let channel = member_channel(conn, team_id, &actor(conn, &actor_name)?, &identifier)?;
            let mut posts = conn
                .prepare_cached(&format!(
                    "SELECT {POST_COLUMNS} FROM posts p JOIN users u ON u.id = p.user_id
                     WHERE p.channel_id = ?1 ORDER BY p.seq DESC LIMIT ?2 OFFSET ?3"
                ))
                .map_err(storage_error)?
                .query_map(params![channel.id, page.size + 1, page.offset()], post_from)
                .map_err(storage_error)
                .and_then(|rows| within_bytes(rows, page.max_bytes, Post::content_bytes))?;
            let has_previous = posts.len() > page.size as usize;
            posts.truncate(page.size as usize);
            let has_next =
                page.number > 0 && (!posts.is_empty() || last_post(conn, &channel.id)?.is_some());
            posts.reverse();
            Ok(MessagePage {
                posts,
                has_next,
                has_previous,
            })
        })
        .await
    }

    async fn issue_refresh_token(&self, login: &Login, ttl: Duration) -> BackendResult<String> {
        let username = login.user.username.clone();
        let token = random_hex(20);
        let hash = token_hash(&token);
        let expires_at = crate::clock::unix_seconds() + ttl.as_secs() as i64;
        self.write(move |conn, _| {
            let user = actor(conn, &username)?;
            conn.execute(
                "INSERT INTO refresh_tokens (token_hash, user_id, expires_at) VALUES (?1, ?2, ?3)",
                params![hash, user.id, expires_at],
            )
            .map_err(storage_error)?;
            Ok(())
        })
        .await?;
        Ok(token)
    }

    async fn redeem_refresh_token(&self, token: &str) -> BackendResult<Option<Login>> {
        let hash = token_hash(token);
        self.write(move |conn, _| {
            let now = crate::clock::unix_seconds();
            let user_id: Option<String> = conn
                .query_row(
                    "UPDATE refresh_tokens SET used_at = ?2
                     WHERE token_hash = ?1 AND used_at IS NULL AND expires_at > ?2 RETURNING user_id",
                    params![hash, now],
                    |r| r.get(0),
                )
                .optional()
                .map_err(storage_error)?;
            let Some(user_id) = user_id else { return Ok(None) };
            let user = conn
                .query_row(&format!("SELECT {USER_COLUMNS} FROM users u WHERE u.id = ?1"), [user_id], |r| user_from(r, 0))
                .optional()
                .map_err(storage_error)?;
            Ok(user.map(|user| Login { user, credential: None }))
        })
        .await
    }
}

#[cfg(test)]
mod tests;
