//! The dead-letter queue: inspect, redrive (one or in bulk), discard.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::Json;
use keel_core::invocation::Status;
use keel_core::store::{ListFilter, MAX_LIMIT};
use serde_json::json;

use super::access::Actor;
use super::body::{self, list_filter, PageQuery};
use super::idempotency::IdempotencyKeyHeader;
use super::openapi;
use super::view;
use crate::problem::Problem;
use crate::state::Shared;

/// Dead invocations: those that failed for good, newest first.
#[utoipa::path(
    get,
    path = "/v1/dlq",
    tag = "dlq",
    operation_id = "listDlq",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of dead invocations (without attempts and results).",
            body = view::InvocationPage),
        (status = 400, description = "An unknown query parameter, a limit below 1, or a malformed cursor."),
        (status = 503, description = openapi::UNAVAILABLE, headers(("Retry-After" = u64))),
    )
)]
pub(crate) async fn list(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<view::InvocationPage>, Problem> {
    let mut filter = list_filter(&query, &["function", "subscription", "limit", "cursor"])?;
    filter.status = Some(Status::Dead);
    let page = shared.store.list(filter).await?;
    Ok(Json(view::page(&page.items, page.next_cursor)))
}

/// Redrive one dead invocation: back to `queued`, same id, history kept, `redrives` counted.
///
/// A dead workflow step is not redriven (its run compensated the steps before it); a dead
/// compensation is, and its run resumes compensating.
#[utoipa::path(
    post,
    path = "/v1/dlq/{id}/redrive",
    tag = "dlq",
    operation_id = "redriveDlq",
    params(("id" = String, Path, description = "The dead invocation."), IdempotencyKeyHeader),
    responses(
        (status = 200, description = "Requeued: the invocation (without attempts and result).",
            body = view::Invocation,
            headers(("idempotent-replayed" = String, description = "`true` on a replayed answer."))),
        (status = 400, description = openapi::BAD_KEY),
        (status = 404, description = "No invocation with that id."),
        (status = 409, description = "The invocation is not dead, or is a dead workflow step (`invalid-state`), \
            or a request with this Idempotency-Key is still in progress (`idempotency-key-in-use`, with Retry-After).",
            headers(("Retry-After" = u64, description = "On `idempotency-key-in-use`: seconds to wait."))),
        (status = 413, description = openapi::TOO_LARGE),
        (status = 422, description = openapi::KEY_REUSED),
        (status = 503, description = openapi::UNAVAILABLE, headers(("Retry-After" = u64))),
    )
)]
pub(crate) async fn redrive(
    State(shared): State<Arc<Shared>>,
    actor: Actor,
    Path(id): Path<String>,
) -> Result<Json<view::Invocation>, Problem> {
    let inv = shared.store.redrive(&id, shared.clock.now_ms()).await?;
    shared.functions.wake(&inv.function);
    actor.record(&shared, "dlq.redrive", &inv.id, json!({ "function": inv.function })).await;
    Ok(Json(view::invocation(&inv, false)))
}

/// The body of a bulk redrive: which dead invocations to requeue (all when empty).
#[derive(Debug, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RedriveFilter {
    /// Only invocations of this function (`null` is the same as absent).
    function: Option<String>,
    /// Only deliveries to this subscription (`null` is the same as absent).
    subscription: Option<String>,
    /// At most this many (at least 1; any larger number means every match); every match when
    /// absent.
    #[schema(schema_with = whole_number_from_one)]
    #[serde(default, deserialize_with = "saturating_count")]
    limit: Option<usize>,
}

/// `limit`'s schema: an integer of at least 1 or null, with no upper bound (no `int64` format either:
/// any larger number is taken).
fn whole_number_from_one() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Integer, Type::Null]))
        .minimum(Some(1))
        .description(Some(
            "At most this many (at least 1; any larger number means every match); every match when absent or null.",
        ))
        .build()
}

/// A whole number, however large (saturating at `usize::MAX`), written as an integer or as an
/// integral float (`27081.0`): a `limit` past the number of dead invocations means all of them.
/// Negative and fractional numbers are refused.
fn saturating_count<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<usize>, D::Error> {
    use serde::Deserialize;
    let number = Option::<serde_json::Number>::deserialize(deserializer)?;
    number
        .map(|n| match (n.as_u64(), n.as_f64()) {
            (Some(n), _) => Ok(usize::try_from(n).unwrap_or(usize::MAX)),
            // JSON Schema counts 27081.0 as an integer too; `as` saturates past usize::MAX.
            (None, Some(f)) if f >= 0.0 && f.fract() == 0.0 => Ok(f as usize),
            _ => Err(serde::de::Error::custom(format!("limit must be a whole number of at least 1 (got {n})"))),
        })
        .transpose()
}

/// Redrive dead invocations in bulk: every match of the filter, or `limit` of them.
///
/// Dead workflow steps are left dead (their runs compensated the steps before them).
#[utoipa::path(
    post,
    path = "/v1/dlq/redrive",
    tag = "dlq",
    operation_id = "redriveDlqMatching",
    params(IdempotencyKeyHeader),
    request_body(content = RedriveFilter, description = "The filter (required); `{}` redrives every dead invocation."),
    responses(
        (status = 200, description = "How many were requeued.", body = Redriven,
            headers(("idempotent-replayed" = String, description = "`true` on a replayed answer."))),
        (status = 400,
            description = "The body is absent or not a filter object, `limit` is 0, or the Idempotency-Key is \
            malformed."),
        (status = 409, description = openapi::KEY_IN_USE, headers(("Retry-After" = u64))),
        (status = 413, description = openapi::TOO_LARGE),
        (status = 422, description = openapi::KEY_REUSED),
        (status = 503, description = openapi::UNAVAILABLE, headers(("Retry-After" = u64))),
    )
)]
pub(crate) async fn redrive_matching(
    State(shared): State<Arc<Shared>>,
    actor: Actor,
    body: body::RequestBody,
) -> Result<Json<Redriven>, Problem> {
    let body = body.read()?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(Problem::bad_request(
            "the body must be a filter like {\"function\": \"charge\", \"limit\": 100}; send {} to redrive every dead \
             invocation",
        ));
    }
    let filter: RedriveFilter = serde_json::from_slice(&body).map_err(|e| {
        Problem::bad_request(format!(
            "the body must be a JSON object like {{\"function\": \"charge\", \"limit\": 100}}: {e}"
        ))
    })?;
    if filter.limit == Some(0) {
        return Err(Problem::bad_request("limit must be at least 1"));
    }
    let mut left = filter.limit.unwrap_or(usize::MAX);
    let mut redriven = 0;
    // Batches go down the ids, each below the last one redriven: an invocation redriven by this
    // request that dies again meanwhile is dead once more, but is not redriven a second time.
    let mut below = None;
    while left > 0 {
        let asked = left.min(MAX_LIMIT);
        let batch = ListFilter {
            function: filter.function.clone(),
            subscription: filter.subscription.clone(),
            limit: asked,
            cursor: below.take(),
            ..Default::default()
        };
        let done = shared.store.redrive_matching(batch, shared.clock.now_ms()).await?;
        for inv in &done {
            shared.functions.wake(&inv.function);
        }
        redriven += done.len();
        left -= done.len();
        if done.len() < asked {
            break;
        }
        below = done.last().map(|inv| inv.id.clone());
    }
    let detail = json!({ "function": filter.function, "subscription": filter.subscription, "limit": filter.limit, "redriven": redriven });
    actor.record(&shared, "dlq.redrive", "*", detail).await;
    Ok(Json(Redriven { redriven }))
}

/// Discard one dead invocation: status `discarded`.
#[utoipa::path(
    delete,
    path = "/v1/dlq/{id}",
    tag = "dlq",
    operation_id = "discardDlq",
    params(("id" = String, Path, description = "The dead invocation.")),
    responses(
        (status = 200, description = "Discarded: the invocation (without attempts and result).",
            body = view::Invocation),
        (status = 404, description = "No invocation with that id."),
        (status = 409, description = "The invocation is not dead (`invalid-state`)."),
        (status = 503, description = openapi::UNAVAILABLE, headers(("Retry-After" = u64))),
    )
)]
pub(crate) async fn discard(
    State(shared): State<Arc<Shared>>,
    actor: Actor,
    Path(id): Path<String>,
) -> Result<Json<view::Invocation>, Problem> {
    let inv = shared.store.discard(&id, shared.clock.now_ms()).await?;
    actor.record(&shared, "dlq.discard", &inv.id, json!({ "function": inv.function })).await;
    Ok(Json(view::invocation(&inv, false)))
}

/// The answer of a bulk redrive.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct Redriven {
    /// How many dead invocations were requeued.
    redriven: usize,
}
