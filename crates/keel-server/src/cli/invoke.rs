//! `keel invoke`: a sync invocation that prints the function's answer, or an async one that
//! prints the queued invocation's id.

use std::io::Write;
use std::process::ExitCode;

use http::header::CONTENT_TYPE;
use http::{HeaderName, Method};
use serde_json::Value;

use super::client::{encode, idempotency_header, print_json, KeelClient, Response};
use super::{payload, InvokeArgs};

pub(crate) const DELAY: HeaderName = HeaderName::from_static("keel-delay");

pub(crate) async fn run(client: &KeelClient, json: bool, args: InvokeArgs) -> anyhow::Result<ExitCode> {
    let payload = payload::read(args.data.as_deref())?;
    let mut headers = vec![(CONTENT_TYPE, args.content_type.clone())];
    headers.extend(args.idempotency_key.as_deref().map(idempotency_header));
    let name = encode(&args.name);
    if !args.asynchronous {
        let path = format!("/v1/functions/{name}/invoke");
        let response = client.send(Method::POST, &path, &headers, payload).await?;
        return print_sync(&response, json);
    }
    if let Some(delay) = args.delay {
        headers.push((DELAY, delay.header_value()));
    }
    let path = format!("/v1/functions/{name}/invocations");
    let answer = client.send(Method::POST, &path, &headers, payload).await?.into_json()?;
    if json {
        print_json(&answer);
    } else {
        println!("{}", answer.get("id").and_then(Value::as_str).unwrap_or_default());
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints a sync invocation's answer: the function's body on stdout (Keel's own problem as an
/// `error:` line instead), and in human mode a summary line on stderr. Fails unless 2xx.
fn print_sync(response: &Response, json: bool) -> anyhow::Result<ExitCode> {
    if !json {
        if let Some(summary) = summary_line(response) {
            eprintln!("{summary}");
        }
    }
    if !response.status.is_success() && response.is_problem() && !json {
        eprintln!("error: {}", response.problem());
        return Ok(ExitCode::FAILURE);
    }
    match serde_json::from_slice::<Value>(&response.body) {
        Ok(value) if json => print_json(&value),
        _ => {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(&response.body)?;
            if !response.body.ends_with(b"\n") && !response.body.is_empty() {
                stdout.write_all(b"\n")?;
            }
        }
    }
    Ok(if response.status.is_success() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// `invocation 01J… · 2 attempts · HTTP 200` (`· replayed` for a stored answer to the same
/// idempotency key), when Keel named the invocation.
fn summary_line(response: &Response) -> Option<String> {
    let id = response.header("keel-invocation-id")?;
    let attempts = match response.header("keel-attempts") {
        Some("1") => "1 attempt".to_owned(),
        Some(n) => format!("{n} attempts"),
        None => "? attempts".to_owned(),
    };
    let replayed = if response.header("idempotent-replayed") == Some("true") { " · replayed" } else { "" };
    Some(format!("invocation {id} · {attempts} · HTTP {}{replayed}", response.status.as_u16()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::{HeaderMap, HeaderValue, StatusCode};

    fn response(headers: &[(&'static str, &str)]) -> Response {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        Response { status: StatusCode::OK, headers: map, body: Bytes::new() }
    }

    #[test]
    fn the_summary_names_the_invocation_its_attempts_and_status() {
        let r = response(&[("keel-invocation-id", "01JABC"), ("keel-attempts", "3")]);
        assert_eq!(summary_line(&r).as_deref(), Some("invocation 01JABC · 3 attempts · HTTP 200"));
        let r = response(&[("keel-invocation-id", "01JABC"), ("keel-attempts", "1")]);
        assert_eq!(summary_line(&r).as_deref(), Some("invocation 01JABC · 1 attempt · HTTP 200"));
        assert_eq!(summary_line(&response(&[])), None);
        let r = response(&[("keel-invocation-id", "01JABC"), ("keel-attempts", "1"), ("idempotent-replayed", "true")]);
        assert_eq!(summary_line(&r).as_deref(), Some("invocation 01JABC · 1 attempt · HTTP 200 · replayed"));
    }
}
