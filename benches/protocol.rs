//! (c) Decoding and encoding every message of both protocols, and (d) JWT verification.
//!
//! Client messages are decoded the way a session does (the JSON envelope, then the token of a
//! `connection_init`); server messages are encoded into a frame buffer the way a session does,
//! deliveries by splicing.

mod support;

use criterion::{criterion_group, criterion_main, Criterion};
use mmsub_api::auth::JwtKeys;
use mmsub_gateway::delivery::Delivery;
use mmsub_gateway::dialect::{encode, Dialect};
use mmsub_gateway::frames;
use serde_json::{json, Value};
use support::decode_client_message;

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    for (name, text) in support::client_messages() {
        group.bench_function(name, |b| b.iter(|| decode_client_message(name, &text)));
    }
    group.finish();
}

fn encode_messages(c: &mut Criterion) {
    let payload = support::delivery_payload();
    let error = vec![json!({"message": "You do not have permission to perform this action"})];
    let mut group = c.benchmark_group("encode");
    let mut out = Vec::with_capacity(4096);
    for dialect in [Dialect::TransportWs, Dialect::Legacy] {
        let prefix = match dialect {
            Dialect::TransportWs => "transport",
            Dialect::Legacy => "legacy",
        };
        let control: Vec<(&str, Option<&str>, Option<Value>)> = match dialect {
            Dialect::TransportWs => vec![
                ("connection_ack", None, None),
                ("ping", None, None),
                ("pong", None, None),
                ("error", Some("1"), Some(json!(error))),
                ("complete", Some("1"), None),
            ],
            Dialect::Legacy => vec![
                ("connection_ack", None, None),
                (
                    "connection_error",
                    None,
                    Some(json!({"message": "Forbidden"})),
                ),
                ("ka", None, None),
                ("error", Some("1"), Some(error[0].clone())),
                ("complete", Some("1"), None),
            ],
        };
        for (kind, id, body) in control {
            group.bench_function(format!("{prefix}/{kind}"), |b| {
                b.iter(|| {
                    out.clear();
                    frames::push_text(&mut out, &encode(id, kind, body.as_ref()));
                    out.len()
                });
            });
        }
        let delivery = Delivery {
            prefix: Delivery::prefix_for(dialect, "1"),
            payload: payload.clone(),
        };
        group.bench_function(format!("{prefix}/{}", dialect.data_type()), |b| {
            b.iter(|| {
                out.clear();
                delivery.push_to(&mut out);
                out.len()
            });
        });
    }
    group.finish();
}

fn jwt(c: &mut Criterion) {
    let keys = JwtKeys::new(
        b"bench-secret",
        std::time::Duration::from_secs(1800),
        std::time::Duration::from_secs(7 * 86400),
    );
    let token = keys
        .issue(&mmsub_api::backend::Actor::named("alice"), None)
        .token;
    c.bench_function("jwt/verify", |b| {
        b.iter(|| keys.verify(&token).expect("valid"));
    });
}

criterion_group!(benches, decode, encode_messages, jwt);
criterion_main!(benches);
