//! Structure-aware inputs for the stable engine: each target has a generator that writes
//! near-valid documents from its grammar (every part optionally missing, of the wrong type, or
//! at an edge), and every input may then be mutated byte-wise or spliced with a corpus seed.
//! Pure random bytes would rarely get past the first `{` or the first digit.

use fastrand::Rng;

/// A generator: a seeded RNG and the target's corpus in, one input out.
pub(super) type Generate = fn(&mut Rng) -> Vec<u8>;

/// The generator of the target named `name`.
pub(super) fn for_target(name: &str) -> Generate {
    match name {
        "config" => config,
        "cloudevent_structured" => |rng| structured_event(rng).into_bytes(),
        "cloudevent_batch" => batch,
        "cloudevent_binary" => binary_event,
        "effects" => effects,
        "idempotency_key" => idempotency_key,
        "retry_after" => retry_after,
        "keel_delay" => |rng| whole_and_unit(rng, &["ms", "s", "m", "h", "d", "w", "S", " s", ""]).into_bytes(),
        "duration" => duration,
        "list_query" => list_query,
        "names" => names,
        "expires_in" => |rng| whole_and_unit(rng, &["s", "m", "h", "d", "ms", "w", ""]).into_bytes(),
        "function_token" => function_token,
        "cidr" => |rng| network(rng).into_bytes(),
        "forwarded_for" => forwarded_for,
        "cron" => cron,
        other => panic!("no generator for target {other}"),
    }
}

/// One input for a target: a seed or a generated document, often mutated, sometimes spliced.
pub(super) fn input(rng: &mut Rng, generate: Generate, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut data =
        if seeds.is_empty() || rng.u8(..) < 160 { generate(rng) } else { seeds[rng.usize(..seeds.len())].clone() };
    if rng.u8(..) < 110 {
        for _ in 0..=rng.usize(..4) {
            mutate(rng, &mut data, seeds);
        }
    }
    data
}

/// Bytes that sit at the edges of Keel's grammars: separators, quotes and escapes, control
/// characters, DEL, invalid UTF-8, multi-byte and Unicode whitespace.
const SPICE: [&[u8]; 26] = [
    b"\0",
    b"\t",
    b"\n",
    b"\r",
    b" ",
    b"\"",
    b"\\",
    b"/",
    b":",
    b",",
    b";",
    b"=",
    b"*",
    b"-",
    b"+",
    b".",
    b"0",
    b"9",
    b"\x7f",
    b"\xff",
    "é".as_bytes(),
    "\u{85}".as_bytes(),
    "\u{2028}".as_bytes(),
    "\u{feff}".as_bytes(),
    b"{",
    b"]",
];

fn mutate(rng: &mut Rng, data: &mut Vec<u8>, seeds: &[Vec<u8>]) {
    let at = if data.is_empty() { 0 } else { rng.usize(..=data.len()) };
    match rng.u8(..8) {
        0 if !data.is_empty() => {
            let i = rng.usize(..data.len());
            data[i] ^= 1 << rng.u8(..8);
        }
        1 if !data.is_empty() => {
            let end = (at + rng.usize(1..16)).min(data.len());
            data.drain(at.min(end)..end);
        }
        2 if !data.is_empty() => {
            let start = rng.usize(..data.len());
            let end = (start + rng.usize(1..32)).min(data.len());
            let piece = data[start..end].to_vec();
            data.splice(at..at, piece);
        }
        3 if !seeds.is_empty() => {
            let seed = &seeds[rng.usize(..seeds.len())];
            let from = rng.usize(..=seed.len());
            data.truncate(at);
            data.extend_from_slice(&seed[from..]);
        }
        4 => data.truncate(at),
        5 if !data.is_empty() => {
            let i = rng.usize(..data.len());
            data[i] = rng.u8(..);
        }
        _ => {
            let spice = SPICE[rng.usize(..SPICE.len())];
            data.splice(at..at, spice.iter().copied());
        }
    }
}

fn pick<'a>(rng: &mut Rng, choices: &[&'a str]) -> &'a str {
    choices[rng.usize(..choices.len())]
}

fn chance(rng: &mut Rng, in_256: u8) -> bool {
    rng.u8(..) < in_256
}

/// A run of `len` characters from `alphabet`.
fn word(rng: &mut Rng, alphabet: &[u8], len: usize) -> String {
    (0..len).map(|_| char::from(alphabet[rng.usize(..alphabet.len())])).collect()
}

const NAME_CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789.-_";

fn name(rng: &mut Rng) -> String {
    match rng.u8(..10) {
        0 => pick(rng, &["", "-x", "UPPER", "a b", "a/b", "é", "a\u{1}", "x:y", "a*", "*"]).to_owned(),
        1 => {
            let len = rng.usize(60..70);
            word(rng, NAME_CHARS, len)
        }
        _ => pick(rng, &["charge", "register-user", "user.registered", "send-welcome-email", "a", "payments", "email"])
            .to_owned(),
    }
}

fn json_string(text: &str) -> String {
    serde_json::Value::String(text.to_owned()).to_string()
}

/// A TOML value for a key of the given kind: valid most of the time, else at an edge or of
/// the wrong type.
fn toml_value(rng: &mut Rng, kind: &str) -> String {
    let wrong = ["true", "1.5", "-1", "\"\"", "[]", "{}", "\"x\"", "0", "9223372036854775807"];
    if chance(rng, 40) {
        return pick(rng, &wrong).to_owned();
    }
    let choices: &[&str] = match kind {
        "duration" => {
            &["\"30s\"", "\"250ms\"", "\"2h 30m\"", "\"0s\"", "\"1.5s\"", "\"5 secs\"", "\"99999999999h\"", "\"1m 1m\""]
        }
        "int" => &["1", "2", "64", "100000", "0", "-5", "4294967296", "1_000"],
        "float" => &["2.0", "0.5", "0.0", "1.0", "-1.0", "nan", "inf", "1e308"],
        "size" => &["\"512KiB\"", "1048576", "\"1MiB\"", "\"0B\"", "\"99999999TiB\"", "\"1.5MB\"", "\"512MiB\""],
        "url" => &[
            "\"http://127.0.0.1:9001/charge\"",
            "\"https://payments.internal/api\"",
            "\"ftp://x\"",
            "\"http://\"",
            "\"not a url\"",
            "\"http://[::1]:80/\"",
        ],
        "store" => &[
            "\"sqlite://.keel/keel.db\"",
            "\"postgres://keel@db:5432/keel\"",
            "\"sqlite://\"",
            "\"mysql://x\"",
            "\":memory:\"",
        ],
        "listen" => &["\"127.0.0.1:7733\"", "\"0.0.0.0:8080\"", "\"[::1]:0\"", "\"localhost\"", "\"1.2.3.4:99999\""],
        "jitter" => &["\"full\"", "\"equal\"", "\"decorrelated\"", "\"none\"", "\"half\""],
        "mode" => &["\"keys\"", "\"none\"", "\"jwt\""],
        "cidrs" => {
            &["[\"10.0.0.0/8\", \"2001:db8::/32\"]", "[\"10.1.0.0/8\"]", "[\"127.0.0.1\"]", "[\"::/129\"]", "[]"]
        }
        "strings" => &[
            "[\"payments\"]",
            "[\"balances:write\", \"users:read\"]",
            "[\"purchase.*\"]",
            "[\"\"]",
            "[\"a**\"]",
            "[1]",
        ],
        "path" => &["\"schemas/purchase.json\"", "\"cert.pem\"", "\"/nonexistent/x\"", "\"\"", "\"./assets\""],
        "header" => &["\"x-tenant-id\"", "\"bad header\"", "\"\"", "\"content-type\""],
        _ => &["\"x\""],
    };
    pick(rng, choices).to_owned()
}

/// A table body: each `(key, kind)` line kept or left out.
fn table(rng: &mut Rng, keys: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (key, kind) in keys {
        if chance(rng, 150) {
            let value = toml_value(rng, kind);
            out.push_str(&format!("{key} = {value}\n"));
        }
    }
    if chance(rng, 20) {
        out.push_str(pick(
            rng,
            &["colour = \"red\"\n", "timeout = \n", "= 1\n", "retry = { max_attempts = 3, what = 1 }\n"],
        ));
    }
    out
}

fn inline(rng: &mut Rng, keys: &[(&str, &str)]) -> String {
    let mut parts = Vec::new();
    for (key, kind) in keys {
        if chance(rng, 170) {
            parts.push(format!("{key} = {}", toml_value(rng, kind)));
        }
    }
    format!("{{ {} }}", parts.join(", "))
}

const RETRY: [(&str, &str); 5] = [
    ("max_attempts", "int"),
    ("initial", "duration"),
    ("max", "duration"),
    ("multiplier", "float"),
    ("jitter", "jitter"),
];
const BREAKER: [(&str, &str); 6] = [
    ("consecutive_failures", "int"),
    ("failure_ratio", "float"),
    ("min_calls", "int"),
    ("window", "duration"),
    ("open_for", "duration"),
    ("half_open_probes", "int"),
];
const RATE: [(&str, &str); 2] = [("per_second", "float"), ("burst", "int")];

fn config(rng: &mut Rng) -> Vec<u8> {
    let mut out = String::new();
    for _ in 0..rng.usize(1..7) {
        let section = match rng.u8(..9) {
            0 => format!(
                "[server]\n{}",
                table(
                    rng,
                    &[
                        ("listen", "listen"),
                        ("body_limit", "size"),
                        ("shutdown_grace", "duration"),
                        ("max_result_bytes", "size"),
                        ("max_connections", "int"),
                        ("header_timeout", "duration"),
                        ("max_inflight_requests", "int"),
                    ]
                )
            ),
            1 => format!("[storage]\n{}", table(rng, &[("url", "store"), ("fsync", "bool")])),
            2 => format!("[auth]\n{}", table(rng, &[("mode", "mode")])),
            3 | 4 => {
                let mut body = table(
                    rng,
                    &[
                        ("url", "url"),
                        ("timeout", "duration"),
                        ("sync_timeout", "duration"),
                        ("concurrency", "int"),
                        ("max_waiting", "int"),
                        ("max_queued", "int"),
                        ("dependencies", "strings"),
                        ("input_schema", "path"),
                    ],
                );
                let extras = [
                    format!("retry = {}\n", inline(rng, &RETRY)),
                    format!("breaker = {}\n", inline(rng, &BREAKER)),
                    format!("rate_limit = {}\n", inline(rng, &RATE)),
                    format!("concurrency_key = {}\n", inline(rng, &[("header", "header"), ("limit", "int")])),
                    format!(
                        "grants = {}\n",
                        inline(rng, &[("kv", "strings"), ("publish", "strings"), ("invoke", "strings")])
                    ),
                    format!("command = {}\n", pick(rng, &["[\"./charge\"]", "[]", "[\"python3\", \"-m\", \"x\"]"])),
                    format!(
                        "sandbox = {}\n",
                        inline(
                            rng,
                            &[("memory", "size"), ("open_files", "int"), ("cpu", "duration"), ("read", "strings")]
                        )
                    ),
                ];
                for extra in extras {
                    if chance(rng, 70) {
                        body.push_str(&extra);
                    }
                }
                format!("[functions.{}]\n{body}", json_string(&name(rng)))
            }
            5 => format!("[topics.{}]\n", json_string(&name(rng))),
            6 => format!(
                "[[subscriptions]]\nname = {}\ntopic = {}\nfunction = {}\nfilter = {}\n",
                json_string(&name(rng)),
                json_string(&name(rng)),
                json_string(&name(rng)),
                inline(rng, &[("type_prefix", "string"), ("source", "string"), ("colour", "string")])
            ),
            7 => {
                let mut body = table(rng, &[("url", "url"), ("timeout", "duration"), ("ca_file", "path")]);
                body.push_str(&format!("retry = {}\n", inline(rng, &RETRY[..3])));
                body.push_str(&format!(
                    "retry_budget = {}\n",
                    inline(rng, &[("ratio", "float"), ("min_per_second", "int")])
                ));
                body.push_str(&format!("breaker = {}\n", inline(rng, &BREAKER)));
                let bulkhead = [("max_concurrent", "int"), ("max_queued", "int"), ("queue_timeout", "duration")];
                body.push_str(&format!("bulkhead = {}\n", inline(rng, &bulkhead)));
                body.push_str(&format!(
                    "headers = {{ authorization = {} }}\n",
                    pick(rng, &["\"env:TOKEN\"", "\"x\"", "1"])
                ));
                format!("[dependencies.{}]\n{body}", json_string(&name(rng)))
            }
            _ => {
                let rules = pick(
                    rng,
                    &[
                        "[{ method = \"DELETE\", path = \"/v1/dlq/*\", action = \"deny\" }]",
                        "[{ path = \"\" }]",
                        "[{}]",
                    ],
                );
                format!(
                    "[server.firewall]\n{}rules = {rules}\n",
                    table(rng, &[("allow", "cidrs"), ("deny", "cidrs"), ("trusted_proxies", "cidrs")])
                )
            }
        };
        out.push_str(&section);
        out.push('\n');
    }
    out.into_bytes()
}

fn attribute(rng: &mut Rng, valid: &str) -> serde_json::Value {
    use serde_json::Value;
    match rng.u8(..12) {
        0 => Value::Null,
        1 => Value::String(String::new()),
        2 => Value::from(7),
        3 => Value::String(format!(
            "{valid}{}",
            pick(rng, &["\n", "\u{7f}", "\u{9f}", "\r\nx-evil: 1", "\t", "é", "\u{2028}"])
        )),
        _ => Value::String(valid.to_owned()),
    }
}

fn event_value(rng: &mut Rng) -> serde_json::Value {
    use serde_json::{json, Map, Value};
    let mut event = Map::new();
    let attributes = [
        ("specversion", pick(rng, &["1.0", "1.0", "0.3", "1"])),
        ("id", pick(rng, &["e1", "A234-1234-1234", "x"])),
        ("source", pick(rng, &["/shop", "https://example.com/x", "urn:a"])),
        ("type", pick(rng, &["user.registered", "com.example.order", "t"])),
        ("subject", "u1"),
        (
            "time",
            pick(rng, &["2026-11-30T10:00:00Z", "2026-11-30T10:00:00.123+02:00", "2026-13-01T00:00:00Z", "yesterday"]),
        ),
        (
            "datacontenttype",
            pick(rng, &["application/json", "text/plain", "application/xml", "application/cloudevents+json"]),
        ),
        ("dataschema", "https://example.com/schema"),
    ];
    for (i, (name, valid)) in attributes.iter().enumerate() {
        let required = i < 4;
        if chance(rng, if required { 245 } else { 90 }) {
            event.insert((*name).to_owned(), attribute(rng, valid));
        }
    }
    match rng.u8(..6) {
        0 => {}
        1 => drop(event.insert("data".into(), json!({"user_id": "u1", "n": [1, 2.5, null, true]}))),
        2 => drop(event.insert("data".into(), Value::String(pick(rng, &["plain text", "", "\u{0}"]).into()))),
        3 => drop(
            event.insert("data_base64".into(), Value::String(pick(rng, &["aGVsbG8=", "aGVsbG8", "!!", ""]).into())),
        ),
        4 => {
            event.insert("data".into(), json!(1));
            event.insert("data_base64".into(), json!("aGk="));
        }
        _ => drop(event.insert("data".into(), Value::Null)),
    }
    for _ in 0..rng.usize(..3) {
        let name = pick(
            rng,
            &["traceparent", "tracestate", "tenant", "x1", "Upper", "with-dash", "", "abcdefghijklmnopqrstu"],
        );
        let value = match rng.u8(..5) {
            0 => json!(42),
            1 => json!(true),
            2 => json!({"nested": 1}),
            3 => json!("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            _ => attribute(rng, "acme"),
        };
        event.insert(name.to_owned(), value);
    }
    Value::Object(event)
}

fn structured_event(rng: &mut Rng) -> String {
    event_value(rng).to_string()
}

fn batch(rng: &mut Rng) -> Vec<u8> {
    let events: Vec<serde_json::Value> = (0..rng.usize(..4)).map(|_| event_value(rng)).collect();
    if chance(rng, 20) {
        return structured_event(rng).into_bytes();
    }
    serde_json::Value::Array(events).to_string().into_bytes()
}

fn binary_event(rng: &mut Rng) -> Vec<u8> {
    let mut out = String::new();
    let names =
        ["specversion", "id", "source", "type", "subject", "time", "dataschema", "tenant", "traceparent", "Bad_Name"];
    let valid =
        ["1.0", "e1", "/shop", "user.registered", "u1", "2026-11-30T10:00:00Z", "https://x/s", "acme", "00-01", "v"];
    for (i, (name, value)) in names.iter().zip(valid).enumerate() {
        if chance(rng, if i < 4 { 245 } else { 70 }) {
            let value = match rng.u8(..10) {
                0 => String::new(),
                1 => format!("{value}\u{7f}"),
                2 => pick(rng, &["0.3", "not a time", "é", "\u{85}"]).to_owned(),
                _ => value.to_owned(),
            };
            let prefix = pick(rng, &["ce-", "ce-", "CE-", "ce-", "x-"]);
            out.push_str(&format!("{prefix}{name}: {value}\n"));
            if chance(rng, 8) {
                out.push_str(&format!("ce-{name}: again\n"));
            }
        }
    }
    if chance(rng, 150) {
        out.push_str(&format!("content-type: {}\n", pick(rng, &["application/json", "text/plain", ""])));
    }
    out.push('\n');
    out.push_str(pick(rng, &["{\"user_id\": \"u1\"}", "", "plain", "\u{0}\u{1}"]));
    out.into_bytes()
}

fn effects(rng: &mut Rng) -> Vec<u8> {
    use serde_json::{json, Map, Value};
    let mut envelope = Map::new();
    if chance(rng, 120) {
        envelope.insert(
            "status".into(),
            json!(pick(rng, &["200", "201", "299", "300", "500", "0", "65535", "65536", "-1"]).parse::<i64>().unwrap()),
        );
    }
    if chance(rng, 120) {
        envelope.insert("result".into(), json!({"user_id": "u1"}));
    }
    let key_name = |rng: &mut Rng| -> Value {
        match rng.u8(..8) {
            0 => json!(""),
            1 => json!("a/b"),
            2 => json!("k".repeat(256)),
            3 => json!("a\u{0}"),
            4 => json!(5),
            _ => json!(pick(rng, &["users", "u1", "balances", "carts", "é"])),
        }
    };
    let kv: Vec<Value> = (0..rng.usize(..4))
        .map(|_| {
            let mut write = Map::new();
            write.insert("ns".into(), key_name(rng));
            write.insert("key".into(), key_name(rng));
            if chance(rng, 170) {
                write.insert("value".into(), json!({"name": "Ada", "n": 90}));
            }
            if chance(rng, 50) {
                write.insert("delete".into(), json!(true));
            }
            if chance(rng, 60) {
                write.insert(
                    "if_version".into(),
                    json!(pick(rng, &["7", "0", "-1", "9223372036854775807"]).parse::<i64>().unwrap()),
                );
            }
            if chance(rng, 60) {
                write.insert("if_absent".into(), json!(true));
            }
            Value::Object(write)
        })
        .collect();
    if !kv.is_empty() || chance(rng, 40) {
        envelope.insert("kv".into(), Value::Array(kv));
    }
    let events: Vec<Value> = (0..rng.usize(..3))
        .map(|_| {
            let mut event = Map::new();
            if chance(rng, 230) {
                event.insert("topic".into(), json!(pick(rng, &["user.registered", "", "t"])));
            }
            for attribute_name in ["type", "subject", "source", "id"] {
                if chance(rng, 80) {
                    event.insert(attribute_name.into(), attribute(rng, "u1"));
                }
            }
            if chance(rng, 120) {
                event.insert("data".into(), json!({"user_id": "u1"}));
            }
            if chance(rng, 10) {
                event.insert("colour".into(), json!("red"));
            }
            Value::Object(event)
        })
        .collect();
    if !events.is_empty() || chance(rng, 40) {
        envelope.insert("events".into(), Value::Array(events));
    }
    Value::Object(envelope).to_string().into_bytes()
}

fn idempotency_key(rng: &mut Rng) -> Vec<u8> {
    let printable: Vec<u8> = (0x21..=0x7e).collect();
    let len = match rng.u8(..6) {
        0 => rng.usize(250..260),
        1 => 0,
        _ => rng.usize(1..40),
    };
    let mut key = word(rng, &printable, len);
    match rng.u8(..6) {
        0 | 1 => {
            let mut quoted = String::from("\"");
            for c in key.chars() {
                if (c == '"' || c == '\\') && chance(rng, 230) {
                    quoted.push('\\');
                }
                quoted.push(c);
                if chance(rng, 10) {
                    quoted.push(' ');
                }
            }
            quoted.push('"');
            if chance(rng, 20) {
                quoted.push_str(pick(rng, &[";a=1", " ", "x", "\""]));
            }
            quoted.into_bytes()
        }
        2 => {
            key.insert_str(0, pick(rng, &[" ", "\t", "\u{a0}", ""]));
            key.push_str(pick(rng, &[" ", "\t", "\u{3000}", "é", ""]));
            key.into_bytes()
        }
        _ => key.into_bytes(),
    }
}

fn retry_after(rng: &mut Rng) -> Vec<u8> {
    let status = pick(rng, &["503", "429", "500", "200", "408", "x", ""]);
    let value = match rng.u8(..6) {
        0 => rng.u64(..).to_string(),
        1 => pick(rng, &["18446744073709551615", "18446744073709551616", "86400", "86401", "0", "-1", "+5", " 7 "])
            .to_owned(),
        2 => format!(
            "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
            pick(rng, &["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]),
            rng.u8(..33),
            pick(rng, &["Jan", "Feb", "Dec", "Foo"]),
            pick(rng, &["1970", "2026", "2027", "9999", "1969", "10000"]),
            rng.u8(..25),
            rng.u8(..61),
            rng.u8(..61)
        ),
        3 => pick(
            rng,
            &[
                "Fri, 31 Dec 9999 23:59:59 GMT",
                "Thu, 01 Jan 1970 00:00:00 GMT",
                "Sunday, 06-Nov-94 08:49:37 GMT",
                "Sun Nov  6 08:49:37 1994",
            ],
        )
        .to_owned(),
        _ => rng.u32(..100_000).to_string(),
    };
    format!("{status}\n{value}").into_bytes()
}

fn whole_and_unit(rng: &mut Rng, units: &[&str]) -> String {
    let count = match rng.u8(..6) {
        0 => rng.u64(..).to_string(),
        1 => pick(
            rng,
            &["0", "00", "", "-1", "1.5", "0000000000000000000030", "365", "366", "8760", "999999999", "1000000000"],
        )
        .to_owned(),
        _ => rng.u32(..100_000).to_string(),
    };
    format!("{count}{}", pick(rng, units))
}

fn duration(rng: &mut Rng) -> Vec<u8> {
    let units = ["h", "m", "s", "ms", "d", "us", "ns", "secs", ""];
    let mut out = String::new();
    for _ in 0..rng.usize(1..5) {
        let count = if chance(rng, 30) { rng.u64(..).to_string() } else { rng.u32(..5000).to_string() };
        out.push_str(&count);
        out.push_str(if chance(rng, 220) { pick(rng, &units[..4]) } else { pick(rng, &units) });
        out.push_str(pick(rng, &["", " ", " ", "  "]));
    }
    if chance(rng, 40) {
        out.insert(0, ' ');
    }
    out.into_bytes()
}

fn list_query(rng: &mut Rng) -> Vec<u8> {
    let mut pairs = Vec::new();
    for _ in 0..rng.usize(..5) {
        let (key, value) = match rng.u8(..6) {
            0 => ("function", name(rng)),
            1 => ("status", pick(rng, &["queued", "dead", "succeeded", "Dead", ""]).to_owned()),
            2 => (
                "limit",
                pick(rng, &["1", "100", "1000", "5000", "0", "000", "-1", "+5", "258019814203111047168", " 5"])
                    .to_owned(),
            ),
            3 | 4 => {
                let id = keel_core::id::new_id(rng.i64(..i64::MAX / 2));
                let cursor = match rng.u8(..6) {
                    0 => id.to_lowercase(),
                    1 => id[1..].to_owned(),
                    2 => format!("{id}0"),
                    3 => word(rng, b"0123456789ABCDEFGHJKMNPQRSTVWXYZILOU", 26),
                    _ => id,
                };
                ("cursor", cursor)
            }
            _ => (pick(rng, &["colour", "subscription", ""]), "x".to_owned()),
        };
        pairs.push(format!("{key}={}", url::form_urlencoded::byte_serialize(value.as_bytes()).collect::<String>()));
    }
    pairs.join("&").into_bytes()
}

fn names(rng: &mut Rng) -> Vec<u8> {
    let kind = pick(
        rng,
        &["invoke:", "publish:", "workflows:", "egress:", "kv:", "", "admin", "read", "dlq", "metrics", "bogus:"],
    );
    let mut text = format!("{kind}{}", name(rng));
    if kind == "kv:" {
        text.push_str(pick(rng, &[":read", ":write", ":admin", "", ":read:write"]));
    }
    if chance(rng, 50) {
        text.push_str(pick(rng, &["*", "**", "*a", " ", "\u{0}", "/"]));
    }
    let mut out = vec![rng.u8(..)];
    out.extend_from_slice(text.as_bytes());
    out
}

fn function_token(rng: &mut Rng) -> Vec<u8> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let key = super::fuzz_signing_key();
    let kid = if chance(rng, 220) { key.id.clone() } else { pick(rng, &["sk_other", "", "sk_fuzz "]).to_owned() };
    let mac = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key.secret);
    let exp = super::NOW + rng.i64(-5_000..60_000);
    let scopes: Vec<keel_core::auth::Scope> = ["kv:users:write", "publish:user.*", "egress:payments"]
        .iter()
        .filter(|_| chance(rng, 128))
        .map(|s| s.parse().unwrap())
        .collect();
    let token = crate::auth::secret::sign_with(&kid, &mac, &name(rng), "01JDZ0000000000000000000AB", exp, &scopes);
    match rng.u8(..8) {
        0 => {
            let (payload, signature) = token.split_once('.').unwrap();
            let claims = pick(
                rng,
                &[
                    "{}",
                    "{\"kid\":\"sk_fuzz\"}",
                    "[]",
                    "{\"kid\":\"sk_fuzz\",\"fn\":\"a\",\"inv\":\"i\",\"exp\":1e99,\"scopes\":[\"nope\"]}",
                ],
            );
            let _ = payload;
            format!("{}{}.{signature}", keel_core::auth::TOKEN_PREFIX, URL_SAFE_NO_PAD.encode(claims)).into_bytes()
        }
        1 => token.replacen('.', "", 1).into_bytes(),
        2 => format!("{token}.x").into_bytes(),
        3 => token.replace(keel_core::auth::TOKEN_PREFIX, keel_core::auth::SECRET_PREFIX).into_bytes(),
        _ => token.into_bytes(),
    }
}

fn network(rng: &mut Rng) -> String {
    let address = match rng.u8(..6) {
        0 => format!("{}.{}.{}.{}", rng.u8(..), rng.u8(..), rng.u8(..), rng.u8(..)),
        1 => std::net::Ipv6Addr::from(rng.u128(..)).to_string(),
        2 => pick(
            rng,
            &[
                "::ffff:10.1.2.3",
                "::",
                "::1",
                "0.0.0.0",
                "255.255.255.255",
                "fe80::1%eth0",
                "010.0.0.1",
                "1.2.3",
                "[::1]",
            ],
        )
        .to_owned(),
        3 => format!("{}.0.0.0", rng.u8(..)),
        _ => pick(rng, &["10.0.0.0", "2001:db8::", "192.168.0.0", "203.0.113.0"]).to_owned(),
    };
    match rng.u8(..5) {
        0 => address,
        1 => format!("{address}/{}", pick(rng, &["", "+8", "-0", "033", "256", "4294967304", " 8", "8 "])),
        _ => format!("{address}/{}", rng.u8(..=130)),
    }
}

fn forwarded_for(rng: &mut Rng) -> Vec<u8> {
    let mut lines = Vec::new();
    for _ in 0..rng.usize(..4) {
        let entries: Vec<String> = (0..rng.usize(..5))
            .map(|_| match rng.u8(..7) {
                0 => format!("{}:{}", pick(rng, &["203.0.113.7", "10.1.1.1"]), rng.u16(..)),
                1 => format!("[{}]:{}", pick(rng, &["2001:db8::9", "::1", "::ffff:10.0.0.1"]), rng.u16(..)),
                2 => pick(rng, &["unknown", "", " ", "[::1]", "1.2.3.4:x", "_hidden"]).to_owned(),
                3 => format!("10.{}.{}.{}", rng.u8(..), rng.u8(..), rng.u8(..)),
                _ => network(rng).split('/').next().unwrap_or("").to_owned(),
            })
            .collect();
        lines.push(entries.join(pick(rng, &[", ", ",", " , "])));
    }
    lines.join("\n").into_bytes()
}

/// A time zone line and a cron pattern of 4 to 7 fields, each field from the grammar's pieces
/// (`*`, `*/n`, ranges, lists, names, `L`, `W`, `#`, `?`) or out of range.
fn cron(rng: &mut Rng) -> Vec<u8> {
    let zone = pick(
        rng,
        &[
            "UTC",
            "Europe/Berlin",
            "America/New_York",
            "Australia/Lord_Howe",
            "Asia/Kathmandu",
            "Nowhere/Else",
            "",
            "utc",
        ],
    );
    let fields = [5usize, 5, 6, 6, 4, 7][rng.usize(..6)];
    let parts: Vec<String> = (0..fields)
        .map(|_| match rng.u8(..12) {
            0 | 1 => "*".to_owned(),
            2 => format!("*/{}", rng.u8(..70)),
            3 => format!("{}-{}", rng.u8(..70), rng.u8(..70)),
            4 => format!("{},{},{}", rng.u8(..60), rng.u8(..32), rng.u8(..13)),
            5 => pick(rng, &["MON", "SUN-SAT", "JAN", "DEC,FEB", "mon-fri", "L", "5L", "15W", "LW", "1#3", "?"])
                .to_owned(),
            6 => format!("{}/{}", rng.u8(..60), rng.u8(..20)),
            7 => pick(rng, &["0", "59", "60", "23", "24", "31", "32", "12", "13", "-1", "", "**"]).to_owned(),
            _ => rng.u8(..60).to_string(),
        })
        .collect();
    format!("{zone}\n{}", parts.join(pick(rng, &[" ", " ", "  ", "\t"]))).into_bytes()
}
