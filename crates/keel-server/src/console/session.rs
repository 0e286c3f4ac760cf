//! Who is looking, and what their forms may do. Signing in checks an API key with the API's own
//! `Auth::authenticate` and keeps it in an HttpOnly, SameSite=Strict cookie; on each request the
//! cookie becomes the `Authorization` header the API's access layer reads, so the console has no
//! access rules of its own. Every form carries a CSRF token that must match a second cookie
//! (double submit), and a POST from another origin is refused.

use std::sync::Arc;

use axum::body::{to_bytes, Body};
use axum::extract::{FromRequestParts, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use maud::html;
use serde::Deserialize;

use super::layout;
use crate::auth::Principal;
use crate::state::Shared;

const SESSION: &str = "keel_session";
const CSRF: &str = "keel_csrf";
/// Forms are small: a filter, a key, a token.
const FORM_LIMIT: usize = 16 * 1024;

/// The CSRF token of this browser, for the forms of the page being rendered.
#[derive(Debug, Clone)]
struct Csrf(String);

/// What a page knows of its viewer: the token its forms carry, and who they are.
#[derive(Debug, Clone)]
pub(super) struct Viewer {
    pub(super) csrf: String,
    pub(super) principal: Principal,
    pub(super) auth_on: bool,
    /// Why this node admits nothing now (a standby or fenced region), shown on every page.
    pub(super) region_notice: Option<String>,
}

impl FromRequestParts<Arc<Shared>> for Viewer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, shared: &Arc<Shared>) -> Result<Self, Self::Rejection> {
        let csrf = parts.extensions.get::<Csrf>().map(|c| c.0.clone()).unwrap_or_default();
        let principal = parts.extensions.get::<Principal>().cloned().unwrap_or(Principal::Anonymous);
        let region_notice = shared.region.refusal().map(|refusal| refusal.detail().to_owned());
        Ok(Viewer { csrf, principal, auth_on: shared.auth.is_on(), region_notice })
    }
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
}

fn set_cookie(shared: &Shared, name: &str, value: &str, max_age: Option<u32>) -> HeaderValue {
    let secure = if shared.config.server.tls.is_some() { "; Secure" } else { "" };
    let age = max_age.map(|s| format!("; Max-Age={s}")).unwrap_or_default();
    HeaderValue::from_str(&format!("{name}={value}; Path=/console; HttpOnly; SameSite=Strict{secure}{age}"))
        .expect("cookie values are base64url or key secrets")
}

/// In front of the access layer of every console route: the session cookie as the credential,
/// the CSRF check of a form, and the API's 401 and 403 turned into a sign-in page and a refusal.
pub(super) async fn session(State(shared): State<Arc<Shared>>, mut request: Request, next: Next) -> Response {
    let headers = request.headers();
    let session = cookie(headers, SESSION).map(str::to_owned);
    let known_csrf = cookie(headers, CSRF).map(str::to_owned);
    let csrf = known_csrf.clone().unwrap_or_else(|| URL_SAFE_NO_PAD.encode(crate::auth::secret::random_bytes()));
    if request.method() == Method::POST {
        if !same_origin(request.headers()) {
            return layout::refusal(StatusCode::FORBIDDEN, "This form was sent from another site.", None);
        }
        let (parts, body) = request.into_parts();
        let Ok(bytes) = to_bytes(body, FORM_LIMIT).await else {
            return layout::refusal(StatusCode::PAYLOAD_TOO_LARGE, "This form is too large.", None);
        };
        let token = url::form_urlencoded::parse(&bytes).find(|(k, _)| k == "csrf").map(|(_, v)| v.into_owned());
        let valid = match (&known_csrf, &token) {
            (Some(cookie), Some(token)) => {
                bool::from(subtle::ConstantTimeEq::ct_eq(cookie.as_bytes(), token.as_bytes()))
            }
            _ => false,
        };
        if !valid {
            return layout::refusal(
                StatusCode::FORBIDDEN,
                "This form has expired or did not come from the console: reload the page and try again.",
                None,
            );
        }
        request = Request::from_parts(parts, Body::from(bytes));
    }
    let path = request.uri().path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default();
    if let Some(secret) = session.filter(|_| !request.headers().contains_key(header::AUTHORIZATION)) {
        if let Ok(value) = HeaderValue::from_str(&format!("Bearer {secret}")) {
            request.headers_mut().insert(header::AUTHORIZATION, value);
        }
    }
    request.extensions_mut().insert(Csrf(csrf.clone()));
    let method = request.method().clone();
    let mut response = next.run(request).await;
    response = match response.status() {
        StatusCode::UNAUTHORIZED if is_problem(&response) => {
            let next = if method == Method::GET { path } else { "/console".to_owned() };
            let to = format!(
                "/console/sign-in?next={}",
                url::form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>()
            );
            Redirect::to(&to).into_response()
        }
        StatusCode::FORBIDDEN if is_problem(&response) => forbidden(response).await,
        _ => response,
    };
    if known_csrf.is_none() {
        response.headers_mut().append(header::SET_COOKIE, set_cookie(&shared, CSRF, &csrf, None));
    }
    response
}

/// A POST's `Origin` (else `Referer`), when sent, names this host.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else { return true };
    let origin = headers.get(header::ORIGIN).or_else(|| headers.get(header::REFERER)).and_then(|h| h.to_str().ok());
    match origin {
        None | Some("null") => origin.is_none(),
        Some(origin) => origin.split("://").nth(1).and_then(|rest| rest.split('/').next()) == Some(host),
    }
}

fn is_problem(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|ct| ct.as_bytes().starts_with(b"application/problem+json"))
}

/// The API's 403 (a key without the scope) as a page that says which scope is missing.
async fn forbidden(response: Response) -> Response {
    let body = to_bytes(response.into_body(), 64 * 1024).await.unwrap_or_default();
    let problem: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let scope = problem["scope_needed"].as_str().map(str::to_owned);
    let detail = problem["detail"].as_str().unwrap_or("This key may not do that.").to_owned();
    layout::refusal(StatusCode::FORBIDDEN, &detail, scope.as_deref())
}

#[derive(Debug, Deserialize)]
pub(super) struct SignInQuery {
    next: Option<String>,
}

/// Only a console page: never a redirect off the site.
fn safe_next(next: Option<&str>) -> String {
    next.filter(|n| n.starts_with("/console") && !n.starts_with("//") && !n.contains('\\'))
        .unwrap_or("/console")
        .to_owned()
}

pub(super) async fn sign_in_page(viewer: Viewer, Query(query): Query<SignInQuery>) -> Response {
    form(&viewer, query.next.as_deref(), None)
}

fn form(viewer: &Viewer, next: Option<&str>, error: Option<&str>) -> Response {
    let next = safe_next(next);
    let body = html! {
        @if !viewer.auth_on {
            p.note { "Access control is off (" code { "[auth] mode = \"none\"" } ", loopback only): every page is open. "
                a href="/console" { "Open the overview" } "." }
        }
        form.card.narrow method="post" action="/console/sign-in" {
            input type="hidden" name="csrf" value=(viewer.csrf);
            input type="hidden" name="next" value=(next);
            p { "Sign in with an API key. Make one with "
                code { "keel keys create --name console --scope read" }
                " (add " code { "--scope dlq" } " to redrive, " code { "--scope admin" } " to pause)." }
            @if let Some(error) = error { p.error role="alert" { (error) } }
            label for="key" { "API key" }
            input #key type="password" name="key" autocomplete="current-password" required placeholder="keel_sk_…";
            button.primary type="submit" { "Sign in" }
        }
    };
    let status = if error.is_some() { StatusCode::UNAUTHORIZED } else { StatusCode::OK };
    let mut page = layout::page(viewer, "Sign in", "", body).into_response();
    *page.status_mut() = status;
    page
}

#[derive(Debug, Deserialize)]
pub(super) struct SignIn {
    key: String,
    next: Option<String>,
}

/// Checks the key as the API would, and keeps it in the session cookie for 12 hours.
pub(super) async fn sign_in(
    State(shared): State<Arc<Shared>>,
    viewer: Viewer,
    Form(form_in): Form<SignIn>,
) -> Response {
    let key = form_in.key.trim();
    let Ok(value) = HeaderValue::from_str(&format!("Bearer {key}")) else {
        return form(&viewer, form_in.next.as_deref(), Some("That is not an API key."));
    };
    match shared.auth.authenticate(Some(&value), shared.clock.now_ms()) {
        Ok(Principal::Key(_)) | Ok(Principal::Anonymous) => {
            let mut response = Redirect::to(&safe_next(form_in.next.as_deref())).into_response();
            if shared.auth.is_on() {
                response.headers_mut().append(header::SET_COOKIE, set_cookie(&shared, SESSION, key, Some(12 * 3600)));
            }
            response
        }
        Ok(_) => form(&viewer, form_in.next.as_deref(), Some("Sign in with an API key, not a function token.")),
        Err(problem) => form(&viewer, form_in.next.as_deref(), Some(problem.detail())),
    }
}

pub(super) async fn sign_out(State(shared): State<Arc<Shared>>) -> Response {
    let mut response = Redirect::to("/console/sign-in").into_response();
    response.headers_mut().append(header::SET_COOKIE, set_cookie(&shared, SESSION, "", Some(0)));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redirect_after_sign_in_stays_in_the_console() {
        assert_eq!(safe_next(Some("/console/dlq?function=a")), "/console/dlq?function=a");
        for bad in [None, Some("https://evil.example/"), Some("//evil.example"), Some("/v1/keys")] {
            assert_eq!(safe_next(bad), "/console");
        }
    }

    #[test]
    fn a_form_must_come_from_this_host() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            pairs.iter().map(|(k, v)| (header::HeaderName::from_static(k), HeaderValue::from_static(v))).collect()
        };
        assert!(same_origin(&headers(&[("host", "127.0.0.1:8080"), ("origin", "http://127.0.0.1:8080")])));
        assert!(same_origin(&headers(&[("host", "127.0.0.1:8080")])));
        assert!(!same_origin(&headers(&[("host", "127.0.0.1:8080"), ("origin", "https://evil.example")])));
        assert!(!same_origin(&headers(&[("host", "127.0.0.1:8080"), ("origin", "null")])));
        assert_eq!(cookie(&headers(&[("cookie", "a=1; keel_csrf=xyz")]), CSRF), Some("xyz"));
    }
}
