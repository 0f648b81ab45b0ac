//! Property tests of every parser that reads what a client or a peer sends, 1,000 cases each,
//! from random bytes and from generators of near-valid input: none may panic, each stays
//! within a memory bound (counted by the allocator below, per thread), and where there is an
//! encoder, what it encodes reads back the same.
//!
//! Covered: the WebSocket frame reader, both protocols' message decoders and the
//! `connection_init` credentials, the subscription group key normalizer, the relay–gateway
//! wire decoder, token parsing, and the query cost counter.

mod alloc;
#[path = "../support/ws_frame.rs"]
mod ws_frame;

use std::time::Duration;

use async_graphql::Variables;
use bytes::BytesMut;
use mmsub_api::auth::{token_from_authorization, JwtKeys, TokenError};
use mmsub_api::backend::Actor;
use mmsub_api::cost::{self, CostError, CostLimits};
use mmsub_gateway::dialect::{encode, legacy, transport_ws, Credentials};
use mmsub_gateway::frames::{sendable_close_code, FrameLimits, FrameReader, Inbound};
use mmsub_gateway::groups::plan::{plan, Plan};
use mmsub_relay::wire::{WireCodec, WireFrame};
use proptest::prelude::*;
use serde_json::{json, Value};
use tokio_util::codec::{Decoder, Encoder};

use alloc::peak_growth;

#[global_allocator]
static ALLOCATOR: alloc::Counting = alloc::Counting;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 1000,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------
// WebSocket frames

const LIMITS: FrameLimits = FrameLimits {
    max_frame_bytes: 1024,
    max_message_bytes: 4096,
};

fn near_valid_frame() -> impl Strategy<Value = Vec<u8>> {
    let first = prop_oneof![
        Just(0x81u8),
        Just(0x01),
        Just(0x80),
        Just(0x00),
        Just(0x82),
        Just(0x88),
        Just(0x89),
        Just(0x8a),
        Just(0x09),
        Just(0xc1),
        Just(0x83),
        any::<u8>()
    ];
    let payload = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..200),
        "[ -~]{0,200}".prop_map(String::into_bytes),
        (any::<u16>(), "[ -~]{0,20}").prop_map(|(code, reason)| {
            let mut p = code.to_be_bytes().to_vec();
            p.extend_from_slice(reason.as_bytes());
            p
        }),
        proptest::collection::vec(any::<u8>(), 1000..1100),
    ];
    let lie = prop_oneof![
        8 => Just(None),
        1 => any::<u64>().prop_map(Some),
        1 => (0u64..70_000).prop_map(Some),
    ];
    (first, payload, lie)
        .prop_map(|(first, payload, lie)| ws_frame::masked_frame(first, &payload, lie))
}

/// Everything the reader makes of `bytes`, fed in pieces of `chunk` bytes, up to the first
/// message that ends the connection.
fn read_all(bytes: &[u8], chunk: usize) -> Vec<Inbound> {
    let mut reader = FrameReader::new(LIMITS);
    let mut messages = Vec::new();
    for piece in bytes.chunks(chunk.max(1)) {
        reader.preload(piece);
        while let Some(message) = reader.next_message() {
            let last = matches!(message, Inbound::Close(_) | Inbound::Violation { .. });
            messages.push(message);
            if last {
                return messages;
            }
        }
    }
    messages
}

fn frame_properties_hold(bytes: &[u8], chunk: usize) {
    let (messages, grew) = peak_growth(|| read_all(bytes, chunk));
    // The input, the largest message twice (buffer and assembled copy), and bookkeeping.
    let bound = bytes.len() * 2 + 2 * LIMITS.max_message_bytes + (64 << 10);
    assert!(
        grew <= bound,
        "{grew} bytes for {} bytes of input",
        bytes.len()
    );
    for message in &messages {
        match message {
            Inbound::Text(text) => assert!(text.len() <= LIMITS.max_message_bytes),
            Inbound::Close(Some(code)) => {
                assert!(
                    sendable_close_code(*code),
                    "a close code no peer may send: {code}"
                );
            }
            Inbound::Violation { code, .. } => {
                assert!([1002, 1007, 1009].contains(code), "violation code {code}");
            }
            _ => {}
        }
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn frames_from_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..4096), chunk in 1usize..600) {
        frame_properties_hold(&bytes, chunk);
    }

    #[test]
    fn frames_from_near_valid_frames(frames in proptest::collection::vec(near_valid_frame(), 0..12), chunk in 1usize..600) {
        frame_properties_hold(&frames.concat(), chunk);
    }

    #[test]
    fn text_messages_read_back_whole_however_fragmented(
        texts in proptest::collection::vec("\\PC{0,300}", 1..6),
        cuts in proptest::collection::vec(1usize..120, 6),
        chunk in 1usize..300,
    ) {
        let mut bytes = Vec::new();
        for (text, cut) in texts.iter().zip(&cuts) {
            let pieces: Vec<&[u8]> = text.as_bytes().chunks(*cut).collect();
            let pieces = if pieces.is_empty() { vec![&[][..]] } else { pieces };
            for (i, piece) in pieces.iter().enumerate() {
                let opcode = if i == 0 { 0x01 } else { 0x00 };
                let fin = if i + 1 == pieces.len() { 0x80 } else { 0 };
                bytes.extend(ws_frame::masked_frame(opcode | fin, piece, None));
            }
        }
        let read: Vec<String> = read_all(&bytes, chunk)
            .into_iter()
            .map(|m| match m {
                Inbound::Text(t) => t,
                other => panic!("expected text, got {other:?}"),
            })
            .collect();
        prop_assert_eq!(read, texts);
    }
}

// ---------------------------------------------------------------------------------------
// Both protocols' client messages, and connection_init credentials

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "\\PC{0,40}".prop_map(Value::from),
        Just(Value::from("JWT a.b.c")),
        Just(Value::from("Bearer ")),
    ];
    leaf.prop_recursive(6, 64, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("headers".to_owned()),
                    Just("Authorization".to_owned()),
                    Just("authorization".to_owned()),
                    Just("token".to_owned()),
                    "[a-z]{1,8}"
                ],
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn client_message_text() -> impl Strategy<Value = String> {
    let kind = prop_oneof![
        Just("connection_init"),
        Just("subscribe"),
        Just("start"),
        Just("stop"),
        Just("complete"),
        Just("ping"),
        Just("pong"),
        Just("connection_terminate"),
        Just("next"),
        Just("")
    ];
    prop_oneof![
        "\\PC{0,200}",
        (
            kind,
            proptest::option::of("\\PC{0,10}"),
            proptest::option::of(json_value())
        )
            .prop_map(|(kind, id, payload)| {
                json!({ "type": kind, "id": id, "payload": payload }).to_string()
            }),
        (json_value(), json_value()).prop_map(|(a, b)| json!({ "type": a, "id": b }).to_string()),
        Just("[".repeat(10_000)),
        Just(format!(
            "{{\"type\":\"connection_init\",\"payload\":{}}}",
            "[".repeat(5000)
        )),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn client_messages_decode_or_are_refused(text in client_message_text()) {
        let ((), grew) = peak_growth(|| {
            let _ = legacy::ClientMessage::decode(&text);
            if let Some(transport_ws::ClientMessage::Subscribe { payload: Some(payload), .. }) =
                transport_ws::ClientMessage::decode(&text)
            {
                let _ = serde_json::from_value::<async_graphql::Request>(payload);
            }
        });
        prop_assert!(grew <= text.len() * 16 + (64 << 10), "{} bytes", grew);
    }

    #[test]
    fn credentials_are_found_wherever_the_contract_puts_them(token in "[A-Za-z0-9._-]{1,60}", form in 0usize..4) {
        let payload = match form {
            0 => json!({ "headers": { "Authorization": format!("JWT {token}") } }),
            1 => json!({ "Authorization": format!("Bearer {token}") }),
            2 => json!({ "authorization": format!("jwt {token}") }),
            _ => json!({ "token": token }),
        };
        prop_assert_eq!(Credentials::of_init(Some(&payload)), Credentials::Token(token.clone()));
        let header = format!("JWT {token}");
        prop_assert_eq!(token_from_authorization(&header), Some(token.as_str()));
    }

    #[test]
    fn server_messages_read_back_as_sent(id in proptest::option::of("\\PC{0,20}"), kind in "[a-z_]{1,20}", payload in proptest::option::of(json_value())) {
        let encoded = encode(id.as_deref(), &kind, payload.clone());
        let read: Value = serde_json::from_slice(&encoded).unwrap();
        prop_assert_eq!(&read["type"], &json!(kind));
        prop_assert_eq!(read.get("id").cloned(), id.map(Value::from));
        prop_assert_eq!(read.get("payload").cloned(), payload);
    }
}

// ---------------------------------------------------------------------------------------
// Subscription group keys

/// A subscription document, printed with the given spacing and an optional comment: the
/// same selection whatever the spelling.
fn subscription_text(fields: &[String], alias: bool, spacing: &str, comment: bool) -> String {
    let sep = format!("{spacing} ");
    let selection = fields.join(&sep);
    let alias = if alias { "m:" } else { "" };
    let comment = if comment { "# a comment {\n" } else { "" };
    format!(
        "{comment}subscription S($c: String!){spacing}{{{spacing}{alias}onNewChatMessage(channelIdentifier:{spacing}$c){spacing}{{ message {{ {selection} }} }} }}"
    )
}

fn field_names() -> impl Strategy<Value = Vec<String>> {
    proptest::collection::vec(
        prop_oneof![
            Just("id"),
            Just("message"),
            Just("createAt"),
            Just("owner { username }"),
            Just("type")
        ],
        1..5,
    )
    .prop_map(|v| v.into_iter().map(str::to_owned).collect())
}

fn key_of(query: &str, variables: Value) -> Plan {
    plan(&mut async_graphql::Request::new(query).variables(Variables::from_json(variables)))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn group_keys_ignore_spelling_and_never_panic(
        fields in field_names(),
        alias in any::<bool>(),
        spacing in prop_oneof![Just(""), Just(" "), Just("\n\t"), Just(" , ")],
        comment in any::<bool>(),
        channel in "[a-z]{1,12}",
    ) {
        let plain = key_of(&subscription_text(&fields, alias, " ", false), json!({ "c": channel }));
        let spelled = key_of(&subscription_text(&fields, alias, spacing, comment), json!({ "c": channel }));
        prop_assert!(matches!(plain, Plan::Shared(_)), "{:?}", plain);
        prop_assert_eq!(plain, spelled);
    }

    #[test]
    fn group_keys_of_arbitrary_text(text in prop_oneof!["\\PC{0,300}", "(subscription|query|\\{|\\}|\\.\\.\\.|on |fragment |\\$c|onNewChatMessage|\\(|\\)|:|@skip|[a-z]{1,5}| ){0,60}"]) {
        let ((), grew) = peak_growth(|| { let _ = key_of(&text, json!({ "c": "x" })); });
        prop_assert!(grew <= text.len() * 64 + (256 << 10), "{} bytes", grew);
    }
}

// ---------------------------------------------------------------------------------------
// The relay–gateway wire

fn wire_frame() -> impl Strategy<Value = WireFrame> {
    prop_oneof![
        (any::<u64>(), "\\PC{0,40}").prop_map(|(seq, channel)| WireFrame::Watch { seq, channel }),
        "\\PC{0,40}".prop_map(|channel| WireFrame::Unwatch { channel }),
        (any::<i32>(), any::<i64>())
            .prop_map(|(partition, offset)| WireFrame::Ack { partition, offset }),
        any::<u64>().prop_map(|seq| WireFrame::Watching { seq }),
        (
            any::<i32>(),
            any::<i64>(),
            proptest::collection::vec(any::<u8>(), 0..300)
        )
            .prop_map(|(partition, offset, p)| WireFrame::Event {
                partition,
                offset,
                payload: p.into()
            }),
    ]
}

fn decode_all(bytes: &[u8], chunk: usize) -> Vec<Result<WireFrame, String>> {
    let mut codec = WireCodec::default();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in bytes.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => out.push(Ok(frame)),
                Ok(None) => break,
                Err(e) => {
                    out.push(Err(e.to_string()));
                    return out;
                }
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn wire_frames_read_back_as_encoded(frames in proptest::collection::vec(wire_frame(), 0..10), chunk in 1usize..400) {
        let mut codec = WireCodec::default();
        let mut bytes = BytesMut::new();
        for frame in &frames {
            codec.encode(frame.clone(), &mut bytes).unwrap();
        }
        let read: Vec<WireFrame> = decode_all(&bytes, chunk).into_iter().map(Result::unwrap).collect();
        prop_assert_eq!(read, frames);
    }

    #[test]
    fn wire_bytes_from_a_broken_peer(
        bytes in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..2048),
            // A frame of a known kind whose body is shorter or longer than the kind needs.
            (prop_oneof![Just(b'W'), Just(b'U'), Just(b'A'), Just(b'K'), Just(b'E'), any::<u8>()], proptest::collection::vec(any::<u8>(), 0..40))
                .prop_map(|(kind, body)| {
                    let mut b = (body.len() as u32 + 1).to_be_bytes().to_vec();
                    b.push(kind);
                    b.extend(body);
                    b
                }),
            (any::<u32>(), proptest::collection::vec(any::<u8>(), 0..40)).prop_map(|(len, body)| {
                let mut b = len.to_be_bytes().to_vec();
                b.extend(body);
                b
            }),
        ],
        chunk in 1usize..400,
    ) {
        let (_, grew) = peak_growth(|| decode_all(&bytes, chunk));
        // A length prefix may make the codec reserve up to its 1 MiB frame limit.
        prop_assert!(grew <= bytes.len() * 4 + (2 << 20), "{} bytes", grew);
    }
}

// ---------------------------------------------------------------------------------------
// Tokens

fn keys() -> JwtKeys {
    JwtKeys::new(
        b"property-test-secret-of-32-bytes!!",
        Duration::from_secs(1800),
        Duration::from_secs(7 * 86_400),
    )
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn issued_tokens_verify_and_name_their_user(user in "[a-z][a-z0-9._-]{2,21}") {
        let keys = keys();
        let issued = keys.issue(&Actor::named(&user), None);
        prop_assert_eq!(keys.verify(&issued.token).unwrap().claims.username, user);
    }

    #[test]
    fn altered_or_foreign_tokens_never_verify(
        user in "[a-z]{3,10}",
        at in any::<prop::sample::Index>(),
        with in any::<u8>(),
        header in prop_oneof![Just(r#"{"alg":"none","typ":"JWT"}"#), Just(r#"{"alg":"HS512"}"#), Just(r#"{"alg":"RS256"}"#), Just(r#"{"alg":"HS256"}"#)],
        exp_offset in -100_000i64..100_000_000,
    ) {
        let keys = keys();
        let issued = keys.issue(&Actor::named(&user), None).token;
        // One byte changed anywhere: it verifies only if it still says exactly the same.
        let mut bytes = issued.clone().into_bytes();
        let i = at.index(bytes.len());
        bytes[i] = with;
        if let Ok(altered) = String::from_utf8(bytes) {
            if let Ok(v) = keys.verify(&altered) {
                prop_assert_eq!(v.claims.username, user.clone());
            }
        }
        // A header of its own choosing, with the original signature or none.
        let now = mmsub_api::clock::unix_seconds();
        let claims = json!({ "username": user, "exp": now + exp_offset, "origIat": now });
        let signature = issued.rsplit('.').next().unwrap();
        for forged in [
            format!("{}.{}.", b64(header.as_bytes()), b64(claims.to_string().as_bytes())),
            format!("{}.{}.{signature}", b64(header.as_bytes()), b64(claims.to_string().as_bytes())),
        ] {
            prop_assert!(keys.verify(&forged).is_err(), "{}", forged);
        }
        // Signed right but with a lifetime this server does not issue, or already over.
        let signed = jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(b"property-test-secret-of-32-bytes!!"),
        ).unwrap();
        let verdict = keys.verify(&signed);
        if exp_offset <= 0 {
            prop_assert_eq!(verdict.unwrap_err(), TokenError::Expired);
        } else if exp_offset > 1800 + 60 {
            prop_assert_eq!(verdict.unwrap_err(), TokenError::TooLong);
        } else {
            prop_assert!(verdict.is_ok());
        }
    }

    #[test]
    fn token_text_from_anyone(text in prop_oneof!["\\PC{0,300}", "[A-Za-z0-9_-]{0,80}\\.[A-Za-z0-9_-]{0,200}\\.[A-Za-z0-9_-]{0,80}"]) {
        let keys = keys();
        let ((), grew) = peak_growth(|| {
            let _ = keys.verify(&text);
            let _ = keys.refresh(&text);
            let _ = token_from_authorization(&text);
        });
        prop_assert!(grew <= text.len() * 8 + (64 << 10), "{} bytes", grew);
    }
}

// ---------------------------------------------------------------------------------------
// The query cost counter

/// A document of `levels` fragments, fragment `n` using fragment `n - 1` `uses[n]` times and
/// selecting `own[n]` fields of its own, with the fields it executes counted alongside.
#[derive(Debug, Clone)]
struct FragmentDoc {
    text: String,
    /// Fields, spreads and inline fragments as they execute.
    executed: u64,
}

fn fragment_doc() -> impl Strategy<Value = FragmentDoc> {
    (
        proptest::collection::vec((1u64..4, 0u64..3, any::<bool>()), 1..12),
        1u64..3,
        proptest::option::of(1u64..500),
    )
        .prop_map(|(levels, root_uses, page)| {
            let mut text = String::new();
            // executed[n]: what one use of fragment n costs.
            let mut executed = vec![1u64];
            text.push_str("fragment f0 on Query { __typename }\n");
            for (n, (uses, own, inline)) in levels.iter().enumerate() {
                let n = n + 1;
                let mut body = String::new();
                let mut cost: u64 = 0;
                for u in 0..*uses {
                    if *inline {
                        body.push_str(&format!(" ... on Query {{ ...f{} }}", n - 1));
                        cost = cost.saturating_add(2).saturating_add(executed[n - 1]);
                    } else {
                        body.push_str(&format!(" ...f{}", n - 1));
                        cost = cost.saturating_add(1).saturating_add(executed[n - 1]);
                    }
                    let _ = u;
                }
                for o in 0..*own {
                    body.push_str(&format!(" a{o}: __typename"));
                    cost = cost.saturating_add(1);
                }
                text.push_str(&format!("fragment f{n} on Query {{{body} }}\n"));
                executed.push(cost);
            }
            let top = levels.len();
            let mut root = String::new();
            let mut total: u64 = 0;
            for r in 0..root_uses {
                root.push_str(&format!(" r{r}: __typename ...f{top}"));
                total = total.saturating_add(2).saturating_add(executed[top]);
            }
            if let Some(size) = page {
                root.push_str(&format!(
                    " getMessageList(channelIdentifier: \"x\", page: {{ pageSize: {size} }}) {{ data {{ id message }} }}"
                ));
                total = total.saturating_add(1 + size * 3);
            }
            FragmentDoc {
                text: format!("query {{{root} }}\n{text}"),
                executed: total,
            }
        })
}

const COST: CostLimits = CostLimits {
    max_cost: 50_000,
    max_depth: 16,
    max_password_checks: 2,
    fields: mmsub_api::schema::FIELD_COSTS,
};

proptest! {
    #![proptest_config(config())]

    #[test]
    fn cost_counts_every_use_of_every_fragment(doc in fragment_doc()) {
        let document = async_graphql::parser::parse_query(&doc.text).unwrap();
        let counted = cost::document_cost(&document, &Variables::default(), COST);
        if doc.executed > COST.max_cost {
            prop_assert_eq!(counted, Err(CostError::TooCostly { limit: COST.max_cost }));
        } else {
            prop_assert_eq!(counted, Ok(doc.executed));
        }
    }

    #[test]
    fn cost_of_arbitrary_documents_is_bounded_in_work(
        text in prop_oneof![
            "\\PC{0,400}",
            "(query|\\{|\\}|\\.\\.\\.f[0-3]|fragment f[0-3] on Query|a: |__typename|getMessageList\\(page: \\{pageSize: [0-9]{1,6}\\}\\)|\\[|\\]| ){0,80}",
        ],
    ) {
        let ((), grew) = peak_growth(|| {
            if cost::check_text_nesting(&text).is_ok() {
                if let Ok(document) = async_graphql::parser::parse_query(&text) {
                    if let Ok(counted) = cost::document_cost(&document, &Variables::default(), COST) {
                        assert!(counted <= COST.max_cost);
                    }
                }
            }
        });
        prop_assert!(grew <= text.len() * 256 + (1 << 20), "{} bytes", grew);
    }
}
