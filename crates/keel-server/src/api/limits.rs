//! `[server.limits]` at the API: a request's target and headers checked before anything else
//! (414, 431). The JSON nesting and idempotency-key checks are [`crate::limits::RequestLimits`].

use axum::extract::Request;
use axum::http::StatusCode;
use keel_core::limits::HeadTooLarge;

use crate::limits::RequestLimits;
use crate::problem::Problem;

/// The request's target and headers against the limits: 414 or 431, before any other work.
/// hyper already refused heads far past them (its read buffer is sized from these limits).
pub(crate) fn check_head(limits: &RequestLimits, request: &Request) -> Result<(), Problem> {
    let url_bytes = request.uri().path_and_query().map_or(0, |p| p.as_str().len());
    let headers = request.headers().iter().map(|(name, value)| (name.as_str().len(), value.len()));
    match limits.config.check_head(url_bytes, headers) {
        Ok(()) => Ok(()),
        Err(refused) => {
            let (status, kind, title) = match refused {
                HeadTooLarge::Url { .. } => (StatusCode::URI_TOO_LONG, "uri-too-long", "URI too long"),
                HeadTooLarge::TooManyHeaders { .. } | HeadTooLarge::HeaderBytes { .. } => (
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    "request-header-fields-too-large",
                    "Request header fields too large",
                ),
            };
            Err(Problem::new(status, kind, title, refused.to_string()).closing())
        }
    }
}
