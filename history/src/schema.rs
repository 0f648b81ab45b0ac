//! The keyspace's tables and their versioned, idempotent migration at start-up.
//!
//! Every statement is `IF NOT EXISTS` (or an `ALTER` guarded by the recorded version), so
//! nodes starting together all run the same steps and end at the same schema whatever their
//! interleaving; each step is recorded in `schema_migrations` once it has been applied, and the
//! driver's schema agreement is awaited after each DDL so that the next step sees it.
//!
//! The data model follows the large chat stores (Discord's `messages` table): a channel's posts
//! live in partitions keyed by `(channel_id, bucket)`, a bucket being a fixed span of creation
//! time, clustered newest first by `(create_at, post_id)`, so that a partition stays bounded
//! and the newest page is the head of one partition. Rows expire with the retention TTL, and
//! `TimeWindowCompactionStrategy` drops whole expired `SSTables` instead of compacting them.

use scylla::client::session::Session;

use crate::config::HistoryConfig;
use crate::error::{err, HistoryResult};

/// The DDL of each version, in order; a version's statements are idempotent.
pub fn migrations(config: &HistoryConfig) -> Vec<(i32, Vec<String>)> {
    let ks = &config.keyspace;
    let ttl = config.retention.as_secs();
    // One compaction window per bucket keeps a window's SSTables expiring together.
    let window_hours = (config.bucket_width.as_secs() / 3600).max(1);
    let twcs = format!(
        "{{'class': 'TimeWindowCompactionStrategy', 'compaction_window_unit': 'HOURS', 'compaction_window_size': {window_hours}}}"
    );
    vec![(
        1,
        vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {ks}.posts_by_bucket (channel_id text, bucket bigint, create_at bigint, post_id text, message text, post_type text, author_id text, author_username text, author_email text, author_is_staff boolean, PRIMARY KEY ((channel_id, bucket), create_at, post_id)) WITH CLUSTERING ORDER BY (create_at DESC, post_id DESC) AND default_time_to_live = {ttl} AND compaction = {twcs}"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {ks}.post_positions (post_id text PRIMARY KEY, channel_id text, create_at bigint) WITH default_time_to_live = {ttl}"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {ks}.channel_last_post (channel_id text PRIMARY KEY, post_id text, create_at bigint, message text, post_type text, author_id text, author_username text, author_email text, author_is_staff boolean) WITH default_time_to_live = {ttl}"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {ks}.channel_coverage (channel_id text PRIMARY KEY, epoch text, from_at bigint, from_id text, beginning boolean)"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {ks}.ingest_epoch (name text PRIMARY KEY, epoch text, heartbeat_at bigint)"
            ),
        ],
    )]
}

/// The keyspace and the migration record, created before any migration runs.
pub fn bootstrap(config: &HistoryConfig) -> Vec<String> {
    let ks = &config.keyspace;
    vec![
        format!(
            "CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = {} AND durable_writes = true",
            config.replication.cql()
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.schema_migrations (scope text, version int, applied_at bigint, PRIMARY KEY (scope, version))"
        ),
    ]
}

/// Creates the keyspace and runs every migration not yet recorded, awaiting schema agreement
/// after each statement.
pub async fn migrate(session: &Session, config: &HistoryConfig) -> HistoryResult<()> {
    for ddl in bootstrap(config) {
        session.query_unpaged(ddl, ()).await.map_err(err)?;
        session.await_schema_agreement().await.map_err(err)?;
    }
    let ks = &config.keyspace;
    let applied = session
        .query_unpaged(
            format!("SELECT version FROM {ks}.schema_migrations WHERE scope = 'history'"),
            (),
        )
        .await
        .map_err(err)?
        .into_rows_result()
        .map_err(err)?
        .rows::<(i32,)>()
        .map_err(err)?
        .filter_map(Result::ok)
        .map(|(v,)| v)
        .collect::<Vec<_>>();
    for (version, statements) in migrations(config) {
        if applied.contains(&version) {
            continue;
        }
        tracing::info!(keyspace = %ks, version, "migrating the history schema");
        for ddl in statements {
            session.query_unpaged(ddl, ()).await.map_err(err)?;
            session.await_schema_agreement().await.map_err(err)?;
        }
        session
            .query_unpaged(
                format!("INSERT INTO {ks}.schema_migrations (scope, version, applied_at) VALUES ('history', ?, ?)"),
                (version, crate::now_ms()),
            )
            .await
            .map_err(err)?;
    }
    Ok(())
}
