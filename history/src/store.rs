//! The history store on the `scylla` driver: prepared statements only, token-aware routing
//! (the driver's default policy, preferring the local datacenter), writes marked idempotent,
//! every read bounded by a LIMIT. No lightweight transactions, no `ALLOW FILTERING`, no
//! secondary indexes, views, logged batches or `IN` lists.

use std::sync::Arc;
use std::time::Duration;

use mmsub_api::backend::{Post, User};
use mmsub_metrics::labels::QueryOutcome;
use mmsub_metrics::Metrics;
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::errors::ExecutionError;
use scylla::policies::load_balancing::DefaultPolicy;
use scylla::response::query_result::QueryResult;
use scylla::serialize::row::SerializeRow;
use scylla::statement::prepared::PreparedStatement;

use crate::config::HistoryConfig;
use crate::error::{err, HistoryResult};
use crate::schema;
use crate::statements::{prepare_all, Statements};

/// How far back a channel's cache is complete, and under which ingest epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coverage {
    /// The ingest epoch that was hearing the channel when the record was made.
    pub epoch: String,
    /// The oldest position known complete: every post at or after `(from_at, from_id)` is in
    /// the store.
    pub from_at: i64,
    /// The post id at `from_at`.
    pub from_id: String,
    /// `from` is the channel's first post (or the channel was empty then): nothing older
    /// exists, so `hasPrevious` is false at the window's end.
    pub beginning: bool,
}

/// The ingest epoch: a new one each time the ingest (re)connects to Mattermost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Epoch {
    /// Its id.
    pub id: String,
    /// Its last heartbeat, milliseconds since the epoch.
    pub heartbeat_at: i64,
}

type PostRow = (String, i64, String, String, String, String, String, bool);

/// The driver's session, with each statement timed and counted.
struct CountedSession {
    session: Session,
    metrics: Option<Arc<Metrics>>,
}

impl CountedSession {
    async fn execute_unpaged(
        &self,
        statement: &PreparedStatement,
        values: impl SerializeRow,
    ) -> Result<QueryResult, ExecutionError> {
        let started = std::time::Instant::now();
        let result = self.session.execute_unpaged(statement, values).await;
        if let Some(metrics) = &self.metrics {
            let outcome = if result.is_ok() {
                QueryOutcome::Ok
            } else {
                QueryOutcome::Error
            };
            metrics.history.query(outcome, started.elapsed());
        }
        result
    }
}
/// A connected history store.
pub struct HistoryStore {
    session: CountedSession,
    config: HistoryConfig,
    statements: Statements,
}

impl std::fmt::Debug for HistoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HistoryStore")
            .field("nodes", &self.config.nodes)
            .field("keyspace", &self.config.keyspace)
            .finish_non_exhaustive()
    }
}

impl HistoryStore {
    /// Connects, migrates the schema and prepares every statement.
    pub async fn connect(config: &HistoryConfig) -> HistoryResult<Self> {
        let mut policy = DefaultPolicy::builder().token_aware(true);
        if let Some(dc) = &config.local_datacenter {
            policy = policy
                .prefer_datacenter(dc.clone())
                .permit_dc_failover(false);
        }
        let profile = ExecutionProfile::builder()
            .consistency(config.read_consistency)
            .request_timeout(Some(config.request_timeout))
            .load_balancing_policy(policy.build())
            .build();
        let mut builder = SessionBuilder::new()
            .known_nodes(&config.nodes)
            .connection_timeout(config.request_timeout)
            .default_execution_profile_handle(profile.into_handle());
        if let Some((user, password)) = &config.credentials {
            builder = builder.user(user, password);
        }
        if let Some(tls) = &config.tls {
            builder = builder.tls_context(Some(tls.client_config()));
        }
        let session = builder.build().await.map_err(err)?;
        schema::migrate(&session, config).await?;
        let statements = prepare_all(&session, config).await?;
        Ok(HistoryStore {
            session: CountedSession {
                session,
                metrics: None,
            },
            config: config.clone(),
            statements,
        })
    }

    /// This store, counting every statement in `metrics` (`mmsub_history_queries_total`).
    #[must_use]
    pub fn counted(mut self, metrics: Arc<Metrics>) -> Self {
        self.session.metrics = Some(metrics);
        self
    }

    /// The settings it runs with.
    pub fn config(&self) -> &HistoryConfig {
        &self.config
    }

    /// The bucket of a creation time.
    pub fn bucket_of(&self, create_at: i64) -> i64 {
        let width = i64::try_from(self.config.bucket_width.as_millis()).unwrap_or(i64::MAX);
        create_at.div_euclid(width)
    }

    /// The oldest creation time the TTL cannot have expired yet, with a margin for clocks.
    pub fn retention_floor(&self, now_ms: i64) -> i64 {
        let retention = i64::try_from(self.config.retention.as_millis()).unwrap_or(i64::MAX);
        let margin = 60_000;
        now_ms.saturating_sub(retention).saturating_add(margin)
    }

    /// Writes a post where reads find it: its bucket, its position, and the channel's last
    /// post (stamped with its creation time, so the newest post wins).
    pub async fn write_post(&self, post: &Post) -> HistoryResult<()> {
        let s = &self.statements;
        let stamp = post.create_at.saturating_mul(1000);
        let bucket = self.bucket_of(post.create_at);
        let a = &post.author;
        let row = (
            &post.channel_id,
            bucket,
            post.create_at,
            &post.id,
            &post.message,
            &post.post_type,
            &a.id,
            &a.username,
            &a.email,
            a.is_staff,
            stamp,
        );
        let (posts, positions, lasts) = tokio::join!(
            self.session.execute_unpaged(&s.insert_post, row),
            self.session.execute_unpaged(
                &s.insert_position,
                (&post.id, &post.channel_id, post.create_at, stamp)
            ),
            self.write_last(post, stamp),
        );
        posts.map_err(err)?;
        positions.map_err(err)?;
        lasts?;
        Ok(())
    }

    /// An edit made at `edited_at` (ms): the new text, stamped so that it wins over the
    /// original; the last-post row too when it is that post.
    pub async fn edit_post(&self, post: &Post, edited_at: i64) -> HistoryResult<()> {
        let s = &self.statements;
        let stamp = edited_at.saturating_mul(1000);
        self.session
            .execute_unpaged(
                &s.update_message,
                (
                    stamp,
                    &post.message,
                    &post.channel_id,
                    self.bucket_of(post.create_at),
                    post.create_at,
                    &post.id,
                ),
            )
            .await
            .map_err(err)?;
        if self
            .last_post(&post.channel_id)
            .await?
            .is_some_and(|last| last.id == post.id)
        {
            self.write_last(post, stamp).await?;
        }
        Ok(())
    }

    /// A deletion made at `deleted_at` (ms): the post's rows go, and when it was the
    /// channel's last post the previous post takes its place.
    pub async fn delete_post(
        &self,
        channel_id: &str,
        post_id: &str,
        create_at: i64,
        deleted_at: i64,
    ) -> HistoryResult<()> {
        let s = &self.statements;
        let stamp = deleted_at.saturating_mul(1000);
        self.session
            .execute_unpaged(
                &s.delete_post,
                (
                    stamp,
                    channel_id,
                    self.bucket_of(create_at),
                    create_at,
                    post_id,
                ),
            )
            .await
            .map_err(err)?;
        self.session
            .execute_unpaged(&s.delete_position, (stamp, post_id))
            .await
            .map_err(err)?;
        if self
            .last_post(channel_id)
            .await?
            .is_some_and(|last| last.id == post_id)
        {
            let floor = self.retention_floor(crate::now_ms());
            match self
                .newest(channel_id, None, floor, 1)
                .await?
                .into_iter()
                .next()
            {
                Some(previous) => self.write_last(&previous, stamp).await?,
                None => {
                    self.session
                        .execute_unpaged(&s.delete_last, (stamp, channel_id))
                        .await
                        .map_err(err)?;
                }
            }
        }
        Ok(())
    }

    async fn write_last(&self, post: &Post, stamp: i64) -> HistoryResult<()> {
        let a = &post.author;
        self.session
            .execute_unpaged(
                &self.statements.insert_last,
                (
                    &post.channel_id,
                    &post.id,
                    post.create_at,
                    &post.message,
                    &post.post_type,
                    &a.id,
                    &a.username,
                    &a.email,
                    a.is_staff,
                    stamp,
                ),
            )
            .await
            .map_err(err)?;
        Ok(())
    }

    /// The channel's newest post, if the store knows one.
    pub async fn last_post(&self, channel_id: &str) -> HistoryResult<Option<Post>> {
        let result = self
            .session
            .execute_unpaged(&self.statements.last, (channel_id,))
            .await
            .map_err(err)?;
        let rows = result.into_rows_result().map_err(err)?;
        let mut rows = rows.rows::<PostRow>().map_err(err)?;
        rows.next()
            .transpose()
            .map_err(err)
            .map(|row| row.map(|r| to_post(channel_id, r)))
    }

    /// Up to `limit` posts newest first, older than `before` (exclusive, `None`: from the
    /// newest), none older than `floor` (creation time, ms).
    pub async fn newest(
        &self,
        channel_id: &str,
        before: Option<(i64, &str)>,
        floor: i64,
        limit: usize,
    ) -> HistoryResult<Vec<Post>> {
        // Nothing older than the retention can be stored: the floor never walks buckets past it.
        let floor = floor.max(self.retention_floor(crate::now_ms()));
        let mut out = Vec::new();
        let start_at = match before {
            Some((at, _)) => at,
            None => match self.last_post(channel_id).await? {
                Some(last) => last.create_at,
                None => crate::now_ms(),
            },
        };
        let mut bucket = self.bucket_of(start_at.max(floor));
        let floor_bucket = self.bucket_of(floor);
        let mut first = true;
        while out.len() < limit && bucket >= floor_bucket {
            let want = i32::try_from(limit - out.len()).unwrap_or(i32::MAX);
            let result = match (before, first) {
                (Some((at, id)), true) => {
                    self.session
                        .execute_unpaged(
                            &self.statements.before,
                            (channel_id, bucket, at, id, want),
                        )
                        .await
                }
                _ => {
                    self.session
                        .execute_unpaged(&self.statements.newest, (channel_id, bucket, want))
                        .await
                }
            }
            .map_err(err)?;
            let rows = result.into_rows_result().map_err(err)?;
            for row in rows.rows::<PostRow>().map_err(err)? {
                let post = to_post(channel_id, row.map_err(err)?);
                if post.create_at < floor {
                    return Ok(out);
                }
                out.push(post);
            }
            first = false;
            bucket -= 1;
        }
        Ok(out)
    }

    /// Up to `limit` posts oldest first, after `(at, id)` (exclusive).
    pub async fn after(
        &self,
        channel_id: &str,
        at: i64,
        id: &str,
        limit: usize,
    ) -> HistoryResult<Vec<Post>> {
        let mut out = Vec::new();
        let last = self.bucket_of(crate::now_ms().max(at));
        // Nothing older than the retention is stored: start no earlier than its bucket.
        let mut bucket = self.bucket_of(at.max(self.retention_floor(crate::now_ms())));
        while out.len() < limit && bucket <= last {
            let want = i32::try_from(limit - out.len()).unwrap_or(i32::MAX);
            let result = self
                .session
                .execute_unpaged(&self.statements.after, (channel_id, bucket, at, id, want))
                .await
                .map_err(err)?;
            let rows = result.into_rows_result().map_err(err)?;
            for row in rows.rows::<PostRow>().map_err(err)? {
                out.push(to_post(channel_id, row.map_err(err)?));
            }
            bucket += 1;
        }
        Ok(out)
    }

    /// Where a post is: its channel and creation time.
    pub async fn position(&self, post_id: &str) -> HistoryResult<Option<(String, i64)>> {
        let result = self
            .session
            .execute_unpaged(&self.statements.position, (post_id,))
            .await
            .map_err(err)?;
        let rows = result.into_rows_result().map_err(err)?;
        let mut rows = rows.rows::<(String, i64)>().map_err(err)?;
        rows.next().transpose().map_err(err)
    }

    /// The channel's completeness record.
    pub async fn coverage(&self, channel_id: &str) -> HistoryResult<Option<Coverage>> {
        let result = self
            .session
            .execute_unpaged(&self.statements.coverage, (channel_id,))
            .await
            .map_err(err)?;
        let rows = result.into_rows_result().map_err(err)?;
        let mut rows = rows.rows::<(String, i64, String, bool)>().map_err(err)?;
        Ok(rows
            .next()
            .transpose()
            .map_err(err)?
            .map(|(epoch, from_at, from_id, beginning)| Coverage {
                epoch,
                from_at,
                from_id,
                beginning,
            }))
    }

    /// Records how far back the channel is complete.
    pub async fn set_coverage(&self, channel_id: &str, coverage: &Coverage) -> HistoryResult<()> {
        self.session
            .execute_unpaged(
                &self.statements.set_coverage,
                (
                    channel_id,
                    &coverage.epoch,
                    coverage.from_at,
                    &coverage.from_id,
                    coverage.beginning,
                ),
            )
            .await
            .map_err(err)?;
        Ok(())
    }

    /// Forgets the channel's completeness: reads go to Mattermost until it is filled again.
    pub async fn clear_coverage(&self, channel_id: &str) -> HistoryResult<()> {
        self.session
            .execute_unpaged(&self.statements.clear_coverage, (channel_id,))
            .await
            .map_err(err)?;
        Ok(())
    }

    /// The current ingest epoch.
    pub async fn epoch(&self) -> HistoryResult<Option<Epoch>> {
        let result = self
            .session
            .execute_unpaged(&self.statements.epoch, ("ingest",))
            .await
            .map_err(err)?;
        let rows = result.into_rows_result().map_err(err)?;
        let mut rows = rows.rows::<(String, i64)>().map_err(err)?;
        Ok(rows
            .next()
            .transpose()
            .map_err(err)?
            .map(|(id, heartbeat_at)| Epoch { id, heartbeat_at }))
    }

    /// Announces (or keeps alive) an ingest epoch.
    pub async fn set_epoch(&self, epoch: &str) -> HistoryResult<()> {
        self.session
            .execute_unpaged(
                &self.statements.set_epoch,
                ("ingest", epoch, crate::now_ms()),
            )
            .await
            .map_err(err)?;
        Ok(())
    }
}

fn to_post(channel_id: &str, row: PostRow) -> Post {
    let (id, create_at, message, post_type, author_id, username, email, is_staff) = row;
    Post {
        id,
        channel_id: channel_id.to_string(),
        message,
        create_at,
        post_type,
        author: User {
            id: author_id,
            username,
            email,
            is_staff,
        },
    }
}
/// How long a connect attempt may take before the next one is scheduled.
pub const RECONNECT_EVERY: Duration = Duration::from_secs(2);
