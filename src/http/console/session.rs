//! Console sessions. The login form takes a token (`copydesk tokens create`) and puts
//! it in the `copydesk_session` cookie: HttpOnly (no script reads it), SameSite=Strict
//! (no other site's page sends it), Secure when the console is reached over TLS (a
//! `https` public URL, or a proxy's `X-Forwarded-Proto: https`). Each request looks the
//! token up as the API does, so a revoked or expired token ends the session at once.
//!
//! CSRF: every form carries `csrf`, an HMAC-SHA256 of a fixed label under the session's
//! token; a POST without the right one is refused. Another site can neither read the
//! cookie nor compute the field. The login form itself is guarded by a random value in
//! a short-lived cookie that the form must repeat (double submit).

use axum::{
    Form,
    extract::{FromRequestParts, Query, State},
    http::{HeaderMap, header, request::Parts},
    response::{IntoResponse, Redirect, Response},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use maud::{Markup, html};
use serde::Deserialize;
use sha2::Sha256;

use super::{Failure, layout};
use crate::http::api::{ApiState, auth::Caller, problem::Problem};

/// The session cookie's name.
pub const COOKIE: &str = "copydesk_session";
const LOGIN_COOKIE: &str = "copydesk_login";

/// A logged-in person: the token's caller and the CSRF field its forms carry.
#[derive(Debug, Clone)]
pub struct Session {
    pub caller: Caller,
    pub csrf: String,
}

fn csrf_mac(token: &str) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(token.as_bytes()).expect("any key length");
    mac.update(b"copydesk console csrf v1");
    mac
}

impl Session {
    /// The hidden field every form of the session carries.
    pub fn csrf_field(&self) -> Markup {
        html! { input type="hidden" name="csrf" value=(self.csrf); }
    }

    /// Refuses (403) a form whose `csrf` is not this session's.
    pub fn check(&self, presented: &str) -> Result<(), Failure> {
        if presented.len() == self.csrf.len()
            && constant_time_eq(presented.as_bytes(), self.csrf.as_bytes())
        {
            return Ok(());
        }
        Err(Problem::forbidden(
            "the form is stale or did not come from this console (CSRF check): reload the page and try again",
        )
        .into())
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

impl FromRequestParts<ApiState> for Session {
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, Failure> {
        let next = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "/console/".into());
        let login = || Failure::Login { next: next.clone() };
        let presented = cookie(&parts.headers, COOKIE).ok_or_else(login)?;
        let token = crate::store::tokens::authenticate(state.pool(), presented)
            .await
            .map_err(Problem::from)?
            .ok_or_else(login)?;
        tracing::Span::current().record("token", tracing::field::display(&token.name));
        let csrf = URL_SAFE_NO_PAD.encode(csrf_mac(presented).finalize().into_bytes());
        Ok(Session {
            caller: Caller { token },
            csrf,
        })
    }
}

/// Whether the person reached the console over TLS (so cookies must be Secure).
fn secure(state: &ApiState, headers: &HeaderMap) -> bool {
    state.settings().http.public_url.starts_with("https://")
        || headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

fn set_cookie(name: &str, value: &str, path: &str, max_age: Option<i64>, secure: bool) -> String {
    let mut c = format!("{name}={value}; Path={path}; HttpOnly; SameSite=Strict");
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={age}"));
    }
    if secure {
        c.push_str("; Secure");
    }
    c
}

#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

/// Only a console page may be where a login returns to (no open redirect).
fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n) if n.starts_with("/console/") && !n.contains("//") && !n.contains('\\') => n,
        _ => "/console/approvals",
    }
}

fn login_page(next: &str, nonce: &str, error: Option<&str>) -> Markup {
    layout(
        "Log in",
        None,
        html! {
            @if let Some(e) = error { p.problem role="alert" { (e) } }
            form.card method="post" action="/console/login" {
                input type="hidden" name="nonce" value=(nonce);
                input type="hidden" name="next" value=(next);
                label for="token" { "Access token" }
                input #token type="password" name="token" autocomplete="off" required
                    placeholder="cdk_…";
                p.hint { "Make one with " code { "copydesk tokens create --role approver --name you" } "." }
                button type="submit" { "Log in" }
            }
        },
    )
}

/// The login form, with a fresh double-submit value.
pub async fn login_form(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Query(q): Query<LoginQuery>,
) -> Response {
    let nonce = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 18]>());
    let cookie = set_cookie(
        LOGIN_COOKIE,
        &nonce,
        "/console/login",
        Some(600),
        secure(&state, &headers),
    );
    (
        [(header::SET_COOKIE, cookie)],
        login_page(safe_next(q.next.as_deref()), &nonce, None),
    )
        .into_response()
}

#[derive(Deserialize)]
pub struct LoginForm {
    token: String,
    nonce: String,
    next: Option<String>,
}

impl std::fmt::Debug for LoginForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginForm").finish_non_exhaustive()
    }
}

/// Checks the token and starts the session.
pub async fn login(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Result<Response, Failure> {
    let next = safe_next(form.next.as_deref()).to_owned();
    let expected = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if expected.is_empty() || !constant_time_eq(expected.as_bytes(), form.nonce.as_bytes()) {
        return Err(Problem::forbidden(
            "the login form is stale or did not come from this console: open /console/login again",
        )
        .into());
    }
    let token = form.token.trim();
    let Some(t) = crate::store::tokens::authenticate(state.pool(), token)
        .await
        .map_err(Problem::from)?
    else {
        tracing::info!("console login refused");
        let page = login_page(
            &next,
            expected,
            Some("That token is unknown, revoked or expired."),
        );
        return Ok((axum::http::StatusCode::UNAUTHORIZED, page).into_response());
    };
    tracing::info!(token = %t.name, "console login");
    let secure = secure(&state, &headers);
    let mut res = Redirect::to(&next).into_response();
    let h = res.headers_mut();
    h.append(
        header::SET_COOKIE,
        set_cookie(COOKIE, token, "/", None, secure)
            .parse()
            .map_err(|_| Problem::bad_request("that is not a token"))?,
    );
    h.append(
        header::SET_COOKIE,
        set_cookie(LOGIN_COOKIE, "", "/console/login", Some(0), secure)
            .parse()
            .expect("a valid header"),
    );
    Ok(res)
}

#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    pub csrf: String,
}

/// Ends the session (the cookie is cleared; the token itself stays valid).
pub async fn logout(
    State(state): State<ApiState>,
    session: Session,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Result<Response, Failure> {
    session.check(&form.csrf)?;
    let clear = set_cookie(COOKIE, "", "/", Some(0), secure(&state, &headers));
    Ok((
        [(header::SET_COOKIE, clear)],
        Redirect::to("/console/login"),
    )
        .into_response())
}
