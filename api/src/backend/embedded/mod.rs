//! The embedded backend: users, one team, channels, memberships and posts in a SQLite file.
//!
//! What makes `mmsub serve` a complete chat server with nothing else installed. Writes go
//! through the group-commit [`writer`] (WAL journal, `synchronous=FULL`: an acknowledged write
//! survives a crash or power loss); reads use a small pool of connections on the blocking pool,
//! which WAL lets run alongside the writer.

mod passwords;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, Row};
use sha2::{Digest, Sha256};

use super::{
    Actor, BackendError, BackendResult, ByteCount, Channel, ChannelPage, ChannelPost,
    ChannelSummary, ChatBackend, CreatedUser, Login, MessagePage, NewUser, PageRequest, Post, User,
    UserPage,
};
use crate::ids::{new_id, random_hex};
use writer::Writer;

pub const DEFAULT_CHANNEL: &str = "town-square";
const DATABASE_FILE: &str = "mmsub.db";

pub struct EmbeddedStore {
    writer: Writer,
    passwords: passwords::Passwords,
    readers: Arc<ReaderPool>,
    team_id: String,
}

fn storage_error(e: rusqlite::Error) -> BackendError {
    tracing::error!(error = %e, "embedded store error");
    BackendError::Unavailable("The message store failed; try again.".into())
}

fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
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
        let hashing_threads = std::thread::available_parallelism().map_or(2, |n| n.get());
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

fn ensure_team(conn: &Connection, team_name: &str) -> rusqlite::Result<String> {
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
                params![id, team_name, now_millis()],
            )?;
            id
        }
    };
    conn.execute(
        "INSERT OR IGNORE INTO channels (id, team_id, name, display_name, create_at)
         VALUES (?1, ?2, ?3, 'Town Square', ?4)",
        params![new_id(), team_id, DEFAULT_CHANNEL, now_millis()],
    )?;
    Ok(team_id)
}

/// Idle read connections, opened on demand; at most [`MAX_READERS`] reads run at once, so a
/// burst of requests queues briefly instead of opening a connection (and a thread) per request.
struct ReaderPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    permits: tokio::sync::Semaphore,
}

const MAX_READERS: usize = 8;

impl ReaderPool {
    fn with<T>(&self, work: impl FnOnce(&Connection) -> BackendResult<T>) -> BackendResult<T> {
        let pooled = self.idle.lock().expect("reader pool poisoned").pop();
        let conn = match pooled {
            Some(conn) => conn,
            None => {
                let conn = open(&self.path).map_err(storage_error)?;
                conn.pragma_update(None, "query_only", true)
                    .map_err(storage_error)?;
                conn
            }
        };
        let outcome = work(&conn);
        let mut idle = self.idle.lock().expect("reader pool poisoned");
        if idle.len() < MAX_READERS {
            idle.push(conn);
        }
        outcome
    }
}

// ---- queries shared by reads and writes ----

const USER_COLUMNS: &str = "u.id, u.username, u.email, u.is_staff";
const POST_COLUMNS: &str =
    "p.id, p.channel_id, p.message, p.create_at, p.post_type, u.id, u.username, u.email, u.is_staff";

fn user_from(row: &Row, at: usize) -> rusqlite::Result<User> {
    Ok(User {
        id: row.get(at)?,
        username: row.get(at + 1)?,
        email: row.get(at + 2)?,
        is_staff: row.get(at + 3)?,
    })
}

/// A post from the `POST_COLUMNS` starting at column `at`.
fn post_at(row: &Row, at: usize) -> rusqlite::Result<Post> {
    Ok(Post {
        id: row.get(at)?,
        channel_id: row.get(at + 1)?,
        message: row.get(at + 2)?,
        create_at: row.get(at + 3)?,
        post_type: row.get(at + 4)?,
        author: user_from(row, at + 5)?,
    })
}

/// Creates the data directory readable by this user alone (0700), and tightens one that
/// exists: it holds password hashes, refresh-token hashes and, generated, the JWT secret.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let mode = std::fs::metadata(dir)?.permissions().mode() & 0o777;
        if mode != 0o700 {
            tracing::warn!(dir = %dir.display(), mode = format!("{mode:o}"), "data directory was readable by others: set to 0700");
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        Ok(())
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(dir)
}

/// The database and its WAL and shared-memory files: 0600.
fn private_files(database: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for suffix in ["", "-wal", "-shm"] {
            let mut file = database.as_os_str().to_owned();
            file.push(suffix);
            match std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                other => other?,
            }
        }
    }
    let _ = database;
    Ok(())
}

/// Collects rows until their content passes `max_bytes`, then stops reading with `TooLarge`.
fn within_bytes<T>(
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

fn post_from(row: &Row) -> rusqlite::Result<Post> {
    post_at(row, 0)
}

fn user_by_name(conn: &Connection, username: &str) -> BackendResult<Option<User>> {
    conn.prepare_cached(&format!(
        "SELECT {USER_COLUMNS} FROM users u WHERE u.username = ?1"
    ))
    .and_then(|mut s| s.query_row([username], |r| user_from(r, 0)).optional())
    .map_err(storage_error)
}

/// The actor must exist: a valid token for a user this store does not know is a stale token.
fn actor(conn: &Connection, username: &str) -> BackendResult<User> {
    user_by_name(conn, username)?
        .ok_or_else(|| BackendError::Forbidden(format!("Unknown user: {username}")))
}

fn channel_by_identifier(
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

fn is_member(conn: &Connection, channel_id: &str, user_id: &str) -> BackendResult<bool> {
    conn.prepare_cached(
        "SELECT EXISTS(SELECT 1 FROM channel_members WHERE channel_id = ?1 AND user_id = ?2)",
    )
    .and_then(|mut s| s.query_row([channel_id, user_id], |r| r.get(0)))
    .map_err(storage_error)
}

fn member_channel(
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

fn add_member(conn: &Connection, channel_id: &str, user_id: &str) -> BackendResult<()> {
    conn.prepare_cached(
        "INSERT OR IGNORE INTO channel_members (channel_id, user_id) VALUES (?1, ?2)",
    )
    .and_then(|mut s| s.execute([channel_id, user_id]))
    .map_err(storage_error)?;
    Ok(())
}

fn insert_post(
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
        create_at: now_millis(),
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

fn last_post(conn: &Connection, channel_id: &str) -> BackendResult<Option<Post>> {
    conn.prepare_cached(&format!(
        "SELECT {POST_COLUMNS} FROM posts p JOIN users u ON u.id = p.user_id
         WHERE p.channel_id = ?1 ORDER BY p.seq DESC LIMIT 1"
    ))
    .and_then(|mut s| s.query_row([channel_id], post_from).optional())
    .map_err(storage_error)
}

fn unique_violation(e: &rusqlite::Error) -> Option<String> {
    match e {
        rusqlite::Error::SqliteFailure(f, Some(msg))
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE =>
        {
            Some(msg.clone())
        }
        _ => None,
    }
}

fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[async_trait]
impl ChatBackend for EmbeddedStore {
    async fn create_user(&self, new: NewUser) -> BackendResult<CreatedUser> {
        let hash = self.passwords.hash(new.password.clone()).await?;
        self.write(move |conn, team_id| {
            let user = User { id: new_id(), username: new.username, email: new.email, is_staff: false };
            conn.execute(
                "INSERT INTO users (id, username, email, password_hash, create_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![user.id, user.username, user.email, hash, now_millis()],
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
                params![channel.id, team_id, channel.name, channel.display_name, now_millis()],
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
    ) -> BackendResult<Vec<Post>> {
        let actor_name = who.username.clone();
        let identifier = identifier.to_owned();
        let after_id = after_id.to_owned();
        self.read(move |conn, team_id| {
            let channel = member_channel(conn, team_id, &actor(conn, &actor_name)?, &identifier)?;
            let after_seq: i64 = conn
                .prepare_cached("SELECT seq FROM posts WHERE id = ?1 AND channel_id = ?2")
                .and_then(|mut s| {
                    s.query_row([&after_id, &channel.id], |r| r.get(0))
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
        let expires_at = crate::auth::unix_now() + ttl.as_secs() as i64;
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
            let now = crate::auth::unix_now();
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
mod tests {
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
}
