//! Access control on the API: what each route needs ([`Guard`], one per row of `ROUTES`), the
//! layer that authenticates and checks it ([`authorize`]), who acted ([`Actor`], for the audit
//! log and the idempotency scope), and the admin routes of keys and the audit log.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{FromRequestParts, Path, Query, RawPathParams, Request, State};
use axum::http::request::Parts;
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use axum::Json;
use keel_core::auth::{ApiKey, AuditEntry, AuditFilter, Need, Scope};
use keel_core::clock::{rfc3339, Millis};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::body::{parse_cursor, parse_limit};
use super::edge::Edge;
use super::openapi;
use crate::auth::{self, Principal};
use crate::problem::Problem;
use crate::state::Shared;

/// What a route needs, before its path parameters are known: the parameterised guards name the
/// first path parameter (the function, topic, namespace or dependency).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Guard {
    /// Nobody is asked: `/healthz`, `/readyz`.
    Open,
    Read,
    Dlq,
    Metrics,
    Admin,
    /// `invoke:{name}`.
    Invoke,
    /// `publish:{topic}`.
    Publish,
    /// `kv:{ns}:read` on GET, `kv:{ns}:write` otherwise.
    Kv,
    /// `egress:{dependency}`: function tokens (and admin keys).
    Egress,
    /// `workflows:{name}`.
    Workflows,
}

impl Guard {
    /// The need of one request on a route with this guard.
    pub(crate) fn need(self, method: &Method, first_param: Option<&str>) -> Need {
        let name = || first_param.unwrap_or_default().to_owned();
        match self {
            Guard::Open => Need::Open,
            Guard::Read => Need::Read,
            Guard::Dlq => Need::Dlq,
            Guard::Metrics => Need::Metrics,
            Guard::Admin => Need::Admin,
            Guard::Invoke => Need::Invoke(name()),
            Guard::Publish => Need::Publish(name()),
            Guard::Kv if method == Method::GET || method == Method::HEAD => Need::KvRead(name()),
            Guard::Kv => Need::KvWrite(name()),
            Guard::Egress => Need::Egress(name()),
            Guard::Workflows => Need::Workflows(name()),
        }
    }

    /// The scope the OpenAPI document names for a route (`{name}` left as written).
    pub(crate) fn scope_template(self, method: &Method, path: &str) -> Option<String> {
        let param = path.split('{').nth(1).and_then(|p| p.split('}').next()).map(|p| format!("{{{p}}}"));
        let need = self.need(method, param.as_deref());
        (need != Need::Open).then(|| need.to_string())
    }
}

/// What the access layer of one route checks: its [`Guard`], and the per-key throttle (`None`
/// where a layer between the two throttles instead, [`super::edge::throttle_key`]).
pub(crate) struct Gate {
    shared: Arc<Shared>,
    guard: Guard,
    throttle: Option<Arc<Edge>>,
}

impl Gate {
    /// `route` behind the access layer of `guard`, with the per-key throttle of `throttle`.
    pub(crate) fn guard<S: Clone + Send + Sync + 'static>(
        route: MethodRouter<S>,
        shared: &Arc<Shared>,
        guard: Guard,
        throttle: Option<&Arc<Edge>>,
    ) -> MethodRouter<S> {
        let gate = Gate { shared: shared.clone(), guard, throttle: throttle.cloned() };
        route.layer(axum::middleware::from_fn_with_state(Arc::new(gate), authorize))
    }
}

/// The layer of one route: who is calling (401 when auth is on and they cannot say), whether
/// they may (403 naming the scope needed), and (for callers with an API key) the per-key
/// throttle (429). The caller goes into the request's extensions as a [`Principal`] for the
/// handler, the idempotency scope and the audit log.
///
/// One layer for access and the throttle: each `from_fn` layer costs every request a clone of
/// the boxed route and a boxed future (BENCHMARKS.md, "Round three, continued").
async fn authorize(State(gate): State<Arc<Gate>>, params: RawPathParams, request: Request, next: Next) -> Response {
    match admit(&gate, &params, request) {
        Ok(request) => next.run(request).await,
        Err(refused) => refused.into_response(),
    }
}

/// [`authorize`]'s decision: the request with its caller, or the refusal.
fn admit(gate: &Gate, params: &RawPathParams, mut request: Request) -> Result<Request, Problem> {
    if gate.guard == Guard::Open {
        return Ok(request);
    }
    let shared = &gate.shared;
    let now = shared.clock.now_ms();
    let principal = shared.auth.authenticate(request.headers().get(header::AUTHORIZATION), now)?;
    // `admin` grants every need (and every caller holds it while auth is off): the need, which
    // copies the route's name, is made only where it is checked.
    if !principal.scopes().contains(&Scope::Admin) {
        let need = gate.guard.need(request.method(), params.iter().next().map(|(_, value)| value));
        if !Scope::any_allows(principal.scopes(), &need) {
            return Err(Problem::forbidden(&need, &principal.describe()));
        }
    }
    // A standby or fenced node refuses writes to callers allowed to make them.
    if let Some(refusal) = crate::regions::refuse_writes(shared, request.method()) {
        return Err(refusal);
    }
    request.extensions_mut().insert(principal);
    if let Some(edge) = &gate.throttle {
        super::edge::check_key(edge, &request)?;
    }
    Ok(request)
}

/// Who made a request, and its request id (`x-request-id`, else the trace id of its
/// `traceparent`), for the audit log.
#[derive(Debug, Clone)]
pub(crate) struct Actor {
    pub(crate) principal: Principal,
    pub(crate) request_id: Option<String>,
}

/// Who made a request, without the request id [`Actor`] reads too: for handlers that need the
/// caller only to scope idempotency keys (the invoke routes, where the id was a copy per call).
pub(crate) struct Caller(pub(crate) Principal);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Caller(principal_of(parts)))
    }
}

/// The caller `authorize` put in the request; anonymous on a route nobody is asked about.
fn principal_of(parts: &Parts) -> Principal {
    parts.extensions.get::<Principal>().cloned().unwrap_or(Principal::Anonymous)
}

impl<S: Send + Sync> FromRequestParts<S> for Actor {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let principal = principal_of(parts);
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
        let request_id = header("x-request-id")
            .map(str::to_owned)
            .or_else(|| header("traceparent").and_then(|t| t.split('-').nth(1)).map(str::to_owned));
        Ok(Actor { principal, request_id })
    }
}

impl Actor {
    /// Appends to the audit log as this actor.
    pub(crate) async fn record(&self, shared: &Shared, action: &str, target: &str, detail: serde_json::Value) {
        auth::record(shared, &self.principal, action, target, self.request_id.clone(), detail).await;
    }
}

/// An API key as the API shows it: never the secret (nor its hash).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct KeyView {
    id: String,
    name: String,
    /// Scopes, as given.
    scopes: Vec<String>,
    /// RFC 3339.
    created_at: String,
    expires_at: Option<String>,
    revoked_at: Option<String>,
    /// Written every few seconds: may lag behind the last request.
    last_used_at: Option<String>,
}

fn key_view(key: &ApiKey) -> KeyView {
    KeyView {
        id: key.id.clone(),
        name: key.name.clone(),
        scopes: key.scopes.iter().map(ToString::to_string).collect(),
        created_at: rfc3339(key.created_at),
        expires_at: key.expires_at.map(rfc3339),
        revoked_at: key.revoked_at.map(rfc3339),
        last_used_at: key.last_used_at.map(rfc3339),
    }
}

/// A new key: the view and, this once, its secret.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct CreatedKey {
    #[serde(flatten)]
    key: KeyView,
    /// `keel_sk_…`: shown only in this answer; Keel keeps its hash alone.
    secret: String,
}

/// The body of `POST /v1/keys`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewKey {
    /// What the key is for (shown by `keel keys ls`): 1 to 200 characters, not only spaces.
    #[schema(min_length = 1, max_length = 200, pattern = "\\S")]
    name: String,
    /// `invoke:FN`, `publish:TOPIC`, `read`, `dlq`, `kv:NS:read`, `kv:NS:write`,
    /// `workflows:NAME`, `metrics`, `admin`; names may end in `*`. At least one.
    #[schema(schema_with = scope_list)]
    scopes: Vec<String>,
    /// How long the key lives: a whole number of `s`, `m`, `h` or `d`, e.g. `90d`; forever when
    /// left out.
    #[schema(pattern = "^[1-9][0-9]{0,8}[smhd]$")]
    expires_in: Option<String>,
}

/// `scopes`' schema: at least one, each as `Scope::from_str` reads it (printable ASCII names
/// without `:`, `*` only at the end).
fn scope_list() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
    const SCOPE: &str = "^(admin|read|dlq|metrics|(invoke|publish|workflows|egress):([!-)+-9;-~]+[*]?|[*])\
                         |kv:([!-)+-9;-~]+[*]?|[*]):(read|write))$";
    ArrayBuilder::new()
        .items(ObjectBuilder::new().schema_type(Type::String).pattern(Some(SCOPE)))
        .min_items(Some(1))
        .description(Some("Scopes: `invoke:FN`, `publish:TOPIC`, `read`, `dlq`, `kv:NS:read`, `kv:NS:write`, `workflows:NAME`, `metrics`, `admin`; names may end in `*`. At least one."))
        .build()
}

/// `90d` → its milliseconds: a whole number (1 to 9 digits) of seconds, minutes, hours or days.
pub(crate) fn expires_in_ms(text: &str) -> Option<Millis> {
    let unit = match text.chars().last()? {
        's' => 1_000,
        'm' => 60_000,
        'h' => 3_600_000,
        'd' => 86_400_000,
        _ => return None,
    };
    let count = &text[..text.len() - 1];
    let valid = (1..=9).contains(&count.len()) && !count.starts_with('0') && count.bytes().all(|b| b.is_ascii_digit());
    valid.then(|| count.parse::<Millis>().ok()).flatten().map(|n| n * unit)
}

/// A page of keys.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct KeyPage {
    items: Vec<KeyView>,
    /// Always null: every key is on the one page.
    next_cursor: Option<String>,
}

/// Create an API key (admin). The secret is in this answer only.
#[utoipa::path(
    post,
    path = "/v1/keys",
    tag = "access",
    operation_id = "createApiKey",
    request_body(content = NewKey, content_type = "application/json"),
    responses(
        (status = 201, description = "Created: the key and its secret, shown this once.", body = CreatedKey),
        (status = 400, description = "A malformed body, an unknown scope, an empty name or a bad `expires_in`."),
        (status = 413, description = openapi::TOO_LARGE),
        (status = 503, description = openapi::UNAVAILABLE, headers(("Retry-After" = u64))),
    )
)]
pub(crate) async fn create_key(
    State(shared): State<Arc<Shared>>,
    actor: Actor,
    body: super::body::RequestBody,
) -> Result<Response, Problem> {
    let body = body.read()?;
    let new: NewKey = serde_json::from_slice(&body).map_err(|e| {
        Problem::bad_request(format!("the body must be {{\"name\", \"scopes\", \"expires_in\"?}}: {e}"))
    })?;
    let name = new.name.trim();
    if name.is_empty() || new.name.chars().count() > 200 {
        return Err(Problem::bad_request("`name` must be 1 to 200 characters"));
    }
    let scopes = new
        .scopes
        .iter()
        .map(|s| s.parse::<Scope>().map_err(|e| Problem::bad_request(e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    if scopes.is_empty() {
        return Err(Problem::bad_request("`scopes` must name at least one scope"));
    }
    let now = shared.clock.now_ms();
    let expires_at = match new.expires_in.as_deref() {
        None => None,
        Some(text) => {
            let ttl = expires_in_ms(text).ok_or_else(|| {
                Problem::bad_request(format!(
                    "`expires_in` must be a whole number of s, m, h or d, like \"90d\" (got {text:?})"
                ))
            })?;
            Some(now.saturating_add(ttl))
        }
    };
    let (key, secret) = auth::secret::new_api_key(name, scopes, expires_at, now);
    shared.store.create_api_key(key.clone()).await?;
    let detail = json!({ "name": key.name, "scopes": key.scopes, "expires_at": key.expires_at.map(rfc3339) });
    actor.record(&shared, "key.create", &key.id, detail).await;
    // Usable at once on this node, not only after the next refresh.
    if let Err(error) = shared.auth.refresh(shared.store.as_ref()).await {
        tracing::warn!(%error, "could not read the API keys again after creating one");
    }
    Ok((StatusCode::CREATED, Json(CreatedKey { key: key_view(&key), secret })).into_response())
}

/// Every API key (admin), revoked and expired ones too, oldest first.
#[utoipa::path(
    get,
    path = "/v1/keys",
    tag = "access",
    operation_id = "listApiKeys",
    responses(
        (status = 200, description = "Every key, without secrets.", body = KeyPage),
        (status = 503, description = openapi::UNAVAILABLE, headers(("Retry-After" = u64))),
    )
)]
pub(crate) async fn list_keys(State(shared): State<Arc<Shared>>) -> Result<Json<KeyPage>, Problem> {
    let keys = shared.store.api_keys().await?;
    Ok(Json(KeyPage { items: keys.iter().map(key_view).collect(), next_cursor: None }))
}

/// Revoke an API key (admin): every node refuses it within about a second.
#[utoipa::path(
    delete,
    path = "/v1/keys/{id}",
    tag = "access",
    operation_id = "revokeApiKey",
    params(("id" = String, Path, description = "The key's id (`key_…`).")),
    responses(
        (status = 200, description = "Revoked: the key as it is now.", body = KeyView),
        (status = 404, description = "No key with that id."),
        (status = 503, description = openapi::UNAVAILABLE, headers(("Retry-After" = u64))),
    )
)]
pub(crate) async fn revoke_key(
    State(shared): State<Arc<Shared>>,
    actor: Actor,
    Path(id): Path<String>,
) -> Result<Json<KeyView>, Problem> {
    let key = shared.store.revoke_api_key(&id, shared.clock.now_ms()).await?;
    actor.record(&shared, "key.revoke", &key.id, json!({ "name": key.name })).await;
    // Refused here at once, not only after the next refresh.
    if let Err(error) = shared.auth.refresh(shared.store.as_ref()).await {
        tracing::warn!(%error, "could not read the API keys again after a revocation");
    }
    Ok(Json(key_view(&key)))
}

/// The answer of a signing-key rotation.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Rotated {
    /// The new signing key's id (`sk_…`); tokens name it once every node has read it.
    id: String,
    created_at: String,
    /// When the keys it replaces stop verifying (after the longest function timeout).
    previous_expire_at: String,
}

/// Rotate the key that signs function tokens (admin). Tokens signed before keep working until
/// their attempts' deadlines; new ones are signed with the new key within a few seconds.
#[utoipa::path(
    post,
    path = "/v1/signing-keys/rotate",
    tag = "access",
    operation_id = "rotateSigningKey",
    responses(
        (status = 200, description = "Rotated.", body = Rotated),
        (status = 503, description = openapi::UNAVAILABLE, headers(("Retry-After" = u64))),
    )
)]
pub(crate) async fn rotate_signing_key(
    State(shared): State<Arc<Shared>>,
    actor: Actor,
) -> Result<Json<Rotated>, Problem> {
    let now = shared.clock.now_ms();
    let key = auth::secret::new_signing_key(now);
    let retire_at = shared.auth.retire_at(now);
    shared.store.add_signing_key(key.clone(), retire_at, false).await?;
    actor.record(&shared, "signing_key.rotate", &key.id, json!({ "previous_expire_at": rfc3339(retire_at) })).await;
    if let Err(error) = shared.auth.refresh(shared.store.as_ref()).await {
        tracing::warn!(%error, "could not read the signing keys again after a rotation");
    }
    Ok(Json(Rotated { id: key.id, created_at: rfc3339(now), previous_expire_at: rfc3339(retire_at) }))
}

/// One line of the audit log, as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct AuditView {
    id: String,
    /// RFC 3339.
    at: String,
    /// The key id that acted (`local` for the CLI on the store, `anonymous` with auth off).
    actor: String,
    /// `key.create`, `key.revoke`, `signing_key.rotate`, `function.pause`, `function.resume`,
    /// `dlq.redrive`, `dlq.discard`.
    action: String,
    target: String,
    request_id: Option<String>,
    #[schema(value_type = Object)]
    detail: serde_json::Value,
}

/// A page of the audit log.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct AuditPage {
    items: Vec<AuditView>,
    next_cursor: Option<String>,
}

fn audit_view(entry: AuditEntry) -> AuditView {
    AuditView {
        id: entry.id,
        at: rfc3339(entry.at),
        actor: entry.actor,
        action: entry.action,
        target: entry.target,
        request_id: entry.request_id,
        detail: entry.detail,
    }
}

/// The query of `GET /v1/audit`.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code, reason = "parameters for the OpenAPI document; the query is read by `audit`")]
pub(crate) struct AuditQuery {
    /// Only this action (`key.create`, …).
    action: Option<String>,
    /// Only this actor (a key id).
    actor: Option<String>,
    /// Page size: 1 to 1,000 (larger is clamped); 100 by default.
    #[param(value_type = Option<String>, pattern = "^[0-9]*[1-9][0-9]*$", example = "100")]
    limit: Option<u64>,
    /// The `next_cursor` of the previous page.
    #[param(pattern = "^[0-7][0-9A-HJKMNP-TV-Z]{25}$")]
    cursor: Option<String>,
}

/// The audit log (admin), newest first: who changed keys, paused, redrove, discarded.
#[utoipa::path(
    get,
    path = "/v1/audit",
    tag = "access",
    operation_id = "listAuditRecords",
    params(AuditQuery),
    responses(
        (status = 200, description = "A page of the audit log.", body = AuditPage),
        (status = 400, description = "An unknown query parameter, a limit below 1, or a malformed cursor."),
        (status = 503, description = openapi::UNAVAILABLE, headers(("Retry-After" = u64))),
    )
)]
pub(crate) async fn audit(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<AuditPage>, Problem> {
    let mut filter = AuditFilter::default();
    for (name, value) in query {
        match name.as_str() {
            "action" => filter.action = Some(value),
            "actor" => filter.actor = Some(value),
            "limit" => filter.limit = parse_limit(&value)?,
            "cursor" => filter.cursor = Some(parse_cursor(&value)?),
            other => {
                return Err(Problem::bad_request(format!(
                    "unknown query parameter {other:?} (expected action, actor, limit, cursor)"
                )))
            }
        }
    }
    let page = shared.store.audit_log(filter).await?;
    Ok(Json(AuditPage { items: page.items.into_iter().map(audit_view).collect(), next_cursor: page.next_cursor }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expires_in_is_a_whole_number_of_one_unit() {
        assert_eq!(expires_in_ms("90d"), Some(90 * 86_400_000));
        assert_eq!(expires_in_ms("36h"), Some(36 * 3_600_000));
        assert_eq!(expires_in_ms("1s"), Some(1_000));
        assert_eq!(expires_in_ms("999999999d"), Some(999_999_999 * 86_400_000));
        for bad in ["", "d", "0d", "01d", "1.5h", "1w", "1 d", "1000000000d", "-1d", "1ms"] {
            assert_eq!(expires_in_ms(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_need_names_the_scope_of_its_route() {
        assert_eq!(Guard::Kv.need(&Method::GET, Some("users")), Need::KvRead("users".into()));
        assert_eq!(Guard::Kv.need(&Method::DELETE, Some("users")), Need::KvWrite("users".into()));
        assert_eq!(Guard::Kv.scope_template(&Method::PUT, "/v1/kv/{ns}/{*key}").as_deref(), Some("kv:{ns}:write"));
        assert_eq!(Guard::Open.scope_template(&Method::GET, "/healthz"), None);
    }
}
