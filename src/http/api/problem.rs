//! Errors as `application/problem+json` (RFC 9457): a type, a title, the status and a
//! detail naming what is wrong. Database failures are logged with the request's id and
//! answered without their text (it may quote a row); another tenant's rows are simply
//! not found.

use axum::{
    Json,
    extract::rejection::{JsonRejection, QueryRejection},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use utoipa::ToSchema;

use crate::{pipeline, publish, publish::eligibility::Ineligible, store};

/// The content type of every error the API answers.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem document.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem (`urn:copydesk:problem:<kind>`).
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the kind.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What is wrong with this request, in words.
    pub detail: String,
}

impl Problem {
    pub fn new(status: StatusCode, kind: &str, detail: impl Into<String>) -> Self {
        Self {
            kind: format!("urn:copydesk:problem:{kind}"),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
        }
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad-request", detail)
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", detail)
    }

    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", detail)
    }

    pub fn unprocessable(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", detail)
    }

    /// A failure of ours, logged in full and answered without its text.
    pub fn internal(error: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %error, "request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the server failed to answer this request; its log says why",
        )
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, Json(self)).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        response
    }
}

/// Database errors: row-level security refusing a row and a trigger finding a reference
/// to another tenant's row both mean the request named something this tenant does not
/// have; a unique or check violation is the request's fault; anything else is ours.
impl From<sqlx::Error> for Problem {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &e {
            match db.code().as_deref() {
                // insufficient_privilege: RLS's WITH CHECK, or a column not granted.
                Some("42501") if db.message().contains("row-level security") => {
                    return Problem::not_found(
                        "a row this request names does not exist (or is another tenant's)",
                    );
                }
                Some("23514") if db.message().contains("of tenant") => {
                    return Problem::not_found(
                        "a row this request names does not exist (or is another tenant's)",
                    );
                }
                Some("23503") => {
                    return Problem::not_found(format!(
                        "a row this request names does not exist ({})",
                        db.constraint().unwrap_or("a reference")
                    ));
                }
                Some("23505") => {
                    return Problem::conflict(format!(
                        "that already exists ({})",
                        db.constraint().unwrap_or("a unique key")
                    ));
                }
                // A NUL character in text (22021) or in a JSON string (22P05):
                // Postgres stores neither.
                Some("22021" | "22P05") => {
                    return Problem::unprocessable(
                        "the request holds a NUL character (\\u0000), which no text field can store",
                    );
                }
                // A time or an interval out of Postgres's range.
                Some("22008" | "22015") => {
                    return Problem::unprocessable(format!(
                        "a time or a duration in the request is out of range ({})",
                        db.message()
                    ));
                }
                Some("23514" | "22P02" | "22023") => {
                    return Problem::unprocessable(db.message().to_owned());
                }
                _ => {}
            }
        }
        Problem::internal(&e)
    }
}

impl From<store::Error> for Problem {
    fn from(e: store::Error) -> Self {
        match e {
            store::Error::Sql(e) => e.into(),
            store::Error::NotFound { .. } => Problem::not_found(e.to_string()),
            store::Error::WrongState { .. } => Problem::conflict(e.to_string()),
            store::Error::Invalid(m) => Problem::unprocessable(m),
            store::Error::Key(k) => Problem::internal(&k),
        }
    }
}

impl From<copydesk_queue::Error> for Problem {
    fn from(e: copydesk_queue::Error) -> Self {
        use copydesk_queue::Error as Q;
        match e {
            Q::Sql(e) => e.into(),
            Q::NotFound(_) => Problem::not_found(e.to_string()),
            Q::WrongState { .. } => Problem::conflict(e.to_string()),
            Q::UnknownKind(..) | Q::InvalidInput { .. } | Q::BadSchedule { .. } => {
                Problem::unprocessable(e.to_string())
            }
            Q::Effect(_) | Q::StepOutput { .. } | Q::Column { .. } | Q::Migrate(_) => {
                Problem::internal(&e)
            }
        }
    }
}

impl From<pipeline::Error> for Problem {
    fn from(e: pipeline::Error) -> Self {
        use pipeline::Error as P;
        match e {
            P::Store(e) => e.into(),
            P::Queue(e) => e.into(),
            // Another tenant's row is, to this tenant, no row at all.
            P::OtherTenant { what, id, .. } => Problem::not_found(format!("no {what} {id}")),
            P::Ineligible(Ineligible::OtherTenant { integration, .. }) => {
                Problem::not_found(format!("no integration {integration}"))
            }
            P::AlreadyPublished { .. } | P::Ineligible(Ineligible::NotApproved(_)) => {
                Problem::conflict(e.to_string())
            }
            _ => Problem::unprocessable(e.to_string()),
        }
    }
}

impl From<publish::Error> for Problem {
    fn from(e: publish::Error) -> Self {
        match e {
            publish::Error::Store(e) => e.into(),
            publish::Error::Invalid(m) => Problem::unprocessable(m),
            // The server's keys (COPYDESK_FERNET_KEYS) cannot read the credentials: the
            // message names the variable, never a key.
            publish::Error::Key(k) => {
                Problem::new(StatusCode::SERVICE_UNAVAILABLE, "keys", k.to_string())
            }
        }
    }
}

impl From<JsonRejection> for Problem {
    fn from(r: JsonRejection) -> Self {
        let status = r.status();
        let kind = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "too-large"
        } else if status == StatusCode::UNSUPPORTED_MEDIA_TYPE {
            "unsupported-media-type"
        } else {
            "bad-request"
        };
        Problem::new(status, kind, r.body_text())
    }
}

impl From<QueryRejection> for Problem {
    fn from(r: QueryRejection) -> Self {
        Problem::bad_request(r.body_text())
    }
}

/// Every error the API answers is a problem document: an answer of 4xx or 5xx in any
/// other content type (an extractor's rejection, such as a path parameter that is not
/// a UUID, or the router's 405) is rewritten as one with its text as the detail.
pub async fn errors_as_problems(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let res = next.run(req).await;
    let status = res.status();
    let is_problem = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == PROBLEM_JSON.as_bytes());
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return res;
    }
    let (parts, body) = res.into_parts();
    let text = axum::body::to_bytes(body, 16 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let kind = match status {
        StatusCode::METHOD_NOT_ALLOWED => "method-not-allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "too-large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported-media-type",
        s if s.is_server_error() => "internal",
        _ => "bad-request",
    };
    let detail = if text.is_empty() {
        status.canonical_reason().unwrap_or("Error").to_owned()
    } else {
        text
    };
    let mut answer = Problem::new(status, kind, detail).into_response();
    // Headers the answer carried (Allow on a 405) are kept.
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            answer.headers_mut().insert(name.clone(), value.clone());
        }
    }
    answer
}
