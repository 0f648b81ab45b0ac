//! Fixtures shared by the benches: a node's delivery path without sockets, and GraphQL over
//! HTTP up to the store.
//!
//! [`Fanout`] is everything between "an event reached this node" and "its bytes sit in each
//! connection's write buffer": the hub, the subscription groups (GraphQL rendering once per
//! group, JSON once per group), each connection's outbox, and frame encoding. Only the socket
//! write is left out, which is the kernel's cost, not ours.

#![allow(dead_code)]

use std::sync::Arc;

use bytes::Bytes;
use serde_json::json;
use std::time::Duration;

use mmsub_api::auth::JwtKeys;
use mmsub_api::backend::embedded::EmbeddedStore;
use mmsub_api::{build_schema, ApiSettings, AppState};
use mmsub_events::{EventAuthor, EventPost, EventSink, FanoutHub, InProcessBus, MessageEvent};
use mmsub_gateway::delivery::Delivery;
use mmsub_gateway::dialect::Dialect;
use mmsub_gateway::groups::plan::{plan, Plan};
use mmsub_gateway::groups::{MemberHandle, SubscriptionGroups};
use mmsub_gateway::outbox::{outbox, OutboxReceiver};

pub const CHANNEL_ID: &str = "benchchannelid000000000000";

pub struct Fanout {
    pub runtime: tokio::runtime::Runtime,
    hub: Arc<FanoutHub>,
    _members: Vec<MemberHandle>,
    receivers: Vec<OutboxReceiver>,
    out: Vec<u8>,
    sequence: u64,
    _dir: tempfile::TempDir,
}

/// The subscription document of selection `i`: all select the same fields, under their own
/// alias, so each is its own group.
pub fn selection(i: usize) -> String {
    format!(
        "subscription {{ s{i}: onNewChatMessage(channelIdentifier: \"bench\") {{ channelIdentifier message {{ id message createAt type owner {{ id username email isStaff }} }} }} }}"
    )
}

impl Fanout {
    /// `subscribers` connections of one subscription each, spread over `selections` groups.
    pub fn new(subscribers: usize, selections: usize) -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("temp dir");
        let hub = FanoutHub::new();
        let settings = ApiSettings::default();
        let state = Arc::new(AppState::new(
            Arc::new(EmbeddedStore::open(dir.path(), "bench").expect("store")),
            Arc::new(InProcessBus::new(hub.clone())),
            JwtKeys::new(b"bench", Duration::from_secs(60), Duration::from_secs(60)),
            settings,
            mmsub_metrics::Metrics::new(),
        ));
        let metrics = state.metrics.clone();
        let groups = SubscriptionGroups::new(build_schema(state), hub.clone(), metrics);
        let mut members = Vec::with_capacity(subscribers);
        let mut receivers = Vec::with_capacity(subscribers);
        let _entered = runtime.enter();
        for s in 0..subscribers {
            let (outbox, receiver) = outbox(1 << 20);
            let query = selection(s % selections);
            let Plan::Shared(key) = plan(&mut async_graphql::Request::new(query.clone())) else {
                panic!("{query} is not a shared subscription");
            };
            let member = groups.join(
                key,
                CHANNEL_ID,
                move || async_graphql::Request::new(query),
                Delivery::prefix_for(Dialect::TransportWs, &format!("sub-{s}")),
                outbox,
            );
            member.go_live(None);
            members.push(member);
            receivers.push(receiver);
        }
        drop(_entered);
        Self {
            runtime,
            hub,
            _members: members,
            receivers,
            out: Vec::with_capacity(1 << 16),
            sequence: 0,
            _dir: dir,
        }
    }

    /// Delivers one event to every subscriber: returns the bytes that would be written.
    pub fn deliver_one(&mut self) -> usize {
        self.sequence += 1;
        self.hub.deliver(Arc::new(event(self.sequence)));
        let (receivers, out) = (&mut self.receivers, &mut self.out);
        self.runtime.block_on(async {
            let mut written = 0;
            for receiver in receivers.iter_mut() {
                receiver.waiting().await;
                receiver.take(out, usize::MAX);
                // One connection's buffer is written and reused: count, then clear.
                written += out.len();
                out.clear();
            }
            written
        })
    }
}

pub fn event(sequence: u64) -> MessageEvent {
    MessageEvent::new(
        CHANNEL_ID.into(),
        "bench".into(),
        EventPost {
            id: format!("{sequence:026}"),
            message: "A chat message of an ordinary length, with some words in it.".into(),
            create_at: 1_700_000_000_000 + sequence as i64,
            post_type: String::new(),
            author: EventAuthor {
                id: "authoridauthoridauthorid00".into(),
                username: "alice".into(),
                email: "alice@example.com".into(),
                is_staff: false,
            },
        },
    )
}

/// Every client message of both protocols, named, as a client sends it.
pub fn client_messages() -> Vec<(&'static str, String)> {
    let subscription = selection(0);
    vec![
        ("transport/connection_init", json!({"type": "connection_init", "payload": {"Authorization": "JWT eyJhbGciOiJIUzI1NiJ9.e30.sig"}}).to_string()),
        ("transport/subscribe", json!({"id": "1", "type": "subscribe", "payload": {"query": subscription, "variables": {"c": "town-square"}}}).to_string()),
        ("transport/ping", json!({"type": "ping"}).to_string()),
        ("transport/pong", json!({"type": "pong"}).to_string()),
        ("transport/complete", json!({"id": "1", "type": "complete"}).to_string()),
        ("legacy/connection_init", json!({"type": "connection_init", "payload": {"headers": {"Authorization": "JWT eyJhbGciOiJIUzI1NiJ9.e30.sig"}}}).to_string()),
        ("legacy/start", json!({"id": "1", "type": "start", "payload": {"query": subscription}}).to_string()),
        ("legacy/stop", json!({"id": "1", "type": "stop"}).to_string()),
        ("legacy/connection_terminate", json!({"type": "connection_terminate"}).to_string()),
    ]
}

/// Decodes one of [`client_messages`] as its dialect (the name's prefix) does.
pub fn decode_client_message(name: &str, text: &str) -> bool {
    if name.starts_with("legacy/") {
        mmsub_gateway::dialect::legacy::ClientMessage::decode(text).is_some()
    } else {
        mmsub_gateway::dialect::transport_ws::ClientMessage::decode(text).is_some()
    }
}

/// A `next` payload as a group renders it for [`selection`].
pub fn delivery_payload() -> Bytes {
    let payload = json!({"data": {"onNewChatMessage": {"channelIdentifier": "town-square", "message": {"id": "00000000000000000000000001", "message": "hello", "createAt": "2023-11-14T22:13:20.123000+00:00", "type": "str", "owner": {"username": "alice"}}}}});
    Bytes::from(serde_json::to_vec(&payload).expect("json"))
}

/// GraphQL over HTTP up to the resolver: body, token, document, validation, execution and the
/// JSON answer. The request is a `textMessageSend` of an empty message, which the resolver
/// refuses before the store, so the work is the same every time and stays on this thread.
pub struct HttpMutation {
    runtime: tokio::runtime::Runtime,
    schema: mmsub_api::MmsubSchema,
    state: Arc<AppState>,
    authorization: String,
    body: Bytes,
    _dir: tempfile::TempDir,
}

impl HttpMutation {
    pub fn new() -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("temp dir");
        let jwt = JwtKeys::new(b"bench", Duration::from_secs(1800), Duration::from_secs(60));
        let token = jwt
            .issue(&mmsub_api::backend::Actor::named("alice"), None)
            .token;
        let state = Arc::new(AppState::new(
            Arc::new(EmbeddedStore::open(dir.path(), "bench").expect("store")),
            Arc::new(InProcessBus::new(FanoutHub::new())),
            jwt,
            ApiSettings::default(),
            mmsub_metrics::Metrics::new(),
        ));
        let body = json!({
            "query": "mutation($c: String!, $t: String!) { textMessageSend(channelIdentifier: $c, textMessage: $t) { statusCode message } }",
            "variables": { "c": "general", "t": "   " },
        });
        Self {
            runtime,
            schema: build_schema(state.clone()),
            state,
            authorization: format!("JWT {token}"),
            body: Bytes::from(body.to_string()),
            _dir: dir,
        }
    }

    /// Runs the request once: the answer's body.
    pub fn send_one(&self) -> Bytes {
        let request = http::Request::post("/graphql/")
            .header(http::header::AUTHORIZATION, &self.authorization)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(http_body_util::Full::new(self.body.clone()))
            .expect("request");
        self.runtime.block_on(async {
            let response = mmsub_api::http::handle(&self.schema, &self.state, request).await;
            http_body_util::BodyExt::collect(response.into_body())
                .await
                .expect("infallible body")
                .to_bytes()
        })
    }
}
