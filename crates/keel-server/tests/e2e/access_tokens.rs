//! Function tokens (issue 17): every attempt carries one naming its function and invocation,
//! expiring at the attempt's deadline, with the function's grants; Keel's API takes it like an
//! API key; effects outside the grants end the invocation dead with the grant named.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use keel_server::Node;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::support::{eventually, request, Keel};

/// The secret of the admin key the tests with auth on use: `keel_sk_` + 43 base64url characters.
const ADMIN: &str = "keel_sk_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

/// Functions for these tests, by path: `/kv?ns=NS` writes `NS/u1` as an effect, `/emit?topic=T`
/// emits an event to `T`, `/keep` answers 200; every one keeps the `authorization` it got.
#[derive(Debug, Clone, Default)]
struct TokenFunctions {
    tokens: Arc<Mutex<Vec<String>>>,
}

impl TokenFunctions {
    async fn start() -> (Self, SocketAddr) {
        let me = Self::default();
        let app = axum::Router::new().fallback(answer).with_state(me.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (me, addr)
    }

    /// The last token an attempt received.
    fn last_token(&self) -> Option<String> {
        self.tokens.lock().unwrap().last().cloned()
    }
}

async fn answer(
    State(me): State<TokenFunctions>,
    uri: axum::http::Uri,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Some(token) = headers.get("authorization").and_then(|v| v.to_str().ok()) {
        me.tokens.lock().unwrap().push(token.trim_start_matches("Bearer ").to_owned());
    }
    let arg = |k: &str| q.get(k).cloned().unwrap_or_default();
    let envelope = match uri.path() {
        "/kv" => json!({"result": {"ok": true}, "kv": [{"ns": arg("ns"), "key": "u1", "value": {"n": 1}}]}),
        "/emit" => json!({"result": {"ok": true}, "events": [{"topic": arg("topic"), "data": {}}]}),
        _ => return axum::Json(json!({"ok": true})).into_response(),
    };
    ([("content-type", "application/vnd.keel.effects+json")], envelope.to_string()).into_response()
}

/// A node with `toml` after its `[server]` and `[storage]` tables. With `[auth] mode = "keys"`
/// in it, the store is given the [`ADMIN`] key first.
async fn start(toml: &str) -> Keel {
    let dir = tempfile::tempdir().unwrap();
    let config = crate::support::config(dir.path(), toml);
    let store = keel_store::open(&keel_store::StoreOptions { url: config.storage.url.clone(), fsync: false }).unwrap();
    if config.auth.mode == keel_core::config::AuthMode::Keys {
        store.create_api_key(crate::access::key_of(ADMIN, "admin", &["admin"])).await.unwrap();
    }
    let node = Node::start_with_store(config, TcpListener::bind("127.0.0.1:0").await.unwrap(), store).await.unwrap();
    let url = format!("http://{}", node.addr());
    Keel { node: Some(node), url, dir }
}

/// A request with `Authorization: Bearer {credential}` (none when empty); the body as JSON.
async fn call(method: &str, url: &str, credential: &str, body: &str) -> (u16, Value) {
    let bearer = format!("Bearer {credential}");
    let mut headers = vec![("content-type", "application/json")];
    if !credential.is_empty() {
        headers.push(("authorization", bearer.as_str()));
    }
    let (status, _, body) = request(method, url, &headers, Bytes::from(body.to_owned())).await;
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// Invokes `function` asynchronously and waits until it ends; its invocation as the API shows it.
async fn invoke_until_final(keel: &Keel, function: &str, credential: &str) -> Value {
    let (status, accepted) =
        call("POST", &format!("{}/v1/functions/{function}/invocations", keel.url), credential, "{}").await;
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["id"].as_str().unwrap().to_owned();
    eventually(&format!("invocation {id} of {function} ends"), Duration::from_secs(10), || {
        let url = format!("{}/v1/invocations/{id}", keel.url);
        async move {
            let (_, inv) = call("GET", &url, credential, "").await;
            (!["queued", "running", "retrying"].contains(&inv["status"].as_str().unwrap_or("queued"))).then_some(inv)
        }
    })
    .await
}

/// A function whose effects go beyond its grants ends dead at once (one attempt, not retried),
/// its error naming the grant, and nothing of its envelope is written: here a function that
/// declares grants with auth off (held to them all the same), sync and async.
#[tokio::test]
async fn without_auth_a_function_that_declares_grants_is_held_to_them() {
    let (_fns, fx) = TokenFunctions::start().await;
    let keel = start(&format!(
        "[topics.\"user.registered\"]\n[topics.\"audit\"]\n\
         [functions.balances]\nurl = \"http://{fx}/kv?ns=balances\"\nretry = {{ max_attempts = 5 }}\n\
         grants = {{ kv = [\"users:write\"], publish = [\"user.*\"] }}\n\
         [functions.users]\nurl = \"http://{fx}/kv?ns=users\"\ngrants = {{ kv = [\"users:write\"] }}\n\
         [functions.audit]\nurl = \"http://{fx}/emit?topic=audit\"\nretry = {{ max_attempts = 5 }}\n\
         grants = {{ publish = [\"user.*\"] }}\n\
         [functions.ungoverned]\nurl = \"http://{fx}/kv?ns=balances\"\n"
    ))
    .await;

    let dead = invoke_until_final(&keel, "balances", "").await;
    assert_eq!(dead["status"], "dead", "{dead}");
    assert_eq!(dead["attempts"].as_array().map(Vec::len), Some(1), "permanent: not retried: {dead}");
    assert_eq!(
        dead["error"],
        r#"permanent failure: effect not granted: the function needs the grant kv = ["balances:write"] (scope kv:balances:write) to write balances/u1"#
    );
    assert_eq!(call("GET", &format!("{}/v1/kv/balances/u1", keel.url), "", "").await.0, 404, "nothing was written");

    let dead = invoke_until_final(&keel, "audit", "").await;
    assert_eq!(dead["status"], "dead", "{dead}");
    assert!(
        dead["error"]
            .as_str()
            .unwrap()
            .contains(r#"publish = ["audit"] (scope publish:audit) to publish to topic audit"#),
        "{dead}"
    );

    // Sync: the caller gets the failure at once.
    let (status, problem) = call("POST", &format!("{}/v1/functions/balances/invoke", keel.url), "", "{}").await;
    assert!(status >= 400, "{status} {problem}");
    assert!(problem.to_string().contains("kv:balances:write"), "{problem}");

    // Inside its grants it works; without grants (auth off) nothing is checked.
    assert_eq!(invoke_until_final(&keel, "users", "").await["status"], "succeeded");
    assert_eq!(call("GET", &format!("{}/v1/kv/users/u1", keel.url), "", "").await, (200, json!({"n": 1})));
    assert_eq!(invoke_until_final(&keel, "ungoverned", "").await["status"], "succeeded");
    assert_eq!(call("GET", &format!("{}/v1/kv/balances/u1", keel.url), "", "").await.0, 200);
}

/// With auth on, a function without grants may write nothing, and one with grants only what
/// they allow: KV to a namespace and events to a topic outside them end the invocation dead.
/// (Needs the API key store: unrunnable before it is in.)
#[tokio::test]
async fn with_auth_on_effects_outside_the_grants_end_the_invocation_dead() {
    let (_fns, fx) = TokenFunctions::start().await;
    let keel = start(&format!(
        "[auth]\nmode = \"keys\"\n[topics.\"user.registered\"]\n[topics.\"audit\"]\n\
         [functions.balances]\nurl = \"http://{fx}/kv?ns=balances\"\ngrants = {{ kv = [\"users:write\"] }}\n\
         [functions.audit]\nurl = \"http://{fx}/emit?topic=audit\"\ngrants = {{ publish = [\"user.*\"] }}\n\
         [functions.nothing]\nurl = \"http://{fx}/kv?ns=users\"\n\
         [functions.users]\nurl = \"http://{fx}/kv?ns=users\"\ngrants = {{ kv = [\"users:write\"] }}\n"
    ))
    .await;

    let dead = invoke_until_final(&keel, "balances", ADMIN).await;
    assert_eq!(dead["status"], "dead", "{dead}");
    assert!(
        dead["error"]
            .as_str()
            .unwrap()
            .contains(r#"the grant kv = ["balances:write"] (scope kv:balances:write) to write balances/u1"#),
        "{dead}"
    );
    assert_eq!(call("GET", &format!("{}/v1/kv/balances/u1", keel.url), ADMIN, "").await.0, 404, "nothing was written");

    let dead = invoke_until_final(&keel, "audit", ADMIN).await;
    assert_eq!(dead["status"], "dead", "{dead}");
    assert!(dead["error"].as_str().unwrap().contains("(scope publish:audit)"), "{dead}");

    let dead = invoke_until_final(&keel, "nothing", ADMIN).await;
    assert_eq!(dead["status"], "dead", "no grants, auth on: nothing allowed: {dead}");

    assert_eq!(invoke_until_final(&keel, "users", ADMIN).await["status"], "succeeded");
}

/// A function's token works on Keel's API for what its grants allow, and nothing else.
#[tokio::test]
async fn a_token_reads_what_its_grants_allow_and_is_refused_the_rest() {
    let (fns, fx) = TokenFunctions::start().await;
    let keel = start(&format!(
        "[auth]\nmode = \"keys\"\n\
         [functions.reader]\nurl = \"http://{fx}/keep\"\ntimeout = \"30s\"\ngrants = {{ kv = [\"users:read\"] }}\n"
    ))
    .await;
    let kv = format!("{}/v1/kv/users/x", keel.url);
    assert_eq!(call("PUT", &kv, ADMIN, r#"{"name": "Ada"}"#).await.0, 201);

    assert_eq!(invoke_until_final(&keel, "reader", ADMIN).await["status"], "succeeded");
    let token = fns.last_token().expect("the attempt carried a token");
    assert!(token.starts_with("keel_ft_"), "{token}");

    assert_eq!(call("GET", &kv, &token, "").await, (200, json!({"name": "Ada"})));
    let (status, problem) = call("PUT", &kv, &token, r#"{"name": "Eve"}"#).await;
    assert_eq!(status, 403, "{problem}");
    assert!(problem["detail"].as_str().unwrap_or_default().contains("kv:users:write"), "{problem}");
    assert_eq!(call("GET", &kv, ADMIN, "").await, (200, json!({"name": "Ada"})), "not written");
}

/// A token is good until its attempt's deadline and no longer, though the function kept it.
#[tokio::test]
async fn a_token_kept_past_its_attempts_deadline_is_refused() {
    let (fns, fx) = TokenFunctions::start().await;
    let keel = start(&format!(
        "[auth]\nmode = \"keys\"\n\
         [functions.keeper]\nurl = \"http://{fx}/keep\"\ntimeout = \"1s\"\ngrants = {{ kv = [\"users:read\"] }}\n"
    ))
    .await;
    assert_eq!(invoke_until_final(&keel, "keeper", ADMIN).await["status"], "succeeded");
    let token = fns.last_token().expect("the attempt carried a token");
    let kv = format!("{}/v1/kv/users/x", keel.url);
    let (status, _) = call("GET", &kv, &token, "").await;
    assert_ne!(status, 401, "valid until the deadline");
    // Needs the auth layer: the deadline is at most 1 s away.
    let (status, problem) = eventually("the kept token expires", Duration::from_secs(5), || {
        let (kv, token) = (kv.clone(), token.clone());
        async move {
            let answer = call("GET", &kv, &token, "").await;
            (answer.0 == 401).then_some(answer)
        }
    })
    .await;
    assert_eq!(status, 401);
    assert!(problem["detail"].as_str().unwrap_or_default().contains("expired"), "{problem}");
}
