use proptest::prelude::*;

use super::*;

fn claim(fp: &str, holder: &str, now: Millis) -> KeyClaim {
    KeyClaim {
        key: KeyRef { scope: "anonymous".into(), route: "POST /x".into(), key: "k".into() },
        fingerprint: fp.into(),
        holder: holder.into(),
        now,
        lease_until: now + LEASE,
        expires_at: now + TTL,
    }
}

const LEASE: Millis = 100;
const TTL: Millis = 1_000;

fn reply(body: &'static str) -> StoredReply {
    StoredReply { status: 200, headers: vec![], body: Bytes::from_static(body.as_bytes()) }
}

#[test]
fn keys_are_quoted_strings_or_bare_values_of_1_to_255_printable_characters() {
    assert_eq!(parse_key_header(b"abc-123").unwrap(), "abc-123");
    assert_eq!(parse_key_header(b"\"8e03978e-40d5\"").unwrap(), "8e03978e-40d5");
    assert_eq!(parse_key_header(br#""a \"q\" \\ b""#).unwrap(), r#"a "q" \ b"#);
    assert_eq!(parse_key_header(&[b'k'; 255]).unwrap().len(), 255);
    for bad in [&b""[..], b"\"\"", &[b'k'; 256], b"\"open", b"two words", b"caf\xc3\xa9", b"\"a\"b\"", b"tab\tkey"] {
        assert!(parse_key_header(bad).is_err(), "{:?} must be refused", String::from_utf8_lossy(bad));
    }
}

#[test]
fn a_quoted_key_with_parameters_is_told_so() {
    let why = parse_key_header(br#""k";x=1"#).unwrap_err();
    assert_eq!(why, r#"the key takes no parameters (got ";x=1" after the quoted key)"#);
    let why = parse_key_header(br#""a"b""#).unwrap_err();
    assert!(why.contains("escape inner double quotes"), "{why}");
    assert_eq!(parse_key_header(b"\"open").unwrap_err(), "a quoted key must end with a double quote");
}

#[test]
fn decisions_follow_the_record() {
    let c = claim("fp", "h1", 0);
    assert_eq!(decide(None, "fp", 0), KeyDecision::Claim);
    let mut rec = claimed_record(&c, Some("inv1".into()));
    assert_eq!(decide(Some(&rec), "fp", 50), KeyDecision::InFlight { lease_until: 100 });
    assert_eq!(decide(Some(&rec), "other", 50), KeyDecision::Mismatch);
    assert_eq!(decide(Some(&rec), "fp", 100), KeyDecision::TakeOver { invocation_id: "inv1".into() });
    rec.phase = KeyPhase::Completed(reply("r"));
    assert_eq!(decide(Some(&rec), "fp", 500), KeyDecision::Replay(reply("r")));
    assert_eq!(decide(Some(&rec), "fp", 1_000), KeyDecision::Claim, "expired records are forgotten");
    assert_eq!(decide(Some(&rec), "other", 1_000), KeyDecision::Claim);
}

#[test]
fn a_record_held_past_its_ttl_counts_until_its_lease_ends() {
    // A sync call longer than the key's TTL: the holder is still running at 2_000.
    let c = KeyClaim { lease_until: 5_000, expires_at: 1_000, ..claim("fp", "h1", 0) };
    let rec = claimed_record(&c, Some("inv1".into()));
    assert_eq!(decide(Some(&rec), "fp", 2_000), KeyDecision::InFlight { lease_until: 5_000 });
    assert_eq!(decide(Some(&rec), "other", 2_000), KeyDecision::Mismatch);
    assert_eq!(decide(Some(&rec), "fp", 5_000), KeyDecision::Claim, "lease and TTL over: forgotten");
}

/// One step a client or the clock takes.
#[derive(Debug, Clone)]
enum Op {
    /// A request with body variant `fp` arrives.
    Request { fp: u8 },
    /// The `n`th request still working finishes (modulo how many are working).
    Finish { n: usize },
    /// Time passes.
    Advance { ms: Millis },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..2).prop_map(|fp| Op::Request { fp }),
        (0usize..4).prop_map(|n| Op::Finish { n }),
        (0 as Millis..9).prop_map(|n| Op::Advance { ms: n * 50 }),
    ]
}

/// The reference model, written from the draft's prose rather than from `decide`: it remembers
/// every request that ran and answers from that history.
#[derive(Debug, Default)]
struct Model {
    /// (started at, fingerprint, holder) of the latest request that ran the work.
    runner: Option<(Millis, u8, usize)>,
    /// The holder whose answer was stored, and when.
    answer: Option<usize>,
    last_activity: Millis,
}

#[derive(Debug, PartialEq)]
enum Expect {
    Runs,
    Replays(usize),
    Busy,
    Refused,
}

impl Model {
    fn expect(&self, fp: u8, now: Millis) -> Expect {
        let Some((started, runner_fp, _)) = self.runner else { return Expect::Runs };
        // The record lives TTL from its latest claim.
        if now >= self.last_activity + TTL {
            return Expect::Runs;
        }
        if fp != runner_fp {
            return Expect::Refused;
        }
        match self.answer {
            Some(h) => Expect::Replays(h),
            None if now < started + LEASE => Expect::Busy,
            None => Expect::Runs,
        }
    }
}

proptest! {
    #[test]
    fn the_key_state_machine_matches_the_reference_model(ops in prop::collection::vec(op(), 1..60)) {
        let mut now: Millis = 0;
        let mut record: Option<KeyRecord> = None;
        let mut model = Model::default();
        let mut working: Vec<usize> = Vec::new();
        let mut next_holder = 0usize;
        for op in ops {
            match op {
                Op::Advance { ms } => now += ms,
                Op::Request { fp } => {
                    let fp_text = format!("fp{fp}");
                    let decision = decide(record.as_ref(), &fp_text, now);
                    let expected = model.expect(fp, now);
                    match (&decision, &expected) {
                        (KeyDecision::Claim | KeyDecision::TakeOver { .. }, Expect::Runs) => {
                            let holder = next_holder;
                            next_holder += 1;
                            let c = claim(&fp_text, &holder.to_string(), now);
                            record = Some(claimed_record(&c, Some("inv".into())));
                            model.runner = Some((now, fp, holder));
                            model.answer = None;
                            model.last_activity = now;
                            working.push(holder);
                        }
                        (KeyDecision::Replay(r), Expect::Replays(h)) => prop_assert_eq!(r.body.clone(), Bytes::from(h.to_string())),
                        (KeyDecision::InFlight { .. }, Expect::Busy) => {}
                        (KeyDecision::Mismatch, Expect::Refused) => {}
                        _ => prop_assert!(false, "at {}: decide said {:?}, the model {:?}", now, decision, expected),
                    }
                }
                Op::Finish { n } if !working.is_empty() => {
                    let holder = working.remove(n % working.len());
                    // Only the current holder may complete the record; a stale one is ignored.
                    if let Some(rec) = record.as_mut() {
                        if matches!(&rec.phase, KeyPhase::InFlight { holder: h, .. } if *h == holder.to_string()) && rec.expires_at > now {
                            rec.phase = KeyPhase::Completed(StoredReply { status: 200, headers: vec![], body: Bytes::from(holder.to_string()) });
                            model.answer = Some(holder);
                        }
                    }
                    let runner_matches = model.runner.map(|(_, _, h)| h) == Some(holder);
                    prop_assert_eq!(model.answer == Some(holder), runner_matches && model.answer.is_some());
                }
                Op::Finish { .. } => {}
            }
        }
    }
}
