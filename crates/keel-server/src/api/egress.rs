//! `ANY /v1/egress/{dependency}/{path}`: a function's call to one of its dependencies, through
//! Keel (`crate::egress`). One documented operation per method, all the same handler.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::Extension;

use super::body::RequestBody;
use crate::auth::Principal;
use crate::egress::EgressRequest;
use crate::state::Shared;

async fn forward(
    shared: Arc<Shared>,
    principal: Option<Principal>,
    dependency: String,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: RequestBody,
) -> Response {
    let body = match body.read() {
        Ok(body) => body,
        Err(problem) => return problem.into_response(),
    };
    // The rest of the path as sent, still percent-encoded: forwarded byte for byte.
    let raw = uri.path().strip_prefix("/v1/egress/").and_then(|rest| rest.split_once('/')).map_or("", |(_, rest)| rest);
    let request = EgressRequest {
        dependency,
        method,
        path: format!("/{raw}"),
        query: uri.query().map(str::to_owned),
        headers,
        body,
        // A function's token names its caller on any node; an API key (or no auth) does not.
        token: match principal {
            Some(Principal::Function(claims)) => Some(claims),
            Some(Principal::Anonymous | Principal::Local | Principal::Key(_)) | None => None,
        },
    };
    crate::egress::forward(&shared, request).await
}

/// The request body of the egress routes that take one (POST, PUT, PATCH).
const FORWARDED: &str = "Forwarded to the dependency as it is, with its content-type.";

macro_rules! egress_operation {
    ($name:ident, $method:ident, $operation_id:literal, $summary:literal $(, $($request_body:tt)+)?) => {
        #[doc = $summary]
        ///
        /// Method, path (under the dependency's `url`), query, headers (but hop-by-hop ones and
        /// Keel's own `keel-*`) and body are forwarded; the dependency's answer comes back as it
        /// is. Only an attempt of a function that declares the dependency may call it: with auth
        /// on it sends its function token (`authorization: Bearer`, accepted on any node, never
        /// forwarded), without auth its `keel-invocation-id` (of an attempt running on this
        /// node); anyone else gets 403 and learns nothing more. Keel adds
        /// the dependency's configured headers and `idempotency-key: {invocation_id}/{dependency}/{n}`
        /// unless the request has one. GET, HEAD, PUT, DELETE, OPTIONS and requests with an
        /// Idempotency-Key are retried on a connection failure, a 5xx, 429 or 408, within the
        /// dependency's timeout and retry budget.
        #[utoipa::path(
            $method,
            path = "/v1/egress/{dependency}/{path}",
            tag = "egress",
            operation_id = $operation_id,
            $($($request_body)+,)?
            params(
                ("dependency" = String, Path, description = "A configured dependency the calling function declares."),
                ("path" = String, Path, description = "The path under the dependency's url."),
                ("keel-invocation-id" = String, Header, description = "Without a function token: the invocation whose attempt makes this call, running on this node."),
            ),
            responses(
                (status = "2XX", description = "The dependency's answer, as it gave it.", content(("*/*"))),
                (status = 403, description = "The caller is not an attempt of a function that declares this dependency (`forbidden`)."),
                (status = 413, description = super::openapi::TOO_LARGE),
                (status = 429, description = "The dependency's rate limit has no turn now (`rate-limited`); retry after Retry-After. Also the dependency's own 429, passed through.", headers(("Retry-After" = u64))),
                (status = 502, description = "The dependency could not be reached (`dependency-unreachable`), or its own 502."),
                (status = 503, description = "The dependency's breaker is open (`breaker-open`, with `keel-breaker: open`) or its bulkhead is full (`bulkhead-full`); retry after Retry-After. Or its own 503.", headers(("Retry-After" = u64))),
                (status = 504, description = "The dependency did not answer within its timeout (`dependency-timeout`), or its own 504."),
                (status = "default", description = "The dependency's answer, as it gave it.", content(("*/*"))),
            )
        )]
        pub(crate) async fn $name(
            State(shared): State<Arc<Shared>>,
            principal: Option<Extension<Principal>>,
            Path((dependency, _path)): Path<(String, String)>,
            method: Method,
            uri: Uri,
            headers: HeaderMap,
            body: RequestBody,
        ) -> Response {
            forward(shared, principal.map(|Extension(p)| p), dependency, method, uri, headers, body).await
        }
    };
}

egress_operation!(get, get, "egressGet", "Call a dependency with GET (HEAD too).");
egress_operation!(
    post,
    post,
    "egressPost",
    "Call a dependency with POST.",
    request_body(description = FORWARDED, content(("*/*")))
);
egress_operation!(
    put,
    put,
    "egressPut",
    "Call a dependency with PUT.",
    request_body(description = FORWARDED, content(("*/*")))
);
egress_operation!(delete, delete, "egressDelete", "Call a dependency with DELETE.");
egress_operation!(
    patch,
    patch,
    "egressPatch",
    "Call a dependency with PATCH.",
    request_body(description = FORWARDED, content(("*/*")))
);
egress_operation!(options, options, "egressOptions", "Call a dependency with OPTIONS.");
