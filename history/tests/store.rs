//! The history store's data model against a ScyllaDB node (the stand-in, or a real cluster when
//! `MMSUB_TEST_SCYLLA_NODES` is set): bucket boundaries, a page spanning two buckets, resumes
//! across buckets, the last post under edits and deletions, and TTL expiry.

use std::time::Duration;

mod support;

use mmsub_api::backend::Post;
use mmsub_history::store::HistoryStore;
use mmsub_history::HistoryConfig;
use scylla_standin::Standin;
use support::post;

const MINUTE: i64 = 60_000;

async fn store(keyspace: &str) -> (Option<Standin>, HistoryStore) {
    let (standin, nodes) = match std::env::var("MMSUB_TEST_SCYLLA_NODES") {
        Ok(nodes) => {
            eprintln!("history store tests: real ScyllaDB at {nodes}");
            (None, nodes.split(',').map(str::to_string).collect())
        }
        Err(_) => {
            let standin = Standin::start("127.0.0.1:0".parse().unwrap())
                .await
                .unwrap();
            eprintln!("history store tests: scylla-standin at {}", standin.addr());
            let nodes = vec![standin.addr().to_string()];
            (Some(standin), nodes)
        }
    };
    let mut config = HistoryConfig::development(nodes);
    config.keyspace = format!("{keyspace}_{}", std::process::id());
    config.bucket_width = Duration::from_secs(60);
    config.retention = Duration::from_secs(3600);
    let store = HistoryStore::connect(&config)
        .await
        .expect("connects and migrates");
    (standin, store)
}

fn ids(posts: &[Post]) -> Vec<&str> {
    posts.iter().map(|p| p.id.as_str()).collect()
}

#[tokio::test]
async fn pages_and_resumes_cross_bucket_boundaries_in_order() {
    let (_standin, store) = store("buckets").await;
    let now = mmsub_history::now_ms();
    // Three buckets, with two posts at the same millisecond (ordered by id) and posts on both
    // sides of a boundary.
    let base = (now / MINUTE - 3) * MINUTE;
    let posts = [
        post("c", "a", base + 10),
        post("c", "b", base + MINUTE - 1),
        post("c", "c", base + MINUTE),
        post("c", "d", base + MINUTE),
        post("c", "e", base + 2 * MINUTE + 5),
    ];
    for p in posts.iter().rev() {
        store.write_post(p).await.unwrap();
    }
    store
        .write_post(&post("other", "x", base + 20))
        .await
        .unwrap();
    assert_eq!(
        store.bucket_of(base + MINUTE - 1) + 1,
        store.bucket_of(base + MINUTE)
    );

    let floor = store.retention_floor(now);
    let newest = store.newest("c", None, floor, 3).await.unwrap();
    assert_eq!(
        ids(&newest),
        ["e", "d", "c"],
        "newest first, across a boundary"
    );
    let next = store
        .newest("c", Some((newest[2].create_at, &newest[2].id)), floor, 3)
        .await
        .unwrap();
    assert_eq!(
        ids(&next),
        ["b", "a"],
        "the page before spans the older buckets"
    );
    let all = store.newest("c", None, floor, 100).await.unwrap();
    assert_eq!(ids(&all), ["e", "d", "c", "b", "a"]);

    let after = store.after("c", base + 10, "a", 10).await.unwrap();
    assert_eq!(
        ids(&after),
        ["b", "c", "d", "e"],
        "a resume walks the buckets forward"
    );
    let after_tie = store.after("c", base + MINUTE, "c", 10).await.unwrap();
    assert_eq!(
        ids(&after_tie),
        ["d", "e"],
        "a tie on create_at is ordered by id"
    );
    assert_eq!(
        store.position("d").await.unwrap(),
        Some(("c".to_string(), base + MINUTE))
    );
    assert_eq!(store.last_post("c").await.unwrap().unwrap().id, "e");
}

#[tokio::test]
async fn the_last_post_follows_edits_and_deletions() {
    let (_standin, store) = store("last").await;
    let now = mmsub_history::now_ms();
    let (older, newer) = (post("c", "p1", now - 5_000), post("c", "p2", now - 4_000));
    store.write_post(&newer).await.unwrap();
    store.write_post(&older).await.unwrap();
    assert_eq!(
        store.last_post("c").await.unwrap().unwrap().id,
        "p2",
        "the newest wins whatever the order"
    );

    let mut edited = older.clone();
    edited.message = "older, edited".into();
    store.edit_post(&edited, now - 1_000).await.unwrap();
    assert_eq!(
        store.last_post("c").await.unwrap().unwrap().message,
        "text of p2",
        "editing an older post leaves the last one"
    );

    let mut edited = newer.clone();
    edited.message = "newest, edited".into();
    store.edit_post(&edited, now - 900).await.unwrap();
    assert_eq!(
        store.last_post("c").await.unwrap().unwrap().message,
        "newest, edited"
    );

    store
        .delete_post("c", "p2", newer.create_at, now - 800)
        .await
        .unwrap();
    let last = store.last_post("c").await.unwrap().unwrap();
    assert_eq!(
        (last.id.as_str(), last.message.as_str()),
        ("p1", "older, edited"),
        "the previous post after a delete"
    );
    assert_eq!(store.position("p2").await.unwrap(), None);
    store
        .delete_post("c", "p1", older.create_at, now - 700)
        .await
        .unwrap();
    assert!(store.last_post("c").await.unwrap().is_none());

    let later = post("c", "p3", now);
    store.write_post(&later).await.unwrap();
    assert_eq!(
        store.last_post("c").await.unwrap().unwrap().id,
        "p3",
        "a new post after the deletions"
    );
}

#[tokio::test]
async fn rows_expire_with_the_retention_and_no_read_claims_them() {
    let (standin, store) = store("ttl").await;
    let Some(standin) = standin else {
        eprintln!("history store tests: a real cluster's clock cannot be moved; this case runs on the stand-in");
        return;
    };
    let now = mmsub_history::now_ms();
    store
        .write_post(&post("c", "old", now - 1_000))
        .await
        .unwrap();
    assert_eq!(
        store
            .newest("c", None, store.retention_floor(now), 10)
            .await
            .unwrap()
            .len(),
        1
    );
    // The retention is an hour: past it the node has dropped the rows.
    standin.advance_clock(Duration::from_secs(3_601));
    assert!(store
        .newest("c", None, i64::MIN / 2, 10)
        .await
        .unwrap()
        .is_empty());
    assert!(store.position("old").await.unwrap().is_none());
    // And the floor a read uses never reaches back past what the TTL may have dropped.
    let later = now + 3_601_000;
    assert!(store.retention_floor(later) > now - 1_000);
}
