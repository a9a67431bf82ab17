//! A client review link's page: one approval's draft (as its channel shows it, the
//! changes, the evaluation) and three forms — approve, reject with notes, or send their
//! own version — usable once, until the link expires. The link's signature is checked
//! before any row is read; the link row is read as the owner (it says which tenant it
//! belongs to), and everything after runs as that tenant. Nothing else is reachable
//! through a link.

use axum::{
    Form,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use chrono::Utc;
use maud::{Markup, html};
use serde::Deserialize;

use super::{Failure, layout};
use crate::{
    domain::ApprovalStatus,
    http::api::{ApiState, auth::begin_as, problem::Problem},
    pipeline::review_links::{LinkDecision, decide_in},
    store::{self, review_links::ReviewLink},
};

fn refused(status: StatusCode, why: &str) -> Response {
    (
        status,
        layout(
            "Review link",
            None,
            html! { p.problem role="alert" { (why) } p { "Ask whoever sent it for a new one." } },
        ),
    )
        .into_response()
}

/// The link a URL segment names, if its signature holds and the row exists.
async fn link(state: &ApiState, segment: &str) -> Result<Option<ReviewLink>, Failure> {
    let key = state.link_key().map_err(|e| {
        tracing::warn!(error = %e.detail, "a review link was opened but the server has no link key");
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "keys",
            "review links are not set up on this server",
        )
    })?;
    let Some(id) = key.verify(segment) else {
        return Ok(None);
    };
    Ok(store::review_links::get(state.pool(), id).await?)
}

/// A CSRF field for the link's forms: derived from the (secret) URL segment.
fn csrf(segment: &str) -> String {
    use base64::Engine;
    use sha2::Digest;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(format!(
        "copydesk review csrf {segment}"
    )))
}

/// The review page.
pub async fn show(
    State(state): State<ApiState>,
    Path(segment): Path<String>,
) -> Result<Response, Failure> {
    let Some(l) = link(&state, &segment).await? else {
        return Ok(refused(
            StatusCode::NOT_FOUND,
            "This review link is not valid.",
        ));
    };
    if let Some(why) = l.refusal(Utc::now()) {
        return Ok(refused(StatusCode::GONE, &why));
    }
    let mut tx = begin_as(&state, l.tenant_id).await?;
    let r = store::console::review(&mut tx, l.approval_id).await?;
    tx.commit().await?;
    if r.approval.status != ApprovalStatus::Pending {
        return Ok(refused(
            StatusCode::GONE,
            &format!("This draft was already {}.", r.approval.status),
        ));
    }
    let title = r
        .artifact
        .title
        .clone()
        .unwrap_or_else(|| "Your review".into());
    Ok(layout(
        &title,
        None,
        html! {
            p.meta {
                "For " (l.name) " · " (r.project.as_deref().unwrap_or(""))
                " · this link works once, until " (super::render::time(l.expires_at))
            }
            (super::approvals::draft_section(&r))
            (forms(&segment, &r.artifact.content))
        },
    )
    .into_response())
}

fn forms(segment: &str, content: &str) -> Markup {
    let action = format!("/review/{segment}");
    let csrf = csrf(segment);
    html! {
        section.decide #decide {
            h2 { "Your decision" }
            form method="post" action=(action) {
                input type="hidden" name="csrf" value=(csrf);
                label for="notes" { "Notes (needed to ask for changes)" }
                textarea #notes name="notes" rows="3" {}
                div.actions {
                    button.approve type="submit" name="action" value="approve" { "Approve" }
                    button.reject type="submit" name="action" value="reject" { "Ask for changes" }
                }
            }
            details {
                summary { "Or send your own version" }
                form method="post" action=(action) {
                    input type="hidden" name="csrf" value=(csrf);
                    input type="hidden" name="action" value="edit";
                    textarea name="content" rows="14" required { (content) }
                    div.actions { button type="submit" { "Send my version" } }
                }
            }
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct LinkForm {
    csrf: String,
    action: String,
    #[serde(default)]
    notes: String,
    #[serde(default)]
    content: String,
}

/// A decision through the link: once.
pub async fn decide(
    State(state): State<ApiState>,
    Path(segment): Path<String>,
    Form(f): Form<LinkForm>,
) -> Result<Response, Failure> {
    let Some(l) = link(&state, &segment).await? else {
        return Ok(refused(
            StatusCode::NOT_FOUND,
            "This review link is not valid.",
        ));
    };
    if f.csrf != csrf(&segment) {
        return Err(Problem::forbidden("the form did not come from this review page").into());
    }
    if let Some(why) = l.refusal(Utc::now()) {
        return Ok(refused(StatusCode::GONE, &why));
    }
    let notes = f.notes.trim().to_owned();
    let decision = match f.action.as_str() {
        "approve" => LinkDecision::Approve {
            notes: Some(notes).filter(|n| !n.is_empty()),
        },
        "reject" if !notes.is_empty() => LinkDecision::Reject { notes },
        "reject" => {
            return Err(Problem::unprocessable(
                "asking for changes needs notes: say what should change",
            )
            .into());
        }
        "edit" => LinkDecision::Edit { content: f.content },
        other => return Err(Problem::bad_request(format!("unknown action {other:?}")).into()),
    };
    let mut tx = begin_as(&state, l.tenant_id).await?;
    match decide_in(&mut tx, l.id, &decision).await {
        Ok(_) => {}
        Err(crate::pipeline::Error::Store(store::Error::WrongState {
            what: "review link",
            ..
        })) => {
            return Ok(refused(StatusCode::GONE, "This link was already used."));
        }
        Err(e) => return Err(e.into()),
    }
    tx.commit().await?;
    let said = match decision {
        LinkDecision::Approve { .. } => "You approved the draft. Thank you.",
        LinkDecision::Reject { .. } => "Your notes were sent; the draft will be rewritten.",
        LinkDecision::Edit { .. } => "Your version was sent to the team.",
    };
    Ok(layout(
        "Thank you",
        None,
        html! { p.notice role="status" { (said) } p.muted { "This link is now used up." } },
    )
    .into_response())
}
