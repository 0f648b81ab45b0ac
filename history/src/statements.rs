//! Every statement the store runs, prepared once at connect with its consistency and marked
//! idempotent.

//! The history store on the `scylla` driver: prepared statements only, token-aware routing
//! (the driver's default policy, preferring the local datacenter), writes marked idempotent,
//! every read bounded by a LIMIT. No lightweight transactions, no `ALLOW FILTERING`, no
//! secondary indexes, views, logged batches or `IN` lists.

use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::Consistency;

use crate::config::HistoryConfig;

use crate::error::{err, HistoryError, HistoryResult};

/// The columns of a stored post, in table order.
pub(crate) const POST_COLUMNS: &str = "post_id, create_at, message, post_type, author_id, author_username, author_email, author_is_staff";

pub(crate) struct Statements {
    pub(crate) insert_post: PreparedStatement,
    pub(crate) insert_position: PreparedStatement,
    pub(crate) insert_last: PreparedStatement,
    pub(crate) update_message: PreparedStatement,
    pub(crate) delete_post: PreparedStatement,
    pub(crate) delete_position: PreparedStatement,
    pub(crate) delete_last: PreparedStatement,
    pub(crate) newest: PreparedStatement,
    pub(crate) before: PreparedStatement,
    pub(crate) after: PreparedStatement,
    pub(crate) position: PreparedStatement,
    pub(crate) last: PreparedStatement,
    pub(crate) coverage: PreparedStatement,
    pub(crate) set_coverage: PreparedStatement,
    pub(crate) clear_coverage: PreparedStatement,
    pub(crate) epoch: PreparedStatement,
    pub(crate) set_epoch: PreparedStatement,
}

pub(crate) async fn prepare_all(
    session: &Session,
    config: &HistoryConfig,
) -> HistoryResult<Statements> {
    let ks = &config.keyspace;
    let write = config.write_consistency;
    let prepare = |cql: String, consistency: Consistency, idempotent: bool| async move {
        let mut statement = session.prepare(cql).await.map_err(err)?;
        statement.set_consistency(consistency);
        statement.set_is_idempotent(idempotent);
        Ok::<_, HistoryError>(statement)
    };
    let read = config.read_consistency;
    Ok(Statements {
        insert_post: prepare(format!("INSERT INTO {ks}.posts_by_bucket (channel_id, bucket, create_at, post_id, message, post_type, author_id, author_username, author_email, author_is_staff) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ?"), write, true).await?,
        insert_position: prepare(format!("INSERT INTO {ks}.post_positions (post_id, channel_id, create_at) VALUES (?, ?, ?) USING TIMESTAMP ?"), write, true).await?,
        insert_last: prepare(format!("INSERT INTO {ks}.channel_last_post (channel_id, post_id, create_at, message, post_type, author_id, author_username, author_email, author_is_staff) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ?"), write, true).await?,
        update_message: prepare(format!("UPDATE {ks}.posts_by_bucket USING TIMESTAMP ? SET message = ? WHERE channel_id = ? AND bucket = ? AND create_at = ? AND post_id = ?"), write, true).await?,
        delete_post: prepare(format!("DELETE FROM {ks}.posts_by_bucket USING TIMESTAMP ? WHERE channel_id = ? AND bucket = ? AND create_at = ? AND post_id = ?"), write, true).await?,
        delete_position: prepare(format!("DELETE FROM {ks}.post_positions USING TIMESTAMP ? WHERE post_id = ?"), write, true).await?,
        delete_last: prepare(format!("DELETE FROM {ks}.channel_last_post USING TIMESTAMP ? WHERE channel_id = ?"), write, true).await?,
        newest: prepare(format!("SELECT {POST_COLUMNS} FROM {ks}.posts_by_bucket WHERE channel_id = ? AND bucket = ? LIMIT ?"), read, true).await?,
        before: prepare(format!("SELECT {POST_COLUMNS} FROM {ks}.posts_by_bucket WHERE channel_id = ? AND bucket = ? AND (create_at, post_id) < (?, ?) LIMIT ?"), read, true).await?,
        after: prepare(format!("SELECT {POST_COLUMNS} FROM {ks}.posts_by_bucket WHERE channel_id = ? AND bucket = ? AND (create_at, post_id) > (?, ?) ORDER BY create_at ASC, post_id ASC LIMIT ?"), read, true).await?,
        position: prepare(format!("SELECT channel_id, create_at FROM {ks}.post_positions WHERE post_id = ?"), read, true).await?,
        last: prepare(format!("SELECT {POST_COLUMNS} FROM {ks}.channel_last_post WHERE channel_id = ?"), read, true).await?,
        coverage: prepare(format!("SELECT epoch, from_at, from_id, beginning FROM {ks}.channel_coverage WHERE channel_id = ?"), read, true).await?,
        set_coverage: prepare(format!("INSERT INTO {ks}.channel_coverage (channel_id, epoch, from_at, from_id, beginning) VALUES (?, ?, ?, ?, ?)"), write, true).await?,
        clear_coverage: prepare(format!("DELETE FROM {ks}.channel_coverage WHERE channel_id = ?"), write, true).await?,
        epoch: prepare(format!("SELECT epoch, heartbeat_at FROM {ks}.ingest_epoch WHERE name = ?"), read, true).await?,
        set_epoch: prepare(format!("INSERT INTO {ks}.ingest_epoch (name, epoch, heartbeat_at) VALUES (?, ?, ?)"), write, true).await?,
    })
}
