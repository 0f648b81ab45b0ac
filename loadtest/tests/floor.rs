//! `loadtest floor` as a user runs it: the binary, its child floor server, real loopback sockets.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn loadtest() -> Command {
    Command::new(env!("CARGO_BIN_EXE_loadtest"))
}

fn report(args: &[&str]) -> Value {
    let out = loadtest().args(args).output().expect("loadtest runs");
    assert!(
        out.status.success(),
        "loadtest {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON line")
}

#[test]
fn the_floor_server_delivers_every_frame_once_in_order() {
    let r = report(&[
        "floor",
        "--subscribers",
        "20",
        "--channels",
        "2",
        "--messages",
        "40",
        "--timeout-secs",
        "60",
    ]);
    assert_eq!(r["protocol"], "floor");
    assert_eq!(r["expected"], 400);
    assert_eq!(r["delivered"], 400);
    assert_eq!(
        (r["lost"].as_u64(), r["duplicates"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(r["out_of_order"], 0);
    assert!(
        r["server_cpu_secs"].is_number(),
        "the child's CPU time: {r}"
    );
}

#[test]
fn a_paced_floor_run_spreads_messages_over_the_rate() {
    // 20 messages at 100/s: the last is due after 0.19 s.
    let r = report(&[
        "floor",
        "--subscribers",
        "4",
        "--channels",
        "2",
        "--messages",
        "20",
        "--rate",
        "100",
    ]);
    assert_eq!(r["delivered"], 40);
    assert_eq!(r["lost"], 0);
    assert!(r["publish_secs"].as_f64().unwrap() >= 0.19, "{r}");
    assert!(r["latency_us"]["p50"].as_u64().unwrap() > 0, "{r}");
}

#[test]
fn the_floor_server_exits_when_its_generator_goes_away() {
    let mut child = loadtest()
        .args(["floor-server", "--subscribers", "5", "--timeout-secs", "60"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("floor-server starts");
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with("listening "), "{first:?}");
    // Still waiting for its five subscribers when the generator's end of the pipe closes.
    drop(child.stdin.take());
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the floor server outlived its generator"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
