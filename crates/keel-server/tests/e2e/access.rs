//! Access control from outside: the auth matrix over every route of the router, keyed replays
//! that stay with their key, the keys API and its audit log, revocation, and the loopback rule.

use std::sync::Arc;

use bytes::Bytes;
use keel_core::auth::{ApiKey, Scope};
use keel_core::store::Store;
use keel_server::Node;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

use crate::support::{self, request, Functions};

const NOW_MS: i64 = 1_700_000_000_000;

/// A node with `[auth] mode = "keys"` over a SQLite store the test also holds, so it can put keys
/// in place before the node starts.
pub(crate) struct Secured {
    pub(crate) url: String,
    node: Option<Node>,
    store: Arc<dyn Store>,
    _dir: tempfile::TempDir,
}

impl Drop for Secured {
    fn drop(&mut self) {
        drop(self.node.take());
    }
}

/// A key with a secret the test knows.
pub(crate) fn key(name: &str, scopes: &[&str], expires_at: Option<i64>, revoked_at: Option<i64>) -> (ApiKey, String) {
    let mut rng = fastrand::Rng::new();
    let body: String = (0..43).map(|_| rng.alphanumeric()).collect();
    let secret = format!("keel_sk_{body}");
    let key = ApiKey { expires_at, revoked_at, ..key_of(&secret, name, scopes) };
    (key, secret)
}

/// The key of `secret` as `keel keys create` would store it (its SHA-256, in hex), live.
pub(crate) fn key_of(secret: &str, name: &str, scopes: &[&str]) -> ApiKey {
    ApiKey {
        id: format!("key_{}", keel_core::id::new_id(NOW_MS)),
        name: name.to_owned(),
        hash: Sha256::digest(secret.as_bytes()).iter().map(|b| format!("{b:02x}")).collect(),
        scopes: scopes.iter().map(|s| s.parse::<Scope>().unwrap()).collect(),
        created_at: NOW_MS,
        expires_at: None,
        revoked_at: None,
        last_used_at: None,
    }
}

pub(crate) async fn start_secured(functions: &str, keys: &[&ApiKey]) -> Secured {
    let dir = tempfile::tempdir().unwrap();
    let config = support::config(dir.path(), &format!("{functions}\n[auth]\nmode = \"keys\"\n"));
    let store = keel_store::open(&keel_store::StoreOptions { url: config.storage.url.clone(), fsync: false }).unwrap();
    for key in keys {
        store.create_api_key((*key).clone()).await.unwrap();
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let node = Node::start_with_store(config, listener, store.clone()).await.unwrap();
    Secured { url: format!("http://{}", node.addr()), node: Some(node), store, _dir: dir }
}

pub(crate) fn bearer(secret: &str) -> String {
    format!("Bearer {secret}")
}

/// What access control made of one answer.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Unauthorized,
    Forbidden,
    /// Past access control: whatever the route answered (a 404 for a made-up id counts).
    Through,
}

fn verdict(status: u16, headers: &http::HeaderMap, body: &Bytes) -> Verdict {
    let problem: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    match status {
        401 => {
            assert_eq!(headers["www-authenticate"], r#"Bearer realm="keel""#);
            assert_eq!(problem["type"], "urn:keel:problem:unauthorized", "{problem}");
            Verdict::Unauthorized
        }
        // Egress answers 403 of its own to a caller that is not a running attempt: that one is
        // past access control, and names no scope.
        403 if problem.get("scope_needed").is_some() => Verdict::Forbidden,
        _ => Verdict::Through,
    }
}

/// A route's path with its parameters filled in, and the scope a request on it needs.
fn concrete(path: &str, scope: Option<&str>) -> (String, Option<String>) {
    let fill = |text: &str| {
        text.replace("{name}", "echo")
            .replace("{topic}", "t.x")
            .replace("{ns}", "ns")
            .replace("{*key}", "k")
            .replace("{id}", "01ARZ3NDEKTSV4RRFFQ69G5FAV")
            .replace("{dependency}", "dep")
            .replace("{*path}", "x")
    };
    (fill(path), scope.map(fill))
}

#[tokio::test]
async fn the_auth_matrix_every_route_answers_401_403_or_passes_exactly() {
    let (_functions, addr) = Functions::start().await;
    let (admin, admin_secret) = key("admin", &["admin"], None, None);
    let (revoked, revoked_secret) = key("gone", &["admin"], None, Some(NOW_MS));
    let (expired, expired_secret) = key("old", &["admin"], Some(NOW_MS), None);
    let (wrong, wrong_secret) = key("wrong", &["workflows:none", "invoke:other", "kv:other:read"], None, None);
    let (_, unknown_secret) = key("never-stored", &["admin"], None, None);
    let routes = keel_server::route_scopes();
    // One key per route holding exactly the scope that route needs.
    let mut right = Vec::new();
    for (method, path, scope) in &routes {
        let (_, scope) = concrete(path, scope.as_deref());
        right.push(scope.map(|s| key(&format!("{method} {path}"), &[s.as_str()], None, None)));
    }
    let mut stored: Vec<&ApiKey> = vec![&admin, &revoked, &expired, &wrong];
    stored.extend(right.iter().flatten().map(|(k, _)| k));
    let functions = format!(
        "[functions.echo]\nurl = \"http://{addr}/ok\"\ndependencies = [\"dep\"]\n[functions.other]\nurl = \"http://{addr}/ok\"\n\
         [dependencies.dep]\nurl = \"http://{addr}\"\n[topics.\"t.x\"]\n"
    );
    let keel = start_secured(&functions, &stored).await;

    let open: Vec<&str> = routes.iter().filter(|(_, _, s)| s.is_none()).map(|(_, p, _)| *p).collect();
    assert_eq!(open, ["/healthz", "/readyz"], "only health and readiness are open");
    assert!(routes.len() >= 37, "{} routes", routes.len());

    for ((method, path, scope), right) in routes.iter().zip(&right) {
        let (url_path, _) = concrete(path, scope.as_deref());
        let url = format!("{}{url_path}", keel.url);
        let body: &[u8] = match (method.as_str(), *path) {
            ("POST", "/v1/keys") => br#"{"name":"matrix","scopes":["read"]}"#,
            ("POST", "/v1/dlq/redrive") => b"{}",
            ("POST", _) | ("PUT", _) => b"{\"x\":1}",
            _ => b"",
        };
        let ask = |authorization: Option<String>| {
            let url = url.clone();
            async move {
                let mut headers = vec![("content-type", "application/json".to_owned())];
                if let Some(a) = authorization {
                    headers.push(("authorization", a));
                }
                let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
                let (status, h, b) = request(method.as_str(), &url, &headers, Bytes::from_static(body)).await;
                verdict(status, &h, &b)
            }
        };
        let is_open = scope.is_none();
        let locked = |v: Verdict| if is_open { Verdict::Through } else { v };
        let what = format!("{method} {path}");
        assert_eq!(ask(None).await, locked(Verdict::Unauthorized), "{what}: no key");
        assert_eq!(ask(Some("Bearer nonsense".into())).await, locked(Verdict::Unauthorized), "{what}: malformed");
        assert_eq!(ask(Some("Basic YTpi".into())).await, locked(Verdict::Unauthorized), "{what}: not bearer");
        assert_eq!(ask(Some(bearer(&unknown_secret))).await, locked(Verdict::Unauthorized), "{what}: unknown key");
        assert_eq!(ask(Some(bearer(&revoked_secret))).await, locked(Verdict::Unauthorized), "{what}: revoked key");
        assert_eq!(ask(Some(bearer(&expired_secret))).await, locked(Verdict::Unauthorized), "{what}: expired key");
        assert_eq!(ask(Some(bearer(&wrong_secret))).await, locked(Verdict::Forbidden), "{what}: wrong scope");
        if let Some((_, secret)) = right {
            assert_eq!(ask(Some(bearer(secret))).await, Verdict::Through, "{what}: its own scope");
        }
        assert_eq!(ask(Some(bearer(&admin_secret))).await, Verdict::Through, "{what}: admin");
    }
}

/// What access control made of one answer of the console: a sign-in page instead of a 401, a
/// refusal naming the scope (`keel-scope-needed`) instead of a 403.
fn console_verdict(status: u16, headers: &http::HeaderMap) -> Verdict {
    let location = headers.get("location").and_then(|l| l.to_str().ok()).unwrap_or_default();
    match status {
        303 if location.starts_with("/console/sign-in?") => Verdict::Unauthorized,
        403 if headers.contains_key("keel-scope-needed") => Verdict::Forbidden,
        _ => Verdict::Through,
    }
}

#[tokio::test]
async fn the_console_auth_matrix_every_page_and_action_is_guarded_like_the_api() {
    let (_functions, addr) = Functions::start().await;
    let (admin, admin_secret) = key("admin", &["admin"], None, None);
    let (revoked, revoked_secret) = key("gone", &["admin"], None, Some(NOW_MS));
    let (expired, expired_secret) = key("old", &["admin"], Some(NOW_MS), None);
    let (wrong, wrong_secret) = key("wrong", &["workflows:none", "invoke:other", "kv:other:read"], None, None);
    let (_, unknown_secret) = key("never-stored", &["admin"], None, None);
    let routes = keel_server::console::route_scopes();
    let mut right = Vec::new();
    for (method, path, scope) in &routes {
        let (_, scope) = concrete(path, scope.as_deref());
        right.push(scope.map(|s| key(&format!("{method} {path}"), &[s.as_str()], None, None)));
    }
    let mut stored: Vec<&ApiKey> = vec![&admin, &revoked, &expired, &wrong];
    stored.extend(right.iter().flatten().map(|(k, _)| k));
    let keel = start_secured(&format!("[functions.echo]\nurl = \"http://{addr}/ok\"\n"), &stored).await;

    let open: Vec<&str> = routes.iter().filter(|(_, _, s)| s.is_none()).map(|(_, p, _)| *p).collect();
    assert_eq!(
        open,
        [
            "/console/assets/console.css",
            "/console/assets/console.js",
            "/console/sign-in",
            "/console/sign-in",
            "/console/sign-out"
        ],
        "only the sign-in and the assets are open"
    );
    assert!(routes.iter().all(|(_, path, _)| path.starts_with("/console")));
    assert!(routes.len() >= 20, "{} routes", routes.len());

    for ((method, path, scope), right) in routes.iter().zip(&right) {
        let (url_path, _) = concrete(path, scope.as_deref());
        let url = format!("{}{url_path}", keel.url);
        let ask = |session: Option<String>| {
            let url = url.clone();
            async move {
                // A form with a valid CSRF token: what is refused here is refused by access control.
                let mut cookie = "keel_csrf=matrix".to_owned();
                if let Some(secret) = session {
                    cookie.push_str(&format!("; keel_session={secret}"));
                }
                let headers = [("cookie", cookie.as_str()), ("content-type", "application/x-www-form-urlencoded")];
                let body: &'static [u8] = if method == http::Method::POST { b"csrf=matrix" } else { b"" };
                let (status, h, _) = request(method.as_str(), &url, &headers, Bytes::from_static(body)).await;
                console_verdict(status, &h)
            }
        };
        let is_open = scope.is_none();
        let locked = |v: Verdict| if is_open { Verdict::Through } else { v };
        let what = format!("{method} {path}");
        assert_eq!(ask(None).await, locked(Verdict::Unauthorized), "{what}: not signed in");
        assert_eq!(ask(Some("nonsense".into())).await, locked(Verdict::Unauthorized), "{what}: malformed");
        assert_eq!(ask(Some(unknown_secret.clone())).await, locked(Verdict::Unauthorized), "{what}: unknown key");
        assert_eq!(ask(Some(revoked_secret.clone())).await, locked(Verdict::Unauthorized), "{what}: revoked key");
        assert_eq!(ask(Some(expired_secret.clone())).await, locked(Verdict::Unauthorized), "{what}: expired key");
        assert_eq!(ask(Some(wrong_secret.clone())).await, locked(Verdict::Forbidden), "{what}: wrong scope");
        if let Some((_, secret)) = right {
            assert_eq!(ask(Some(secret.clone())).await, Verdict::Through, "{what}: its own scope");
        }
        assert_eq!(ask(Some(admin_secret.clone())).await, Verdict::Through, "{what}: admin");
    }

    // A form without the CSRF token of its cookie is refused before anything is done.
    let url = format!("{}/console/functions/echo/pause", keel.url);
    let cookie = format!("keel_csrf=a; keel_session={admin_secret}");
    let (status, headers, _) = request("POST", &url, &[("cookie", &cookie)], "csrf=b").await;
    assert_eq!((status, headers.contains_key("keel-scope-needed")), (403, false));
    let cookie = format!("keel_csrf=a; keel_session={admin_secret}");
    let (status, _, _) =
        request("POST", &url, &[("cookie", &cookie), ("origin", "https://evil.example")], "csrf=a").await;
    assert_eq!(status, 403, "a form from another site");
}

#[tokio::test]
async fn a_403_names_the_scope_needed_and_a_401_says_why() {
    let (_functions, addr) = Functions::start().await;
    let (reader, reader_secret) = key("reader", &["read"], None, None);
    let (revoked, revoked_secret) = key("gone", &["read"], None, Some(NOW_MS));
    let keel = start_secured(&format!("[functions.echo]\nurl = \"http://{addr}/ok\"\n"), &[&reader, &revoked]).await;
    let url = format!("{}/v1/functions/echo/invoke", keel.url);
    let (status, _, body) = request("POST", &url, &[("authorization", &bearer(&reader_secret))], "{}").await;
    assert_eq!(status, 403);
    let problem: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(problem["scope_needed"], "invoke:echo");
    assert!(problem["detail"].as_str().unwrap().contains(&reader.id), "{problem}");
    let (status, _, body) =
        request("GET", &format!("{}/v1/functions", keel.url), &[("authorization", &bearer(&revoked_secret))], "").await;
    assert_eq!(status, 401);
    assert!(String::from_utf8_lossy(&body).contains("revoked"));
    // Health and readiness need nothing.
    assert_eq!(request("GET", &format!("{}/healthz", keel.url), &[], "").await.0, 200);
}

#[tokio::test]
async fn a_keyed_replay_stays_with_the_key_that_made_it() {
    let (_functions, addr) = Functions::start().await;
    let (a, a_secret) = key("a", &["invoke:echo"], None, None);
    let (b, b_secret) = key("b", &["invoke:echo"], None, None);
    let keel = start_secured(&format!("[functions.echo]\nurl = \"http://{addr}/ok\"\n"), &[&a, &b]).await;
    let url = format!("{}/v1/functions/echo/invocations", keel.url);
    let post = |secret: String| {
        let url = url.clone();
        async move {
            let auth = bearer(&secret);
            let headers = [
                ("authorization", auth.as_str()),
                ("idempotency-key", "order-1"),
                ("content-type", "application/json"),
            ];
            let (status, headers, body) = request("POST", &url, &headers, "{\"n\":1}").await;
            assert_eq!(status, 202, "{}", String::from_utf8_lossy(&body));
            let id = serde_json::from_slice::<Value>(&body).unwrap()["id"].as_str().unwrap().to_owned();
            (id, headers.contains_key("idempotent-replayed"))
        }
    };
    let (first, replayed) = post(a_secret.clone()).await;
    assert!(!replayed);
    let (again, replayed) = post(a_secret).await;
    assert_eq!((again.as_str(), replayed), (first.as_str(), true), "the same key replays its own answer");
    let (other, replayed) = post(b_secret).await;
    assert!(!replayed, "another key's request with the same Idempotency-Key is not a replay");
    assert_ne!(other, first, "and it does not see the first key's invocation");
}

#[tokio::test]
async fn keys_made_revoked_and_audited_through_the_api() {
    let (_functions, addr) = Functions::start().await;
    let (admin, admin_secret) = key("admin", &["admin"], None, None);
    let keel = start_secured(&format!("[functions.echo]\nurl = \"http://{addr}/ok\"\n"), &[&admin]).await;
    let admin_auth = bearer(&admin_secret);
    let as_admin =
        [("authorization", admin_auth.as_str()), ("content-type", "application/json"), ("x-request-id", "req-42")];
    let (status, _, body) = request(
        "POST",
        &format!("{}/v1/keys", keel.url),
        &as_admin,
        r#"{"name":"app","scopes":["invoke:echo","publish:user.*"],"expires_in":"90d"}"#,
    )
    .await;
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    let created: Value = serde_json::from_slice(&body).unwrap();
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("keel_sk_") && secret.len() == 8 + 43, "{secret}");
    assert_eq!(created["scopes"], serde_json::json!(["invoke:echo", "publish:user.*"]));
    assert!(created["expires_at"].is_string());
    let id = created["id"].as_str().unwrap().to_owned();

    // Usable at once on this node; the list shows no secret.
    let app_auth = bearer(&secret);
    let invoke = format!("{}/v1/functions/echo/invoke", keel.url);
    let (status, _, body) = request("POST", &invoke, &[("authorization", &app_auth)], "{}").await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let (_, _, body) = request("GET", &format!("{}/v1/keys", keel.url), &as_admin, "").await;
    let list = String::from_utf8_lossy(&body).into_owned();
    assert!(list.contains(&id) && !list.contains(&secret) && !list.contains("hash"), "{list}");

    // A bad scope is a 400 naming it.
    let (status, _, body) =
        request("POST", &format!("{}/v1/keys", keel.url), &as_admin, r#"{"name":"x","scopes":["root"]}"#).await;
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("root"));

    // Revoked: refused at once on this node.
    let (status, _, body) = request("DELETE", &format!("{}/v1/keys/{id}", keel.url), &as_admin, "").await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(request("POST", &invoke, &[("authorization", &app_auth)], "{}").await.0, 401);

    // A pause is audited too; the log names who, what, and the request id.
    let pause = format!("{}/v1/functions/echo/pause", keel.url);
    assert_eq!(request("POST", &pause, &as_admin, "").await.0, 200);
    let (status, _, body) = request("GET", &format!("{}/v1/audit", keel.url), &as_admin, "").await;
    assert_eq!(status, 200);
    let log: Value = serde_json::from_slice(&body).unwrap();
    let actions: Vec<(&str, &str, &str)> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["target"].as_str().unwrap(), e["actor"].as_str().unwrap()))
        .collect();
    assert_eq!(
        actions,
        [
            ("function.pause", "echo", admin.id.as_str()),
            ("key.revoke", id.as_str(), admin.id.as_str()),
            ("key.create", id.as_str(), admin.id.as_str())
        ],
        "newest first"
    );
    assert!(log["items"].as_array().unwrap().iter().all(|e| e["request_id"] == "req-42"), "{log}");
    let (_, _, body) = request("GET", &format!("{}/v1/audit?action=key.create", keel.url), &as_admin, "").await;
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap()["items"].as_array().unwrap().len(), 1);

    // A revoked key's last use was recorded (written in batches, within a few seconds).
    support::eventually("last_used_at to be written", std::time::Duration::from_secs(10), || {
        let store = keel.store.clone();
        let id = id.clone();
        async move {
            let keys = store.api_keys().await.unwrap();
            keys.iter().find(|k| k.id == id).and_then(|k| k.last_used_at)
        }
    })
    .await;
}

#[test]
fn auth_off_beyond_loopback_is_refused_with_how_to_turn_it_on() {
    let text = "[server]\nlisten = \"0.0.0.0:7733\"\n";
    let error = keel_core::config::load_str("keel.toml", text, &Default::default()).unwrap_err().to_string();
    assert!(error.contains("keel.toml:2"), "{error}");
    assert!(error.contains("not a loopback address") && error.contains("keel keys create"), "{error}");
    let text = "[server]\nlisten = \"0.0.0.0:7733\"\n[auth]\nmode = \"keys\"\n";
    keel_core::config::load_str("keel.toml", text, &Default::default()).unwrap();
}
