//! The stand-in against its published contract, driven by the real `scylla` driver (1.x,
//! schema metadata fetching on, as mmsub uses it). Each test names the section of the CQL
//! documentation (cassandra.apache.org/doc/latest/cassandra/developing/cql/) or of
//! `native_protocol_v4.spec` it checks. None uses the tables of mmsub's history store.

use std::time::Duration;

use futures::TryStreamExt;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::response::PagingState;
use scylla_standin::Standin;

async fn node() -> (Standin, Session) {
    let standin = Standin::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let session = connect(&standin).await;
    (standin, session)
}

async fn connect(standin: &Standin) -> Session {
    SessionBuilder::new()
        .known_node(standin.addr().to_string())
        .build()
        .await
        .expect("the driver connects")
}

async fn run(session: &Session, cql: &str) {
    session
        .query_unpaged(cql, ())
        .await
        .unwrap_or_else(|e| panic!("{cql}: {e}"));
}

async fn keyspace(session: &Session) {
    run(
        session,
        "CREATE KEYSPACE IF NOT EXISTS shop WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}",
    )
    .await;
}

/// The rows of a SELECT, typed.
async fn rows<T>(
    session: &Session,
    cql: &str,
    values: impl scylla::serialize::row::SerializeRow,
) -> Vec<T>
where
    T: for<'f, 'm> scylla::deserialize::row::DeserializeRow<'f, 'm>,
{
    session
        .query_unpaged(cql, values)
        .await
        .unwrap_or_else(|e| panic!("{cql}: {e}"))
        .into_rows_result()
        .unwrap()
        .rows::<T>()
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// DDL (`ddl.html#create-keyspace-statement`, `#create-table-statement`) and the schema
/// tables drivers read: the driver's own metadata shows the keys it was created with, and
/// `IF NOT EXISTS` on an existing table is not an error while a plain CREATE is
/// (spec section 9, error 0x2400 `Already_exists`).
#[tokio::test]
async fn the_driver_sees_the_schema_it_created() {
    let (_standin, session) = node().await;
    keyspace(&session).await;
    run(
        &session,
        "CREATE TABLE shop.orders (region text, day int, placed bigint, id text, total double, PRIMARY KEY ((region, day), placed, id)) WITH CLUSTERING ORDER BY (placed DESC, id ASC) AND default_time_to_live = 0",
    )
    .await;
    run(
        &session,
        "CREATE TABLE IF NOT EXISTS shop.orders (x int PRIMARY KEY)",
    )
    .await;
    let again = session
        .query_unpaged("CREATE TABLE shop.orders (x int PRIMARY KEY)", ())
        .await;
    assert!(again.unwrap_err().to_string().contains("already exists"));
    session.await_schema_agreement().await.unwrap();
    session.refresh_metadata().await.unwrap();
    let state = session.get_cluster_state();
    let table = &state
        .get_keyspace("shop")
        .expect("keyspace in metadata")
        .tables["orders"];
    assert_eq!(table.partition_key, vec!["region", "day"]);
    assert_eq!(table.clustering_key, vec!["placed", "id"]);
    assert_eq!(table.columns.len(), 5);
}

/// `dml.html#update-parameters`: the write with the higher `USING TIMESTAMP` wins whatever
/// the order of arrival; on equal timestamps a deletion wins over a write, and between two
/// writes the greater value wins (Cassandra's cell reconciliation). `writetime()` shows the
/// winner's timestamp (`dml.html#writetime-and-ttl-function`).
#[tokio::test]
async fn timestamps_decide_and_ties_go_to_the_deletion_then_the_greater_value() {
    let (_standin, session) = node().await;
    keyspace(&session).await;
    run(
        &session,
        "CREATE TABLE shop.prices (sku text PRIMARY KEY, price text)",
    )
    .await;
    run(
        &session,
        "INSERT INTO shop.prices (sku, price) VALUES ('a', 'b') USING TIMESTAMP 10",
    )
    .await;
    run(
        &session,
        "INSERT INTO shop.prices (sku, price) VALUES ('a', 'z') USING TIMESTAMP 5",
    )
    .await;
    let read = "SELECT price, writetime(price) FROM shop.prices WHERE sku = 'a'";
    assert_eq!(
        rows::<(String, i64)>(&session, read, ()).await,
        vec![("b".to_string(), 10)]
    );
    run(
        &session,
        "UPDATE shop.prices USING TIMESTAMP 10 SET price = 'a' WHERE sku = 'a'",
    )
    .await;
    assert_eq!(rows::<(String, i64)>(&session, read, ()).await[0].0, "b");
    run(
        &session,
        "UPDATE shop.prices USING TIMESTAMP 10 SET price = 'c' WHERE sku = 'a'",
    )
    .await;
    assert_eq!(rows::<(String, i64)>(&session, read, ()).await[0].0, "c");
    run(
        &session,
        "DELETE FROM shop.prices USING TIMESTAMP 10 WHERE sku = 'a'",
    )
    .await;
    assert!(rows::<(String, i64)>(&session, read, ()).await.is_empty());
    run(
        &session,
        "INSERT INTO shop.prices (sku, price) VALUES ('a', 'd') USING TIMESTAMP 10",
    )
    .await;
    assert!(
        rows::<(String, i64)>(&session, read, ()).await.is_empty(),
        "a write with the deletion's timestamp stays deleted"
    );
    run(
        &session,
        "INSERT INTO shop.prices (sku, price) VALUES ('a', 'e') USING TIMESTAMP 11",
    )
    .await;
    assert_eq!(
        rows::<(String, i64)>(&session, read, ()).await,
        vec![("e".to_string(), 11)]
    );
}

/// `dml.html#update-parameters` (`USING TTL`) and `ddl.html#default_time_to_live`: a cell
/// written with a TTL is gone once that many seconds have passed on the node's clock, and
/// `ttl()` counts down; the table's default applies when a write names none.
#[tokio::test]
async fn ttl_expires_as_the_clock_moves() {
    let (standin, session) = node().await;
    keyspace(&session).await;
    run(
        &session,
        "CREATE TABLE shop.carts (id text PRIMARY KEY, item text) WITH default_time_to_live = 300",
    )
    .await;
    run(
        &session,
        "INSERT INTO shop.carts (id, item) VALUES ('short', 'x') USING TTL 60",
    )
    .await;
    run(
        &session,
        "INSERT INTO shop.carts (id, item) VALUES ('default', 'y')",
    )
    .await;
    let ttl = |id: &'static str| {
        let session = &session;
        async move {
            rows::<(Option<i32>,)>(
                session,
                "SELECT ttl(item) FROM shop.carts WHERE id = ?",
                (id,),
            )
            .await
            .first()
            .and_then(|r| r.0)
        }
    };
    assert!(matches!(ttl("short").await, Some(59 | 60)));
    assert!(matches!(ttl("default").await, Some(299 | 300)));
    standin.advance_clock(Duration::from_secs(61));
    assert_eq!(ttl("short").await, None, "the 60 s row has expired");
    assert!(ttl("default").await.is_some());
    standin.advance_clock(Duration::from_secs(240));
    let all: Vec<(String,)> = rows(&session, "SELECT id FROM shop.carts", ()).await;
    assert!(all.is_empty(), "every row has expired: {all:?}");
}

/// Spec section 8 (result paging) and 4.2.5.2 (the `Has_more_pages` flag and paging state):
/// pages of the asked size, each row once and in clustering order, the last page without a
/// paging state; and `LIMIT` counted across pages.
#[tokio::test]
async fn paging_returns_every_row_once_in_order() {
    let (_standin, session) = node().await;
    keyspace(&session).await;
    run(
        &session,
        "CREATE TABLE shop.events (stream text, seq int, body text, PRIMARY KEY (stream, seq))",
    )
    .await;
    let insert = session
        .prepare("INSERT INTO shop.events (stream, seq, body) VALUES (?, ?, ?)")
        .await
        .unwrap();
    for seq in 0..25_i32 {
        session
            .execute_unpaged(&insert, ("s", seq, format!("e{seq}")))
            .await
            .unwrap();
        session
            .execute_unpaged(&insert, ("other", seq, "x"))
            .await
            .unwrap();
    }
    let mut select = session
        .prepare("SELECT seq FROM shop.events WHERE stream = ?")
        .await
        .unwrap();
    select.set_page_size(7);
    let mut state = PagingState::start();
    let mut pages = Vec::new();
    loop {
        let (result, next) = session
            .execute_single_page(&select, ("s",), state)
            .await
            .unwrap();
        let page: Vec<i32> = result
            .into_rows_result()
            .unwrap()
            .rows::<(i32,)>()
            .unwrap()
            .map(|r| r.unwrap().0)
            .collect();
        pages.push(page);
        match next.into_paging_control_flow() {
            std::ops::ControlFlow::Continue(s) => state = s,
            std::ops::ControlFlow::Break(()) => break,
        }
    }
    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![7, 7, 7, 4]
    );
    assert_eq!(pages.concat(), (0..25).collect::<Vec<_>>());

    let mut limited = session
        .prepare("SELECT seq FROM shop.events WHERE stream = ? LIMIT 10")
        .await
        .unwrap();
    limited.set_page_size(4);
    let seqs: Vec<(i32,)> = session
        .execute_iter(limited, ("s",))
        .await
        .unwrap()
        .rows_stream::<(i32,)>()
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(
        seqs.into_iter().map(|r| r.0).collect::<Vec<_>>(),
        (0..10).collect::<Vec<_>>()
    );

    let mut scan =
        scylla::statement::unprepared::Statement::new("SELECT stream, seq FROM shop.events");
    scan.set_page_size(6);
    let everything: Vec<(String, i32)> = session
        .query_iter(scan, ())
        .await
        .unwrap()
        .rows_stream::<(String, i32)>()
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(everything.len(), 50, "a scan pages over both partitions");
}

/// `dml.html#where-clause` and `#ordering-clause`: clustering ranges on one column and on a
/// tuple of columns, in a table stored newest first, read in either order with a LIMIT.
#[tokio::test]
async fn ranges_and_tuple_ranges_read_in_either_order() {
    let (_standin, session) = node().await;
    keyspace(&session).await;
    run(
        &session,
        "CREATE TABLE shop.log (k text, at bigint, id text, v text, PRIMARY KEY (k, at, id)) WITH CLUSTERING ORDER BY (at DESC, id DESC)",
    )
    .await;
    let insert = session
        .prepare("INSERT INTO shop.log (k, at, id, v) VALUES (?, ?, ?, ?)")
        .await
        .unwrap();
    for (at, id) in [
        (1_i64, "a"),
        (2, "a"),
        (2, "b"),
        (2, "c"),
        (3, "a"),
        (-4, "z"),
    ] {
        session
            .execute_unpaged(&insert, ("k", at, id, "v"))
            .await
            .unwrap();
    }
    let keys = |cql: &'static str, values: (i64, &'static str)| {
        let session = &session;
        async move { rows::<(i64, String)>(session, cql, ("k", values.0, values.1)).await }
    };
    let all: Vec<(i64, String)> =
        rows(&session, "SELECT at, id FROM shop.log WHERE k = ?", ("k",)).await;
    assert_eq!(
        all,
        vec![
            (3, "a".into()),
            (2, "c".into()),
            (2, "b".into()),
            (2, "a".into()),
            (1, "a".into()),
            (-4, "z".into())
        ],
        "stored newest first, negative numbers last"
    );
    assert_eq!(
        keys(
            "SELECT at, id FROM shop.log WHERE k = ? AND (at, id) < (?, ?)",
            (2, "b")
        )
        .await,
        vec![(2, "a".into()), (1, "a".into()), (-4, "z".into())]
    );
    assert_eq!(
        keys(
            "SELECT at, id FROM shop.log WHERE k = ? AND (at, id) > (?, ?) ORDER BY at ASC, id ASC",
            (2, "a")
        )
        .await,
        vec![(2, "b".into()), (2, "c".into()), (3, "a".into())]
    );
    assert_eq!(
        keys(
            "SELECT at, id FROM shop.log WHERE k = ? AND at = ? AND id >= ? LIMIT 1",
            (2, "b")
        )
        .await,
        vec![(2, "c".into())]
    );
    let between: Vec<(i64, String)> = rows(
        &session,
        "SELECT at, id FROM shop.log WHERE k = ? AND at >= ? AND at < ? ORDER BY at ASC",
        ("k", 1_i64, 3_i64),
    )
    .await;
    assert_eq!(
        between.iter().map(|r| r.0).collect::<Vec<_>>(),
        vec![1, 2, 2, 2]
    );
}

/// `dml.html#delete_statement`: deleting a row, a clustering prefix (a range tombstone that
/// also hides older writes arriving later), a cell, and a whole partition.
#[tokio::test]
async fn deletions_of_rows_ranges_cells_and_partitions() {
    let (_standin, session) = node().await;
    keyspace(&session).await;
    run(&session, "CREATE TABLE shop.stock (store text, aisle int, shelf int, item text, PRIMARY KEY (store, aisle, shelf))").await;
    for (aisle, shelf) in [(1, 1), (1, 2), (2, 1), (2, 2), (3, 1)] {
        run(
            &session,
            &format!("INSERT INTO shop.stock (store, aisle, shelf, item) VALUES ('s', {aisle}, {shelf}, 'x') USING TIMESTAMP 100"),
        )
        .await;
    }
    let shelves = || {
        let session = &session;
        async move {
            rows::<(i32, i32)>(
                session,
                "SELECT aisle, shelf FROM shop.stock WHERE store = 's'",
                (),
            )
            .await
        }
    };
    run(
        &session,
        "DELETE FROM shop.stock USING TIMESTAMP 200 WHERE store = 's' AND aisle = 1 AND shelf = 2",
    )
    .await;
    run(
        &session,
        "DELETE FROM shop.stock USING TIMESTAMP 200 WHERE store = 's' AND aisle = 2",
    )
    .await;
    assert_eq!(shelves().await, vec![(1, 1), (3, 1)]);
    run(&session, "INSERT INTO shop.stock (store, aisle, shelf, item) VALUES ('s', 2, 9, 'late') USING TIMESTAMP 150").await;
    assert_eq!(
        shelves().await,
        vec![(1, 1), (3, 1)],
        "the range tombstone hides an older write"
    );
    run(
        &session,
        "DELETE item FROM shop.stock WHERE store = 's' AND aisle = 1 AND shelf = 1",
    )
    .await;
    let item: Vec<(Option<String>,)> = rows(
        &session,
        "SELECT item FROM shop.stock WHERE store = 's' AND aisle = 1 AND shelf = 1",
        (),
    )
    .await;
    assert_eq!(item, vec![(None,)], "the INSERT's row marker keeps the row");
    run(&session, "DELETE FROM shop.stock WHERE store = 's'").await;
    assert!(shelves().await.is_empty());
}

/// Spec section 4.2.5.2 (result metadata) and 4.2.5.4 (prepared metadata): column names and
/// types as declared, collections included, and the partition key's bind markers named so
/// that the driver routes by token.
#[tokio::test]
async fn metadata_names_columns_types_and_partition_key_markers() {
    let (_standin, session) = node().await;
    keyspace(&session).await;
    run(&session, "CREATE TABLE shop.tags (a text, b int, c bigint, tags set<text>, attrs map<text, text>, PRIMARY KEY ((a, b), c))").await;
    let insert = session
        .prepare("INSERT INTO shop.tags (a, b, c, tags, attrs) VALUES (?, ?, ?, ?, ?)")
        .await
        .unwrap();
    assert!(
        insert.is_token_aware(),
        "the partition key's markers are known"
    );
    let tags: std::collections::BTreeSet<String> = ["x".into(), "y".into()].into();
    let attrs: std::collections::HashMap<String, String> = [("k".into(), "v".into())].into();
    session
        .execute_unpaged(&insert, ("a", 1_i32, 2_i64, &tags, &attrs))
        .await
        .unwrap();
    let result = session
        .query_unpaged("SELECT * FROM shop.tags WHERE a = 'a' AND b = 1", ())
        .await
        .unwrap()
        .into_rows_result()
        .unwrap();
    let names: Vec<&str> = result
        .column_specs()
        .iter()
        .map(scylla::frame::response::result::ColumnSpec::name)
        .collect();
    assert_eq!(
        names,
        vec!["a", "b", "c", "attrs", "tags"],
        "keys first, then by name"
    );
    let (_, _, _, got_attrs, got_tags) = result
        .single_row::<(
            String,
            i32,
            i64,
            std::collections::HashMap<String, String>,
            std::collections::BTreeSet<String>,
        )>()
        .unwrap();
    assert_eq!((got_attrs, got_tags), (attrs, tags));
}

/// Spec section 9: anything outside the subset is a CQL error (0x2000 `Syntax_error` or
/// 0x2200 Invalid), never a silent success, and the connection serves on after it.
#[tokio::test]
async fn anything_else_is_a_cql_error() {
    let (_standin, session) = node().await;
    keyspace(&session).await;
    run(
        &session,
        "CREATE TABLE shop.users (id text PRIMARY KEY, name text)",
    )
    .await;
    for cql in [
        "SELECT * FROM shop.users WHERE name = 'x' ALLOW FILTERING",
        "SELECT * FROM shop.users WHERE name = 'x'",
        "INSERT INTO shop.users (id, name) VALUES ('a', 'b') IF NOT EXISTS",
        "CREATE INDEX ON shop.users (name)",
        "CREATE MATERIALIZED VIEW shop.v AS SELECT * FROM shop.users",
        "SELECT * FROM shop.missing",
        "INSERT INTO shop.users (name) VALUES ('no key')",
        "INSERT INTO system.local (key) VALUES ('x')",
        "GRANT SELECT ON shop.users TO someone",
    ] {
        let error = session.query_unpaged(cql, ()).await;
        assert!(error.is_err(), "{cql} must fail");
    }
    run(
        &session,
        "INSERT INTO shop.users (id, name) VALUES ('a', 'b')",
    )
    .await;
}

/// A node that stops and starts again on the same address keeps its data (a restart on
/// the commit log), and the driver reconnects to it by itself.
#[tokio::test]
async fn a_restarted_node_keeps_its_data_and_the_driver_reconnects() {
    let (mut standin, session) = node().await;
    keyspace(&session).await;
    run(
        &session,
        "CREATE TABLE shop.kv (k text PRIMARY KEY, v text)",
    )
    .await;
    run(&session, "INSERT INTO shop.kv (k, v) VALUES ('a', 'b')").await;
    standin.stop();
    assert!(session
        .query_unpaged("SELECT v FROM shop.kv WHERE k = 'a'", ())
        .await
        .is_err());
    standin.restart().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match session
            .query_unpaged("SELECT v FROM shop.kv WHERE k = 'a'", ())
            .await
        {
            Ok(result) => {
                let (v,) = result
                    .into_rows_result()
                    .unwrap()
                    .single_row::<(String,)>()
                    .unwrap();
                assert_eq!(v, "b");
                break;
            }
            Err(e) if tokio::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the driver never reconnected: {e}"),
        }
    }
}

/// `PasswordAuthenticator` (spec section 4.2.3 AUTHENTICATE, 4.1.2 `AUTH_RESPONSE` with SASL
/// PLAIN): the right credentials connect, wrong ones are refused.
#[tokio::test]
async fn password_authentication() {
    let standin = Standin::start_with(
        "127.0.0.1:0".parse().unwrap(),
        Some(("mmsub".into(), "secret".into())),
    )
    .await
    .unwrap();
    let good = SessionBuilder::new()
        .known_node(standin.addr().to_string())
        .user("mmsub", "secret")
        .build()
        .await;
    assert!(good.is_ok(), "{:?}", good.err());
    let bad = SessionBuilder::new()
        .known_node(standin.addr().to_string())
        .user("mmsub", "wrong")
        .build()
        .await;
    assert!(bad.is_err());
    let none = SessionBuilder::new()
        .known_node(standin.addr().to_string())
        .build()
        .await;
    assert!(none.is_err());
}
