//! How a function is called: `batch = { max_size, max_wait }` and `http2`, their defaults, and
//! each mistake reported at its file:line.

use super::*;
use crate::config::BatchConfig;

#[test]
fn the_design_example_is_resolved_and_keys_left_out_take_their_defaults() {
    let text = format!("{CHARGE}concurrency = 4\nbatch = {{ max_size = 100, max_wait = \"5ms\" }}\n");
    let config = load_str("keel.toml", &text, &Overrides::default()).unwrap();
    let charge = &config.functions["charge"];
    assert_eq!(charge.batch, Some(BatchConfig { max_size: 100, max_wait: Duration::from_millis(5) }));
    assert_eq!(charge.attempt_slots(), 400, "4 requests in flight of up to 100 items each");

    let config = load_str("keel.toml", &format!("{CHARGE}batch = {{}}\n"), &Overrides::default()).unwrap();
    assert_eq!(
        config.functions["charge"].batch,
        Some(BatchConfig { max_size: 100, max_wait: Duration::from_millis(5) }),
        "an empty table opts in with the defaults"
    );
    let config =
        load_str("keel.toml", &format!("{CHARGE}batch = {{ max_wait = \"0s\" }}\n"), &Overrides::default()).unwrap();
    assert_eq!(config.functions["charge"].batch.unwrap().max_wait, Duration::ZERO, "0: send what is there");

    let plain = load_str("keel.toml", CHARGE, &Overrides::default()).unwrap();
    assert_eq!(plain.functions["charge"].batch, None, "off unless configured");
    assert_eq!(plain.functions["charge"].attempt_slots(), 64);
}

#[test]
fn every_batch_problem_is_reported_where_it_was_written() {
    let shown: Vec<String> = ["max_size = 0", "max_size = 1001", "max_wait = \"soon\"", "max_wait = \"11s\""]
        .iter()
        .flat_map(|keys| errors(&format!("{CHARGE}batch = {{ {keys} }}\n")))
        .collect();
    assert_eq!(
        shown,
        [
            "keel.toml:3:22: functions.charge.batch.max_size: must be between 1 and 1000 (got 0)",
            "keel.toml:3:22: functions.charge.batch.max_size: must be between 1 and 1000 (got 1001)",
            r#"keel.toml:3:22: functions.charge.batch.max_wait: expected a duration like "250ms", "30s", "5m" (got "soon")"#,
            r#"keel.toml:3:22: functions.charge.batch.max_wait: must be at most "10s": items wait leased, and their leases outlast the timeout by a minute (got "11s")"#,
        ]
    );
    assert_eq!(
        errors(&format!("{CHARGE}batch = {{ size = 10 }}\n")),
        ["keel.toml:3:11: functions.charge.batch.size: unknown key `size`, expected `max_size` or `max_wait`"]
    );
    assert_eq!(
        errors(&format!("{CHARGE}batch = 10\n")),
        ["keel.toml:3:9: functions.charge.batch: invalid type: integer `10`, expected a table"]
    );
}

#[test]
fn http2_is_off_unless_set_and_takes_a_boolean() {
    let plain = load_str("keel.toml", CHARGE, &Overrides::default()).unwrap();
    assert!(!plain.functions["charge"].http2, "HTTP/1.1 unless asked");
    let on = load_str("keel.toml", &format!("{CHARGE}http2 = true\n"), &Overrides::default()).unwrap();
    assert!(on.functions["charge"].http2);
    assert_eq!(
        errors(&format!("{CHARGE}http2 = \"yes\"\n")),
        [r#"keel.toml:3:9: functions.charge.http2: invalid type: string "yes", expected a boolean"#]
    );
}
