//! Fuzz targets: one per parser Keel owns, each a `fn(&[u8])` that panics when a property
//! fails (a crash, an accepted input outside its grammar, a round trip that does not hold).
//! Public (hidden) only so that the cargo-fuzz crate in `fuzz/` can call them; the stable
//! engine that drives them (structure-aware generators, corpus replay, the long run) is in this
//! module's tests. See RESILIENCE.md, "Fuzzing".
//!
//! Multi-part inputs are text: a status line then a value (`retry_after`), HTTP-like header
//! lines, a blank line, then a body (`cloudevent_binary`), one header line each
//! (`forwarded_for`), so the checked-in corpus reads like what it stands for.

#[cfg(test)]
mod generate;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::IpAddr;

use axum::http::{HeaderMap, HeaderValue};
use keel_core::auth::{Scope, SigningKey};
use keel_core::clock::Millis;
use keel_core::config::{load_str, Location, Overrides};
use keel_core::edge::{client_address, Cidr};
use keel_core::events::{self, CloudEvent};

/// One target: its name (the folder of its corpus, `fuzz/corpus/<name>`) and its check.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub name: &'static str,
    /// Panics when a property fails; `true` when the parser accepted the input.
    pub run: fn(&[u8]) -> bool,
}

/// Every target.
pub const TARGETS: [Target; 16] = [
    Target { name: "config", run: config },
    Target { name: "cloudevent_structured", run: cloudevent_structured },
    Target { name: "cloudevent_batch", run: cloudevent_batch },
    Target { name: "cloudevent_binary", run: cloudevent_binary },
    Target { name: "effects", run: effects },
    Target { name: "idempotency_key", run: idempotency_key },
    Target { name: "retry_after", run: retry_after },
    Target { name: "keel_delay", run: keel_delay },
    Target { name: "duration", run: duration },
    Target { name: "list_query", run: list_query },
    Target { name: "names", run: names },
    Target { name: "expires_in", run: expires_in },
    Target { name: "function_token", run: function_token },
    Target { name: "cidr", run: cidr },
    Target { name: "forwarded_for", run: forwarded_for },
    Target { name: "cron", run: cron },
];

/// "Now" for the targets that need one: 2026-11-30T00:00:00Z.
const NOW: Millis = 1_795_996_800_000;

fn text(data: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(data)
}

/// `keel.toml` text: loads or fails with errors located in the file (never from env or flags,
/// none were given), on a line the file has.
pub fn config(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else { return false };
    let Err(errors) = load_str("keel.toml", text, &Overrides::default()) else { return true };
    assert!(!errors.0.is_empty(), "a failed load names at least one error");
    let lines = text.lines().count().max(1) + 1;
    for error in &errors.0 {
        match &error.location {
            Location::File { path, line, .. } => {
                assert_eq!(path, "keel.toml", "{error}");
                assert!(*line <= lines, "{error}: line {line} past the file's {lines} lines");
            }
            Location::Default => {}
            other => panic!("{error}: located at {other:?} with no overrides"),
        }
    }
    false
}

/// What Keel delivers as headers must be a header value (the reason control characters are
/// refused), and an event read back from its binary form is the same event.
fn check_event(event: &CloudEvent) {
    let headers = event.binary_headers();
    for (name, value) in &headers {
        assert!(HeaderValue::from_str(value).is_ok(), "{name}: {value:?} is not a header value");
    }
    let back = events::from_binary(&headers, event.datacontenttype.as_deref(), event.data.clone())
        .unwrap_or_else(|e| panic!("{event:?} does not read back from its binary form: {e}"));
    let mut expected = event.clone();
    expected.extensions.retain(|name, _| name != "traceparent" && name != "tracestate");
    assert_eq!(back, expected, "binary round trip");
}

/// `application/cloudevents+json`.
pub fn cloudevent_structured(data: &[u8]) -> bool {
    let Ok(event) = events::from_structured(data) else { return false };
    check_event(&event);
    true
}

/// `application/cloudevents-batch+json`: all or nothing, each event as if alone.
pub fn cloudevent_batch(data: &[u8]) -> bool {
    let Ok(batch) = events::from_structured_batch(data) else { return false };
    assert!(!batch.is_empty());
    for event in &batch {
        check_event(event);
    }
    true
}

/// Binary mode: `name: value` header lines, a blank line, the body. A `content-type` line is the
/// content type; the rest go in as the gateway passes them (lower-cased names).
pub fn cloudevent_binary(data: &[u8]) -> bool {
    let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(at) => (&data[..at], &data[at + 2..]),
        None => (data, &[][..]),
    };
    let mut content_type = None;
    let mut headers = Vec::new();
    for line in text(head).lines() {
        let Some((name, value)) = line.split_once(':') else { continue };
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim().to_owned());
        if name == "content-type" {
            content_type = Some(value);
        } else {
            headers.push((name, value));
        }
    }
    let body = bytes::Bytes::copy_from_slice(body);
    let Ok(event) = events::from_binary(&headers, content_type.as_deref(), body) else { return false };
    check_event(&event);
    true
}

/// The effects envelope: an accepted one has a 2xx status and only names the store accepts.
pub fn effects(data: &[u8]) -> bool {
    let depth = keel_core::limits::LimitsConfig::DEFAULT_MAX_JSON_DEPTH;
    let Ok(effects) = keel_core::effects::parse(data, depth) else { return false };
    assert!((200..300).contains(&effects.status));
    for write in &effects.kv {
        assert!(keel_core::kv::check_name("ns", &write.ns).is_ok(), "{:?}", write.ns);
        assert!(keel_core::kv::check_name("key", &write.key).is_ok(), "{:?}", write.key);
    }
    for event in &effects.events {
        assert!(!event.topic.is_empty());
    }
    true
}

/// `Idempotency-Key`: an accepted key is 1–255 printable ASCII characters and reads back the
/// same from its quoted form (and from its bare form when it has no space, `"` or `\`).
pub fn idempotency_key(data: &[u8]) -> bool {
    let parsed = keel_core::idempotency::parse_key_header(data);
    if let Ok(value) = HeaderValue::from_bytes(data) {
        let mut headers = HeaderMap::new();
        headers.insert("idempotency-key", value);
        let gateway = crate::api::idempotency::key_from(&headers).map_err(|_| ());
        assert_eq!(
            gateway,
            parsed.clone().map(Some).map_err(|_| ()),
            "the gateway reads the header as the parser does"
        );
    }
    let Ok(key) = parsed else { return false };
    assert!((1..=255).contains(&key.len()), "{key:?}");
    assert!(key.bytes().all(|b| (0x20..=0x7e).contains(&b)), "{key:?}");
    let quoted = format!("\"{}\"", key.replace('\\', "\\\\").replace('"', "\\\""));
    assert_eq!(keel_core::idempotency::parse_key_header(quoted.as_bytes()).as_ref(), Ok(&key), "quoted");
    if !key.contains([' ', '"', '\\']) {
        assert_eq!(keel_core::idempotency::parse_key_header(key.as_bytes()).as_ref(), Ok(&key), "bare");
    }
    true
}

/// `Retry-After`: `STATUS` on the first line, the value after it. A function's answer (seconds
/// or an HTTP-date, on 429/503) and a dependency's (seconds) both ask for at most a day.
pub fn retry_after(data: &[u8]) -> bool {
    let text = text(data);
    let (status, value) = text.split_once('\n').unwrap_or(("503", &text));
    let status = status.trim().parse::<u16>().unwrap_or(503);
    let function = keel_core::outcome::retry_after(status, Some(value), NOW);
    if let Some(delay) = function {
        assert!(matches!(status, 429 | 503), "honoured on {status}");
        assert!(delay <= keel_core::outcome::MAX_RETRY_AFTER, "{value:?} → {delay:?}");
    }
    if let Ok(header) = HeaderValue::from_str(value) {
        if let Some(delay) = crate::egress::call::dependency_retry_after(&header) {
            assert!(delay <= keel_core::outcome::MAX_RETRY_AFTER, "{value:?} → {delay:?}");
            assert!(tokio::time::Instant::now().checked_add(delay).is_some());
            assert_eq!(Some(delay), keel_core::outcome::retry_after(503, Some(value), NOW), "seconds read alike");
        }
    }
    function.is_some()
}

/// `keel-delay`: at most 365 days, and the delay written in milliseconds reads back the same.
pub fn keel_delay(data: &[u8]) -> bool {
    let Ok(value) = HeaderValue::from_bytes(data) else { return false };
    let mut headers = HeaderMap::new();
    headers.insert(crate::api::delay::KEEL_DELAY, value);
    let Ok(delay) = crate::api::delay::delay_from(&headers) else { return false };
    assert!(delay <= crate::api::delay::MAX_DELAY);
    let again = format!("{}ms", delay.as_millis());
    headers.insert(crate::api::delay::KEEL_DELAY, HeaderValue::from_str(&again).expect("ascii"));
    assert_eq!(crate::api::delay::delay_from(&headers).ok(), Some(delay), "{again}");
    true
}

/// Config and header durations (`2h 30m`): re-rendered in canonical form, the same duration.
pub fn duration(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else { return false };
    let Ok(parsed) = keel_core::duration::parse_duration(text) else { return false };
    let ms = parsed.as_millis();
    // Each part counts at most u32::MAX of its unit, so only sums of several such parts have no
    // canonical form (past 490,000 years): those are left out.
    if ms / 3_600_000 <= u128::from(u32::MAX) {
        let canonical = format!("{}h {}m {}s {}ms", ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
        assert_eq!(keel_core::duration::parse_duration(&canonical), Ok(parsed), "{text:?} → {canonical}");
    }
    assert_eq!(parsed.subsec_nanos() % 1_000_000, 0, "whole milliseconds");
    true
}

/// A list query (`?function=&status=&limit=&cursor=`): what it accepts is a page size of 1 to
/// the maximum and a cursor as answered (a canonical ULID).
pub fn list_query(data: &[u8]) -> bool {
    let query: HashMap<String, String> = url::form_urlencoded::parse(data).into_owned().collect();
    let allowed = ["function", "status", "limit", "cursor", "subscription"];
    let Ok(filter) = crate::api::body::list_filter(&query, &allowed) else { return false };
    assert!(filter.limit <= keel_core::store::MAX_LIMIT);
    if query.contains_key("limit") {
        assert!(filter.limit >= 1);
    }
    if let Some(cursor) = &filter.cursor {
        assert_eq!(cursor.len(), 26, "{cursor:?}");
        assert!(keel_core::id::is_valid(cursor) && cursor.bytes().all(|b| !b.is_ascii_lowercase()), "{cursor:?}");
    }
    true
}

/// Names: a KV namespace or key (first byte even: namespace), and scopes (`invoke:FN`,
/// `kv:NS:write`, …) whose text reads back as the same scope.
pub fn names(data: &[u8]) -> bool {
    let Some((&which, rest)) = data.split_first() else { return false };
    let name = text(rest);
    let what = if which % 2 == 0 { "ns" } else { "key" };
    let kv_name = keel_core::kv::check_name(what, &name).is_ok();
    if kv_name {
        assert!((1..=255).contains(&name.len()) && !name.chars().any(char::is_control));
        assert!(what == "key" || !name.contains('/'));
    }
    let Ok(scope) = name.parse::<Scope>() else { return kv_name };
    let shown = scope.to_string();
    assert_eq!(shown.parse::<Scope>().as_ref(), Ok(&scope), "{name:?} → {shown:?}");
    let json = serde_json::to_string(&scope).expect("a scope serializes");
    assert_eq!(serde_json::from_str::<Scope>(&json).ok().as_ref(), Some(&scope), "{json}");
    true
}

/// `expires_in` of a new API key: positive, and its count of the unit read back.
pub fn expires_in(data: &[u8]) -> bool {
    let text = text(data);
    let Some(ms) = crate::api::access::expires_in_ms(&text) else { return false };
    assert!(ms > 0, "{text:?}");
    let (count, unit) = text.split_at(text.len() - 1);
    assert_eq!(crate::api::access::expires_in_ms(&format!("{}{unit}", count.parse::<u64>().unwrap())), Some(ms));
    true
}

/// The signing key the `function_token` target verifies with.
pub fn fuzz_signing_key() -> SigningKey {
    SigningKey { id: "sk_fuzz".into(), secret: vec![7; 32], created_at: 0, expires_at: None }
}

/// A function token (`keel_ft_…`): accepted only when signed by the known key and not expired.
pub fn function_token(data: &[u8]) -> bool {
    let text = text(data);
    let key = fuzz_signing_key();
    let key_of = |kid: &str| (kid == key.id).then(|| key.clone());
    let Ok(claims) = crate::auth::secret::verify(&text, NOW, key_of) else { return false };
    assert_eq!(claims.kid, key.id);
    assert!(NOW < claims.exp, "expired at {}", claims.exp);
    assert!(text.starts_with(keel_core::auth::TOKEN_PREFIX));
    true
}

/// A firewall network (`10.0.0.0/8`): its text reads back as the same network, which holds its
/// own address.
pub fn cidr(data: &[u8]) -> bool {
    let text = text(data);
    let Ok(network) = text.parse::<Cidr>() else { return false };
    let shown = network.to_string();
    assert_eq!(shown.parse::<Cidr>().as_ref(), Ok(&network), "{text:?} → {shown}");
    let (address, _) = shown.split_once('/').expect("shown with a prefix");
    let address: IpAddr = address.parse().expect("an address");
    assert!(network.contains(address), "{shown} holds {address}");
    true
}

/// `X-Forwarded-For` lines, from a trusted peer and from one that is not: the client is the
/// peer or an address written in the header, and never what an untrusted peer's header says.
pub fn forwarded_for(data: &[u8]) -> bool {
    let text = text(data);
    let trusted: Vec<Cidr> = ["10.0.0.0/8", "2001:db8::/32"].iter().map(|t| t.parse().expect("valid")).collect();
    let written: Vec<IpAddr> = text
        .lines()
        .flat_map(|line| line.split(','))
        .filter_map(|entry| {
            let entry = entry.trim();
            entry.parse::<IpAddr>().ok().or_else(|| entry.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))
        })
        .map(|ip| ip.to_canonical())
        .collect();
    for peer in ["10.0.0.5", "::ffff:10.0.0.5", "2001:db8::5", "198.51.100.9"] {
        let peer: IpAddr = peer.parse().expect("valid");
        let client = client_address(peer, text.lines(), &trusted);
        if Cidr::any_contains(&trusted, peer) {
            assert!(client == peer.to_canonical() || written.contains(&client), "{client} from {peer}");
        } else {
            assert_eq!(client, peer, "an untrusted peer is the client");
        }
    }
    !written.is_empty()
}

/// A schedule's `cron` pattern read in a time zone (the zone on the first line, the pattern on
/// the second; one line is a pattern in UTC): an accepted one has its next tick after now, the
/// tick after that later still, its last tick at or before the next one is no later than it,
/// and what comes due after a day of downtime lies within that day.
pub fn cron(data: &[u8]) -> bool {
    use keel_core::schedule::{due, Cadence, Missed};
    let text = text(data);
    let (zone, pattern) = text.split_once('\n').unwrap_or(("UTC", &text));
    let Ok(cadence) = Cadence::cron(pattern, zone) else { return false };
    if let Some(next) = cadence.next_after(NOW) {
        assert!(next > NOW, "{pattern:?} in {zone}: next {next} not after {NOW}");
        if let Some(after) = cadence.next_after(next) {
            assert!(after > next, "{pattern:?} in {zone}: {after} not after {next}");
        }
        if let Some(last) = cadence.last_at_or_before(next) {
            assert!(last <= next, "{pattern:?} in {zone}: last {last} after {next}");
        }
    }
    let since = NOW - 86_400_000;
    for missed in [Missed::Skip, Missed::RunOnce] {
        let decided = due(&cadence, missed, since, NOW);
        if let Some(fire) = decided.fire {
            assert!(since < fire && fire <= NOW, "{pattern:?} in {zone}: fires {fire} outside the day");
        }
        if let Some(next) = decided.next {
            assert!(next > NOW, "{pattern:?} in {zone}: next {next} not after now");
        }
    }
    true
}
