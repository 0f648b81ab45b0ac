//! A warm history page, from ScyllaDB rows to the GraphQL answer's bytes.
//!
//! - `store_read/N`: `HistoryStore::newest` for a page of N (N + 1 rows, as a warm read asks
//!   for): the prepared statement through the real `scylla` driver and the decode of its rows
//!   into posts. The node answering is the in-process `scylla-standin`, so its CPU is inside
//!   the figure too; a real ScyllaDB's is not, and the loopback round trip is.
//! - `answer/N`: those posts into the contract's `MessageListType` (the resolver's
//!   [`MessageListType::from_page`]) and executed to JSON bytes with the contract's selection,
//!   on a schema built once.
//! - `read_and_answer/N`: both, as one warm `getMessageList` costs beyond the membership check.
//!
//! `cargo bench --bench history`.

use std::sync::Arc;
use std::time::Duration;

use async_graphql::{Context, EmptyMutation, EmptySubscription, Object, Request, Schema};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use mmsub_api::backend::{MessagePage, Post, User};
use mmsub_api::schema::types::MessageListType;
use mmsub_history::store::HistoryStore;
use mmsub_history::HistoryConfig;
use scylla_standin::Standin;

const CHANNEL: &str = "benchchannelid000000000000";
const SIZES: [usize; 2] = [20, 100];
const QUERY: &str = "{ getMessageList { data { id message createAt type owner { id username } } hasNext hasPrevious } }";

/// The answer's root: the page the store gave (request data), as the resolver returns it.
struct Answer;

/// The page one request answers.
struct Page(std::sync::Mutex<Option<MessagePage>>);

#[Object]
impl Answer {
    async fn get_message_list(&self, ctx: &Context<'_>) -> Option<MessageListType> {
        let page = ctx.data_unchecked::<Page>().0.lock().ok()?.take()?;
        Some(MessageListType::from_page(page, chrono_tz::UTC))
    }
}

type AnswerSchema = Schema<Answer, EmptyMutation, EmptySubscription>;

fn post(n: usize, create_at: i64) -> Post {
    Post {
        id: format!("post{n:022}"),
        channel_id: CHANNEL.into(),
        message: format!("message number {n} of the benchmark, about as long as a chat line"),
        create_at,
        post_type: String::new(),
        author: User {
            id: "benchuserid000000000000000".into(),
            username: "alice".into(),
            email: "alice@example.com".into(),
            is_staff: false,
        },
    }
}

/// Renders `posts` (newest first, as the store reads them) as the answer's JSON bytes, with
/// a schema built once, as a node's is.
async fn answer(schema: &AnswerSchema, posts: Vec<Post>, size: usize) -> Vec<u8> {
    let mut posts: Vec<Post> = posts.into_iter().take(size).collect();
    posts.reverse();
    let page = MessagePage {
        has_previous: true,
        has_next: false,
        posts,
    };
    let request = Request::new(QUERY).data(Page(std::sync::Mutex::new(Some(page))));
    let response = schema.execute(request).await;
    assert!(response.errors.is_empty(), "{:?}", response.errors);
    serde_json::to_vec(&response).expect("serializable")
}

fn history_page(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (_standin, store) = runtime.block_on(async {
        let standin = Standin::start("127.0.0.1:0".parse().unwrap())
            .await
            .expect("stand-in");
        let mut config = HistoryConfig::development(vec![standin.addr().to_string()]);
        config.keyspace = format!("bench_{}", std::process::id());
        config.request_timeout = Duration::from_secs(10);
        let store = HistoryStore::connect(&config).await.expect("store");
        let now = mmsub_history::now_ms();
        for n in 0..=SIZES[1] {
            store
                .write_post(&post(n, now - 1_000 + n as i64))
                .await
                .expect("write");
        }
        (standin, Arc::new(store))
    });
    let floor = store.retention_floor(mmsub_history::now_ms());
    let schema = Schema::build(Answer, EmptyMutation, EmptySubscription).finish();
    let schema = &schema;
    let mut group = c.benchmark_group("history_page");
    for size in SIZES {
        group.bench_with_input(BenchmarkId::new("store_read", size), &size, |b, &size| {
            b.to_async(&runtime).iter(|| {
                let store = store.clone();
                async move {
                    let rows = store.newest(CHANNEL, None, floor, size + 1).await.unwrap();
                    assert_eq!(rows.len(), size + 1);
                    rows
                }
            });
        });
        let rows = runtime
            .block_on(store.newest(CHANNEL, None, floor, size + 1))
            .unwrap();
        group.bench_with_input(BenchmarkId::new("answer", size), &size, |b, &size| {
            b.to_async(&runtime)
                .iter(|| answer(schema, rows.clone(), size));
        });
        group.bench_with_input(
            BenchmarkId::new("read_and_answer", size),
            &size,
            |b, &size| {
                b.to_async(&runtime).iter(|| {
                    let store = store.clone();
                    async move {
                        let rows = store.newest(CHANNEL, None, floor, size + 1).await.unwrap();
                        answer(schema, rows, size).await
                    }
                });
            },
        );
    }
    group.finish();
}

criterion_group!(benches, history_page);
criterion_main!(benches);
