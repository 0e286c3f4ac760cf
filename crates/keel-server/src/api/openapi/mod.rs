//! The OpenAPI 3.1 document of the API, served at `GET /v1/openapi.json` and, the same document,
//! at `GET /v1/openapi.yaml` ([`yaml`]). Each handler carries its own `#[utoipa::path]` (with an
//! `operation_id` that generated clients name their methods after); this file assembles them,
//! and says once for all of them that an error answer is an RFC 9457 problem ([`ProblemBodies`]).
//! `docs/openapi.json` and `docs/openapi.yaml` are copies that a test keeps current.

mod yaml;

use std::sync::LazyLock;

use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use utoipa::openapi::{Content, Ref, RefOr};
use utoipa::{Modify, OpenApi};

use super::{
    access, chaos, cluster, dependencies, dlq, egress, events, functions, health, invocations, invoke, kv, metrics,
    schedules, workflows,
};
use crate::problem::ProblemDetails;

/// The descriptions that several routes share.
pub(super) const BAD_KEY: &str = "The Idempotency-Key header is malformed.";
pub(super) const KEY_IN_USE: &str =
    "A request with this Idempotency-Key is still in progress (`idempotency-key-in-use`); retry after Retry-After.";
pub(super) const KEY_REUSED: &str =
    "This Idempotency-Key was used with a different request: another method, route or body (`idempotency-key-reused`).";
pub(super) const TOO_LARGE: &str = "The request body is larger than `server.body_limit`.";
pub(super) const UNAVAILABLE: &str = "The store is unavailable (`store-unavailable`); retry after Retry-After.";
pub(super) const UNAVAILABLE_OR_DRAINING: &str =
    "This node is draining (`draining`: retry on another node) or the store is unavailable; retry after Retry-After.";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Keel HTTP API",
        description = "Invoke functions (sync and async) with retries, the dead-letter queue, events, KV and egress to dependencies. \
            Errors are RFC 9457 `application/problem+json`; times are RFC 3339 UTC; lists take `limit` and \
            `cursor` and answer `{\"items\": [...], \"next_cursor\": ...}`."
    ),
    paths(
        functions::list,
        functions::get,
        functions::pause,
        functions::resume,
        schedules::list,
        schedules::get,
        schedules::pause,
        schedules::resume,
        workflows::list_workflows,
        workflows::start,
        workflows::list_runs,
        workflows::get_run,
        workflows::cancel,
        chaos::inject,
        chaos::list,
        chaos::clear,
        invoke::invoke_sync,
        invoke::invoke_async,
        invocations::list,
        invocations::get,
        invocations::result,
        invocations::cancel,
        dlq::list,
        dlq::redrive_matching,
        dlq::redrive,
        dlq::discard,
        cluster::get,
        cluster::region,
        cluster::receive_events,
        dependencies::list,
        dependencies::get,
        egress::get,
        egress::post,
        egress::put,
        egress::delete,
        egress::patch,
        egress::options,
        events::publish,
        events::get,
        kv::list,
        kv::get,
        kv::put,
        kv::delete,
        document,
        document_yaml,
        health::healthz,
        health::readyz,
        metrics::metrics,
        access::create_key,
        access::list_keys,
        access::revoke_key,
        access::rotate_signing_key,
        access::audit,
    ),
    components(schemas(ProblemDetails)),
    modifiers(&RequestLimits, &Regions, &ProblemBodies, &Security, &BulkAdmission),
    tags(
        (name = "invoke", description = "Run a function: wait for its answer, or queue it."),
        (name = "invocations", description = "Invocations: list, read, their results, cancel."),
        (name = "dlq", description = "The dead-letter queue: invocations that failed for good."),
        (name = "events", description = "Publish events to topics; read an event and its deliveries."),
        (name = "kv", description = "The key-value store, with versions as ETags; a namespace's keys listed by prefix."),
        (name = "functions", description = "Configured functions and dependencies and their live state; the cluster."),
        (name = "schedules", description = "Schedules (cron or every): next and last fire; pause and resume."),
        (name = "workflows", description = "Workflows (sagas): start runs, follow their steps, cancel (compensate)."),
        (name = "chaos", description = "Chaos faults: inject latency, errors, resets, timeouts and crashes; list and clear them (admin; `[chaos] enabled`)."),
        (name = "egress", description = "Calls from functions to their dependencies, through Keel's breaker, limits and retries."),
        (name = "operations", description = "Health, readiness, metrics, this document."),
        (name = "access", description = "API keys, the key that signs function tokens, and the audit log (admin)."),
    )
)]
struct ApiDoc;

/// `[server.limits]` on every route: 414 and 431 for a request head past its limits, and on
/// each route that takes an Idempotency-Key, 429 for a caller past its new records a minute.
struct RequestLimits;

const TOO_MANY_KEYS: &str = "This caller made `server.limits.idempotency_keys_per_minute` new Idempotency-Key records \
    in the last minute (`too-many-idempotency-keys`): nothing was done; retry after Retry-After (a replay is still \
    answered).";

impl Modify for RequestLimits {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::header::HeaderBuilder;
        use utoipa::openapi::{ObjectBuilder, ResponseBuilder, Type};
        let answers = [
            ("414", "The request target is longer than `server.limits.max_url_bytes` (`uri-too-long`)."),
            (
                "431",
                "The request has more header lines than `server.limits.max_headers`, or they take more bytes than \
                 `server.limits.max_header_bytes` (`request-header-fields-too-large`).",
            ),
        ];
        let retry_after = HeaderBuilder::new().schema(ObjectBuilder::new().schema_type(Type::Integer)).build();
        for item in doc.paths.paths.values_mut() {
            let operations =
                [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch, &mut item.options];
            for operation in operations.into_iter().flatten() {
                for (status, description) in answers {
                    let response = ResponseBuilder::new().description(description).build();
                    operation.responses.responses.entry(status.to_owned()).or_insert(response.into());
                }
                let keyed = operation.parameters.iter().flatten().any(|p| p.name == "Idempotency-Key");
                if !keyed {
                    continue;
                }
                match operation.responses.responses.get_mut("429") {
                    Some(RefOr::T(response)) => {
                        response.description = format!("{} Or: {TOO_MANY_KEYS}", response.description);
                    }
                    _ => {
                        let response = ResponseBuilder::new()
                            .description(TOO_MANY_KEYS)
                            .header("Retry-After", retry_after.clone())
                            .build();
                        operation.responses.responses.insert("429".to_owned(), response.into());
                    }
                }
            }
        }
    }
}

/// Regions: a node of a standby region, or of an old primary fenced by a newer epoch, refuses
/// every request that could write with a 503 naming the primary.
struct Regions;

const NOT_ADMITTING: &str = "This node's region does not admit now (`standby`: a replica serving reads until \
    promoted; `fenced`: a newer epoch made another region primary): nothing was done. `primary_region` and \
    `primary_url` name where writes go.";

const REGION_UNREACHABLE: &str = "Active-active: the namespace's home region (`[kv.NS] home`) could not be reached \
    (`region-unreachable`, naming it in `region`); retry after Retry-After.";

impl Modify for Regions {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::header::HeaderBuilder;
        use utoipa::openapi::{ObjectBuilder, Type};
        let served_by = HeaderBuilder::new()
            .schema(ObjectBuilder::new().schema_type(Type::String))
            .description(Some("With `[region]`: the region that served the call (a namespace's home serves it)."))
            .build();
        for (_, item) in doc.paths.paths.iter_mut().filter(|(path, _)| path.starts_with("/v1/kv/")) {
            let operations = [&mut item.get, &mut item.put, &mut item.delete];
            for operation in operations.into_iter().flatten() {
                let responses = &mut operation.responses.responses;
                also_503(responses, REGION_UNREACHABLE);
                for response in responses.values_mut() {
                    if let RefOr::T(response) = response {
                        response.headers.insert("keel-region".to_owned(), served_by.clone());
                    }
                }
            }
        }
        for item in doc.paths.paths.values_mut() {
            let writes = [&mut item.put, &mut item.post, &mut item.delete, &mut item.patch];
            for operation in writes.into_iter().flatten() {
                also_503(&mut operation.responses.responses, NOT_ADMITTING);
            }
        }
    }
}

/// Adds `text` to an operation's 503 answer: after its description, or as a new 503.
fn also_503(responses: &mut std::collections::BTreeMap<String, RefOr<utoipa::openapi::Response>>, text: &str) {
    match responses.get_mut("503") {
        Some(RefOr::T(response)) => response.description = format!("{} {text}", response.description),
        Some(RefOr::Ref(_)) => {}
        None => {
            let response = utoipa::openapi::ResponseBuilder::new().description(text).build();
            responses.insert("503".to_owned(), response.into());
        }
    }
}

/// Every error answer is a problem: each documented 4xx/5xx response that names no body of its
/// own gets the problem schema as `application/problem+json`.
struct ProblemBodies;

impl Modify for ProblemBodies {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let problem = Content::new(Some(Ref::from_schema_name("ProblemDetails")));
        for item in doc.paths.paths.values_mut() {
            let operations =
                [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch, &mut item.options];
            for operation in operations.into_iter().flatten() {
                for (status, response) in &mut operation.responses.responses {
                    let is_error = status.parse::<u16>().is_ok_and(|status| status >= 400);
                    if let (true, RefOr::T(response)) = (is_error, response) {
                        if response.content.is_empty() {
                            response.content.insert("application/problem+json".into(), problem.clone());
                        }
                    }
                }
            }
        }
    }
}

/// Access control: the bearer scheme (an API key `keel_sk_…`, or a function's token), and on
/// each route the scope it needs (from the route table, so the document cannot disagree with the
/// router) with its 401 and 403 answers. `/healthz` and `/readyz` need nothing. With
/// `[auth] mode = "none"` (loopback only) nothing is checked.
struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
        use utoipa::openapi::ResponseBuilder;
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some(
                "An API key (`keel_sk_…`, from `keel keys create`) or a function's token (`keel_ft_…`, given to each \
                 attempt). Each route names the scope it needs; `admin` holds them all, names may end in `*`.",
            ))
            .build();
        doc.components.get_or_insert_with(Default::default).add_security_scheme("bearer", SecurityScheme::Http(scheme));
        for (method, path, scope) in super::route_scopes() {
            let Some(item) = doc.paths.paths.get_mut(&path.replace("{*", "{")) else { continue };
            let operation = match method.as_str() {
                "GET" => &mut item.get,
                "POST" => &mut item.post,
                "PUT" => &mut item.put,
                "DELETE" => &mut item.delete,
                "PATCH" => &mut item.patch,
                "OPTIONS" => &mut item.options,
                _ => continue,
            };
            let Some(operation) = operation else { continue };
            let Some(scope) = scope else {
                operation.security = Some(vec![SecurityRequirement::default()]);
                continue;
            };
            operation.security = Some(vec![SecurityRequirement::new("bearer", [scope.clone()])]);
            let answers = [
                ("401", "No API key or token, or one that is unknown, malformed, revoked or expired (`unauthorized`, with `WWW-Authenticate: Bearer`).".to_owned()),
                ("403", format!("The key or token does not hold the scope `{scope}` (`forbidden`, naming `scope_needed`).")),
            ];
            for (status, description) in answers {
                operation.responses.responses.entry(status.to_owned()).or_insert_with(|| {
                    let problem = Content::new(Some(Ref::from_schema_name("ProblemDetails")));
                    ResponseBuilder::new().description(description).content("application/problem+json", problem).into()
                });
            }
        }
    }
}

/// A bulk admission's body: an array of 1 to [`keel_core::batch::MAX_BULK_ITEMS`] payloads of
/// any JSON. Written here because the handler's annotation cannot bound an array's length, and
/// the body stays optional (an async invoke may carry an empty payload).
struct BulkAdmission;

impl Modify for BulkAdmission {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, SchemaType};
        let operation = doc.paths.paths.get_mut("/v1/functions/{name}/invocations").and_then(|item| item.post.as_mut());
        let body = operation.and_then(|operation| operation.request_body.as_mut());
        let Some(content) = body.and_then(|body| body.content.get_mut(keel_core::batch::CONTENT_TYPE)) else { return };
        let payloads = ArrayBuilder::new()
            .items(
                ObjectBuilder::new().schema_type(SchemaType::AnyValue).description(Some("A payload: any JSON value.")),
            )
            .min_items(Some(1))
            .max_items(Some(keel_core::batch::MAX_BULK_ITEMS))
            .build();
        content.schema = Some(RefOr::T(Schema::Array(payloads)));
    }
}

/// The document, built once.
static DOCUMENT: LazyLock<String> =
    LazyLock::new(|| ApiDoc::openapi().to_json().expect("the OpenAPI document serializes"));

/// The same document as YAML, built once.
static DOCUMENT_YAML: LazyLock<String> = LazyLock::new(|| {
    let value = serde_json::to_value(ApiDoc::openapi()).expect("the OpenAPI document serializes");
    yaml::to_yaml(&value)
});

/// This document: the OpenAPI 3.1 description of every route.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "operations",
    operation_id = "getOpenApiJson",
    responses(
        (status = 200, description = "The OpenAPI 3.1 document.", body = Object, content_type = "application/json"),
    )
)]
pub(crate) async fn document() -> impl IntoResponse {
    ([(CONTENT_TYPE, "application/json")], DOCUMENT.as_str())
}

/// This document as YAML: the same value as `/v1/openapi.json`, its keys in sorted order.
#[utoipa::path(
    get,
    path = "/v1/openapi.yaml",
    tag = "operations",
    operation_id = "getOpenApiYaml",
    responses(
        (status = 200, description = "The OpenAPI 3.1 document, as YAML.", body = Object, content_type = "application/yaml"),
    )
)]
pub(crate) async fn document_yaml() -> impl IntoResponse {
    ([(CONTENT_TYPE, "application/yaml")], DOCUMENT_YAML.as_str())
}
