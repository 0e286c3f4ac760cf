//! `[server.limits]` at the API: a request's target and headers checked before anything else
//! (414, 431). The JSON nesting and idempotency-key checks are [`crate::limits::RequestLimits`].

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use keel_core::limits::HeadTooLarge;

use crate::limits::RequestLimits;
use crate::problem::Problem;

/// The request's target and headers against the limits: 414 or 431, before any other work.
/// hyper already refused heads far past them (its read buffer is sized from these limits).
pub(crate) async fn head(State(limits): State<Arc<RequestLimits>>, request: Request, next: Next) -> Response {
    let url_bytes = request.uri().path_and_query().map_or(0, |p| p.as_str().len());
    let headers = request.headers().iter().map(|(name, value)| (name.as_str().len(), value.len()));
    match limits.config.check_head(url_bytes, headers) {
        Ok(()) => next.run(request).await,
        Err(refused) => {
            let (status, kind, title) = match refused {
                HeadTooLarge::Url { .. } => (StatusCode::URI_TOO_LONG, "uri-too-long", "URI too long"),
                HeadTooLarge::TooManyHeaders { .. } | HeadTooLarge::HeaderBytes { .. } => (
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    "request-header-fields-too-large",
                    "Request header fields too large",
                ),
            };
            Problem::new(status, kind, title, refused.to_string()).closing().into_response()
        }
    }
}
