//! The CI performance gate's workload: fixed, single-threaded work on the hot path, run under
//! callgrind by `scripts/perf-gate.sh`, which counts the instructions executed inside
//! `measure` only (setup is not counted) and compares them with `benches/gate-baseline.txt`.
//!
//! Instruction counts do not depend on machine load, so unlike wall-clock timings they can
//! gate a shared CI machine. `gate <workload>` runs one workload; without an argument it runs
//! them all once (a smoke run).

mod support;

use std::hint::black_box;

use mmsub_api::auth::JwtKeys;
use mmsub_gateway::delivery::Delivery;
use mmsub_gateway::dialect::Dialect;
use support::{Fanout, HttpMutation};

pub const WORKLOADS: [&str; 5] = [
    "fanout_same",
    "fanout_ten",
    "protocol",
    "jwt",
    "http_mutation",
];

enum Prepared {
    Fanout(Fanout),
    Protocol(Vec<(&'static str, String)>, Delivery),
    Jwt(Box<JwtKeys>, String),
    HttpMutation(HttpMutation),
}

fn prepare(workload: &str) -> Prepared {
    match workload {
        // 100 subscribers of one channel; one selection, or ten.
        "fanout_same" | "fanout_ten" => {
            let selections = if workload == "fanout_same" { 1 } else { 10 };
            let mut fixture = Fanout::new(100, selections);
            // Warm up: the first events fill lazily built caches (schema, allocator).
            for _ in 0..3 {
                fixture.deliver_one();
            }
            Prepared::Fanout(fixture)
        }
        "protocol" => Prepared::Protocol(
            support::client_messages(),
            Delivery {
                prefix: Delivery::prefix_for(Dialect::TransportWs, "1"),
                payload: support::delivery_payload(),
            },
        ),
        "jwt" => {
            let keys = JwtKeys::new(
                b"gate-secret",
                std::time::Duration::from_secs(1800),
                std::time::Duration::from_secs(86400),
            );
            let token = keys
                .issue(&mmsub_api::backend::Actor::named("alice"), None)
                .token;
            Prepared::Jwt(Box::new(keys), token)
        }
        // One GraphQL-over-HTTP request; warmed up so its document is parsed and cached.
        "http_mutation" => {
            let fixture = HttpMutation::new();
            for _ in 0..3 {
                let answer = fixture.send_one();
                assert!(
                    String::from_utf8_lossy(&answer).contains("Message is empty."),
                    "unexpected answer: {}",
                    String::from_utf8_lossy(&answer)
                );
            }
            Prepared::HttpMutation(fixture)
        }
        other => panic!("unknown workload {other:?}: one of {WORKLOADS:?}"),
    }
}

/// The only function whose instructions callgrind counts.
#[inline(never)]
fn measure(prepared: &mut Prepared) {
    match prepared {
        Prepared::Fanout(fixture) => {
            for _ in 0..20 {
                black_box(fixture.deliver_one());
            }
        }
        Prepared::Protocol(messages, delivery) => {
            let mut out = Vec::with_capacity(1 << 16);
            for _ in 0..100 {
                for (name, text) in messages.iter() {
                    black_box(support::decode_client_message(name, text));
                }
                delivery.push_to(&mut out);
            }
            black_box(out);
        }
        Prepared::Jwt(keys, token) => {
            for _ in 0..100 {
                black_box(keys.verify(token).expect("valid"));
            }
        }
        Prepared::HttpMutation(fixture) => {
            for _ in 0..20 {
                black_box(fixture.send_one());
            }
        }
    }
}

fn main() {
    // `cargo bench` passes `--bench`; only a workload name selects one.
    let chosen: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let workloads: Vec<&str> = if chosen.is_empty() {
        WORKLOADS.to_vec()
    } else {
        chosen.iter().map(String::as_str).collect()
    };
    for workload in workloads {
        let mut prepared = prepare(workload);
        measure(&mut prepared);
        println!("gate workload {workload}: done");
    }
}
