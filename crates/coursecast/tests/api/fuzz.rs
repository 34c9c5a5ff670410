//! Packets a client may send, generated: every Socket.IO packet type, our event
//! names and others, ack ids or none, and payloads of any JSON shape, sent to the
//! real binary on authenticated sockets. The server must answer or refuse each, or
//! close that one connection, and never panic (its log would say so) or stop
//! serving. The case count is bounded for CI; `FUZZ_CASES` raises it.

use std::time::Duration;

use coursecast_client::raw::{RawOptions, RawSocket};
use proptest::{
    prelude::*,
    strategy::{Strategy, ValueTree},
    test_runner::TestRunner,
};
use serde_json::{Value, json};

use crate::process::ServerProcess;

const NAMESPACES: [&str; 4] = ["/chat", "/notifications", "/analytics", "/collaboration"];
const EVENTS: [&str; 14] = [
    "join", "leave", "send", "edit", "delete", "typing", "sync", "read", "watch", "annotate", "cursor", "reauth",
    "presence", "nope",
];

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| json!(f)),
        ".{0,40}".prop_map(Value::String),
        Just(json!("00000000-0000-0000-0000-000000000000")),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![
                        Just("courseId".to_owned()),
                        Just("content".to_owned()),
                        Just("clientMsgId".to_owned()),
                        Just("since".to_owned()),
                        Just("limit".to_owned()),
                        ".{0,10}"
                    ],
                    inner
                ),
                0..6
            )
            .prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    })
}

/// One packet as text: `4` + Socket.IO type + namespace + ack id + data, or noise.
fn packet(ns: &'static str) -> impl Strategy<Value = String> {
    let event = (prop::sample::select(EVENTS.to_vec()), json_value()).prop_map(|(name, data)| json!([name, data]));
    let data = prop_oneof![event, json_value(), Just(json!([]))];
    let typed = (0u8..7, prop::option::of(0u32..1000), data, any::<bool>()).prop_map(move |(kind, id, data, own)| {
        let ns = if own { format!("{ns},") } else { "/other,".to_owned() };
        let id = id.map(|id| id.to_string()).unwrap_or_default();
        format!("4{kind}{ns}{id}{data}")
    });
    prop_oneof![4 => typed, 1 => ".{0,60}"]
}

#[tokio::test]
async fn generated_packets_never_panic_the_server() {
    let cases: usize = std::env::var("FUZZ_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(300);
    let extra = [("SOCKET_EVENTS_PER_SECOND", "100000"), ("SOCKET_EVENTS_BURST", "100000")];
    let server = ServerProcess::start(None, &extra).await;
    let seeded = server.seed(1);
    let token = seeded["users"][0]["token"].as_str().unwrap().to_owned();
    let mut runner = TestRunner::default();
    for case in 0..cases {
        let ns = NAMESPACES[case % NAMESPACES.len()];
        let text = packet(ns).new_tree(&mut runner).expect("a case").current();
        let mut socket = RawSocket::open(&server.base, ns, &RawOptions::default()).await.expect("open");
        socket.connect_ns(Some(json!({"token": token}))).await.expect("connect");
        let _ = socket.send_text(text.clone()).await;
        // Whatever the server makes of it, it answers, refuses or closes in time.
        let _ = tokio::time::timeout(Duration::from_millis(50), socket.recv()).await;
        socket.close().await;
        let panics: Vec<String> = server.lines().into_iter().filter(|l| l.contains("panicked")).collect();
        assert!(panics.is_empty(), "case {case} {text:?} made the server panic: {panics:?}");
    }
    let health = reqwest::get(format!("{}/healthz", server.base)).await.expect("still serving");
    assert_eq!(health.status(), 200);
}
