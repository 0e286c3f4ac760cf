//! Reading fault requests, and which calls a fault hits.

use serde_json::json;

use super::*;

fn known() -> Known<'static> {
    Known {
        functions: &|f| ["charge", "worker"].contains(&f),
        commands: &|f| f == "worker",
        dependencies: &|d| d == "payments",
    }
}

fn request(value: serde_json::Value) -> FaultRequest {
    serde_json::from_value(value).unwrap()
}

#[test]
fn a_request_makes_a_fault_that_expires_after_its_duration() {
    let fault = check(
        &request(json!({"target": {"function": "charge"}, "kind": "latency", "latency": {"min": "100ms", "max": "2s"}, "rate": 0.3, "duration": "60s"})),
        &known(),
        "F1".into(),
        1_000,
    )
    .unwrap();
    assert_eq!(fault.target, Target::Function("charge".into()));
    assert_eq!(fault.kind, Kind::Latency { min_ms: 100, max_ms: 2_000 });
    assert_eq!((fault.rate, fault.created_at, fault.expires_at), (0.3, 1_000, 61_000));
    let error = check(
        &request(json!({"target": {"dependency": "payments"}, "kind": "error", "status": 503, "duration": "1m"})),
        &known(),
        "F2".into(),
        0,
    )
    .unwrap();
    assert_eq!((error.kind, error.rate), (Kind::Error { status: 503 }, 1.0), "rate 1 when absent");
    let store = check(
        &request(json!({"target": {"store": true}, "kind": "latency", "latency": "5ms", "duration": "1s"})),
        &known(),
        "F3".into(),
        0,
    );
    assert_eq!(store.unwrap().kind, Kind::Latency { min_ms: 5, max_ms: 5 });
    let crash = check(
        &request(json!({"target": {"function": "worker"}, "kind": "crash", "duration": "1s"})),
        &known(),
        "F4".into(),
        0,
    );
    assert_eq!(crash.unwrap().kind, Kind::Crash);
}

#[test]
fn every_mistake_is_named_by_its_member() {
    let problems = |value| check(&request(value), &known(), "F".into(), 0).unwrap_err();
    let paths = |value| problems(value).into_iter().map(|p| p.path).collect::<Vec<_>>();
    assert_eq!(paths(json!({})), ["/target", "/kind", "/duration"]);
    assert_eq!(
        paths(json!({"target": {"function": "nope"}, "kind": "error", "status": 200, "rate": 0, "duration": "0s"})),
        ["/target/function", "/status", "/rate", "/duration"]
    );
    assert_eq!(
        paths(json!({"target": {"store": false}, "kind": "melt", "duration": "25h"})),
        ["/target", "/kind", "/duration"]
    );
    assert_eq!(paths(json!({"target": {"store": true}, "kind": "abort", "duration": "1s"})), ["/kind"]);
    assert_eq!(paths(json!({"target": {"dependency": "payments"}, "kind": "crash", "duration": "1s"})), ["/kind"]);
    assert_eq!(paths(json!({"target": {"function": "charge"}, "kind": "crash", "duration": "1s"})), ["/kind"]);
    assert_eq!(
        paths(
            json!({"target": {"function": "charge"}, "kind": "latency", "latency": {"min": "2s", "max": "1s"}, "status": 503, "duration": "1s"})
        ),
        ["/latency", "/status"]
    );
    assert_eq!(paths(json!({"target": {"function": "charge"}, "kind": "latency", "duration": "1s"})), ["/latency"]);
    let message =
        &problems(json!({"target": {"function": "charge", "store": true}, "kind": "abort", "duration": "1s"}))[0];
    assert_eq!(message.to_string(), r#"/target: one of {"function": NAME}, {"dependency": NAME} or {"store": true}"#);
}

fn fault(id: &str, target: Target, kind: Kind, rate: f64) -> Fault {
    Fault { id: id.into(), target, kind, rate, created_at: 1_000, expires_at: 2_000 }
}

#[test]
fn a_fault_hits_its_rate_of_calls_while_active_and_only_its_target() {
    let charge = Target::Function("charge".into());
    let faults = [fault("F1", charge.clone(), Kind::Error { status: 503 }, 0.3)];
    let mut rng = fastrand::Rng::with_seed(7);
    let mut draw = || rng.f64();
    let hits = (0..10_000).filter(|_| pick(&faults, &charge, 1_500, &mut draw).is_some()).count();
    // 3,000 expected; a binomial's sd here is ~46: 5 sd either side.
    assert!((2_770..=3_230).contains(&hits), "{hits} hits of 10,000 at rate 0.3");
    assert_eq!(pick(&faults, &Target::Function("other".into()), 1_500, &mut draw), None);
    assert_eq!(pick(&faults, &Target::Store, 1_500, &mut draw), None);
    let always = [fault("F2", charge.clone(), Kind::Abort, 1.0)];
    assert_eq!(pick(&always, &charge, 999, &mut draw), None, "not yet");
    assert_eq!(pick(&always, &charge, 2_000, &mut draw), None, "expired");
    assert_eq!(
        pick(&always, &charge, 1_000, &mut draw).unwrap(),
        Hit { fault: "F2".into(), kind: Kind::Abort, delay_ms: 0 }
    );
}

#[test]
fn a_latency_is_drawn_within_its_bounds() {
    let store = Target::Store;
    let faults = [fault("F1", store.clone(), Kind::Latency { min_ms: 100, max_ms: 200 }, 1.0)];
    let mut rng = fastrand::Rng::with_seed(1);
    let mut draw = || rng.f64();
    let delays: Vec<u64> = (0..2_000).map(|_| pick(&faults, &store, 1_500, &mut draw).unwrap().delay_ms).collect();
    assert!(delays.iter().all(|d| (100..=200).contains(d)), "{delays:?}");
    assert!(delays.contains(&100) && delays.contains(&200), "both ends are reached");
}
