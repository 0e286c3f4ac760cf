//! `async-batch`: durable async invocations end to end through both halves of batching — bulk
//! admission (`POST …/invocations` with a batch of [`BATCH_SIZE`] payloads, one transaction each)
//! and batch delivery (the function `noopbatch`, `batch = { max_size = 100, max_wait = "5ms" }`,
//! the same no-op function counting each item as a call). Timed from the first admission to the
//! last item at the function, then the API is asked that nothing is left behind, as for `async`.

use std::time::Instant;

use bytes::Bytes;
use http::{Method, StatusCode};

use super::load::{self, PAYLOAD};
use super::noop::NoopFunction;
use super::report::{Case, Scenario};
use super::server::BenchServer;
use super::throughput::{confirm_settled_of, wait_for_calls, CpuMeter, Direct};
use super::{BenchError, Settings};

/// The batch function of the bench's server.
pub(crate) const FUNCTION: &str = "noopbatch";
/// Payloads per bulk admission, and the function's `batch.max_size`.
pub(crate) const BATCH_SIZE: u64 = 100;
/// The function's `concurrency`: batch requests in flight.
pub(crate) const BATCH_REQUESTS: usize = 32;
/// Invocations per `--requests`: a batch run is that many times larger than `async`'s, so that
/// it lasts about as long.
const ITEMS_PER_REQUEST: u64 = 5;

/// The `[functions.noopbatch]` table of the bench's server.
pub(crate) fn config(noop_url: &str) -> String {
    format!(
        "[functions.{FUNCTION}]\nurl = \"{noop_url}\"\nconcurrency = {BATCH_REQUESTS}\n\
         batch = {{ max_size = {BATCH_SIZE}, max_wait = \"5ms\" }}\n\n"
    )
}

/// A bulk admission's body: `n` copies of the bench's payload.
fn bulk_body(n: u64) -> Bytes {
    let payload = std::str::from_utf8(PAYLOAD).expect("the payload is JSON text");
    Bytes::from(format!("[{}]", vec![payload; n as usize].join(",")))
}

pub(crate) async fn run(
    settings: &Settings,
    direct: &Direct,
    noop: &NoopFunction,
    base: &str,
    server: Option<&BenchServer>,
) -> Result<Scenario, BenchError> {
    let keel = settings.client(base)?;
    let path = format!("/v1/functions/{FUNCTION}/invocations");
    let headers = [(http::header::CONTENT_TYPE, keel_core::batch::CONTENT_TYPE.to_owned())];
    let initial = noop.calls();
    let probe = keel.send(Method::POST, &path, &headers, bulk_body(1)).await?;
    if probe.status != StatusCode::ACCEPTED {
        return Ok(Scenario::skipped(
            "async-batch",
            format!("this server has no batch function {FUNCTION} taking bulk admissions (answered {})", probe.status),
        ));
    }
    let hidden = indicatif::ProgressBar::hidden();
    wait_for_calls(noop, initial + 1, &hidden, initial).await?;
    let admissions = (settings.requests * ITEMS_PER_REQUEST / BATCH_SIZE).max(1);
    let items = admissions * BATCH_SIZE;
    let clients = (settings.concurrency / 4).max(1);
    let target = settings
        .target(&format!("{base}{path}"), StatusCode::ACCEPTED)?
        .with_body(bulk_body(BATCH_SIZE), keel_core::batch::CONTENT_TYPE);
    let (from, batches_from) = (noop.calls(), noop.batches());
    let cpu = CpuMeter::start(server);
    let start = Instant::now();
    let submit = tokio::spawn(async move {
        load::closed_loop(&target, admissions, clients, &indicatif::ProgressBar::hidden()).await
    });
    let progress = settings.progress(&format!("async-batch x{BATCH_SIZE} c={clients}"), items);
    let done = wait_for_calls(noop, from + items, &progress, from).await?;
    let submitted = submit.await.map_err(|e| BenchError::Server(e.to_string()))??;
    let per_s = items as f64 / (done - start).as_secs_f64();
    let batches = noop.batches() - batches_from;
    let case = Case::new(format!("x{BATCH_SIZE} c={clients}"), Some(per_s / direct.many.per_second()))
        .with("per_s", per_s)
        .with("admissions_per_s", submitted.per_second())
        .with("admission_p50_ms", submitted.percentile_ms(50.0))
        .with("admission_p99_ms", submitted.percentile_ms(99.0))
        .with("items_per_batch", items as f64 / batches.max(1) as f64);
    let case = cpu.finish(case, items);
    confirm_settled_of(&keel, FUNCTION, true).await?;
    Ok(Scenario { name: "async-batch", cases: vec![case], skipped: None })
}
