//! The web console under `/console`: server-rendered HTML (maud) with a stylesheet of
//! its own, no script, every asset from the binary; every action is a plain form. A
//! person logs in with a token (`session`): the token goes into an HttpOnly,
//! SameSite=Strict cookie, every form carries a CSRF field derived from it, and every
//! page runs in one transaction as the token's tenant, exactly as the API does. Client
//! review links (`review`) live under `/review` and need no login.

mod approvals;
mod events;
mod notifications;
mod projects;
mod queue;
mod render;
mod review;
mod session;

use axum::{
    Router,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use maud::{DOCTYPE, Markup, html};

use super::api::{ApiState, problem::Problem};
pub use session::{COOKIE, CsrfForm, Session};

const STYLESHEET: &str = include_str!("console.css");

/// The console's and the review links' routes.
pub fn router(state: ApiState) -> Router {
    let limit = state.settings().http.max_body_bytes;
    Router::new()
        .route("/", get(|| async { Redirect::to("/console/") }))
        .route("/console", get(|| async { Redirect::to("/console/") }))
        .route(
            "/console/",
            get(|| async { Redirect::to("/console/approvals") }),
        )
        .route("/console/assets/console.css", get(stylesheet))
        .route(
            "/console/login",
            get(session::login_form).post(session::login),
        )
        .route("/console/logout", post(session::logout))
        .route("/console/approvals", get(approvals::inbox))
        .route("/console/approvals/{id}", get(approvals::show))
        .route("/console/approvals/{id}/decide", post(approvals::decide))
        .route("/console/approvals/{id}/edit", post(approvals::edit))
        .route("/console/approvals/{id}/links", post(approvals::make_link))
        .route("/console/links/{id}/revoke", post(approvals::revoke_link))
        .route("/console/queue", get(queue::overview))
        .route("/console/queue/retry", post(queue::retry_group))
        .route("/console/jobs", get(queue::jobs))
        .route("/console/jobs/{id}", get(queue::job))
        .route("/console/jobs/{id}/retry", post(queue::retry))
        .route("/console/jobs/{id}/cancel", post(queue::cancel))
        .route("/console/projects", get(projects::list))
        .route("/console/projects/{id}", get(projects::show))
        .route("/console/integrations", get(projects::integrations))
        .route(
            "/console/integrations/{id}/test",
            post(projects::test_integration),
        )
        .route("/console/notifications", get(notifications::list))
        .route("/console/events", get(events::list))
        .route(
            "/console/notifications/read-all",
            post(notifications::read_all),
        )
        .route(
            "/console/notifications/{id}/read",
            post(notifications::read),
        )
        .route("/review/{link}", get(review::show).post(review::decide))
        .layer(axum::extract::DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn(headers))
        .layer(axum::middleware::from_fn(super::api::trace))
        .with_state(state)
}

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        STYLESHEET,
    )
        .into_response()
}

/// Every console answer: nothing from elsewhere may load or frame it, no page is
/// cached, and no address (a review link is a credential) leaves in a Referer.
async fn headers(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}

/// Why a console request did not give its page.
#[derive(Debug)]
pub enum Failure {
    /// No session (or an expired or revoked token): to the login form, then back.
    Login { next: String },
    /// Anything else, shown as a page naming what is wrong.
    Problem(Problem),
}

impl<E: Into<Problem>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::Problem(e.into())
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        match self {
            Failure::Login { next } => {
                let next = percent_encoding::utf8_percent_encode(
                    &next,
                    percent_encoding::NON_ALPHANUMERIC,
                );
                Redirect::to(&format!("/console/login?next={next}")).into_response()
            }
            Failure::Problem(p) => {
                let status =
                    StatusCode::from_u16(p.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                let body = html! {
                    p.problem { (p.detail) }
                    p { a href="/console/" { "Back to the console" } }
                };
                (status, layout(&p.title, None, body)).into_response()
            }
        }
    }
}

pub type PageResult = Result<Markup, Failure>;

/// `?done=KEY` of a page a form's redirect lands on (see [`notice`]).
#[derive(Debug, serde::Deserialize)]
pub struct DoneQuery {
    pub done: Option<String>,
}

/// Which part of the console a page belongs to (its menu entry is marked).
fn nav(session: Option<&Session>) -> Markup {
    html! {
        header.top {
            a.brand href="/console/" { "copydesk" }
            @if let Some(s) = session {
                nav {
                    a href="/console/approvals" { "Approvals" }
                    a href="/console/queue" { "Queue" }
                    a href="/console/jobs" { "Jobs" }
                    a href="/console/projects" { "Projects" }
                    a href="/console/integrations" { "Integrations" }
                    a href="/console/notifications" { "Notifications" }
                    a href="/console/events" { "Events" }
                }
                div.who {
                    span { (s.caller.token.name) " · " (s.caller.token.role) }
                    form method="post" action="/console/logout" {
                        (s.csrf_field())
                        button.link type="submit" { "Log out" }
                    }
                }
            }
        }
    }
}

/// A whole page.
pub fn layout(title: &str, session: Option<&Session>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="no-referrer";
                title { (title) " · copydesk" }
                link rel="stylesheet" href="/console/assets/console.css";
            }
            body {
                (nav(session))
                main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// The messages a redirect after an action may show (`?done=KEY`): a fixed list, so no
/// URL can put words of its own on a page.
fn done_message(key: &str) -> Option<&'static str> {
    Some(match key {
        "approved" => "Approved. A worker applies the decision in a moment.",
        "rejected" => "Rejected with your notes. A worker starts the rewrite in a moment.",
        "edited" => "Your version is saved; the approval now points at it.",
        "retried" => "The job is queued again.",
        "cancelled" => "The job is cancelled.",
        "bulk" => "The group's jobs are queued again.",
        "tested" => "The integration was tested; its status below is the answer.",
        "revoked" => "The review link is withdrawn.",
        "read" => "Marked read.",
        "read_all" => "Every notification is marked read.",
        _ => return None,
    })
}

/// The notice a page shows after a redirect from an action.
fn notice(done: Option<&str>) -> Markup {
    html! {
        @if let Some(m) = done.and_then(done_message) {
            p.notice role="status" { (m) }
        }
    }
}
