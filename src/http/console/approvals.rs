//! The approvals inbox and the approval page: the draft as its channel shows it, the
//! diff against the previous version, the evaluation, the rewrite history, the cost so
//! far; approve, reject with notes, edit; client review links.

use axum::{
    Form,
    extract::{Path, Query, State},
    response::{IntoResponse, Redirect, Response},
};
use chrono::Utc;
use maud::{Markup, html};
use serde::Deserialize;
use uuid::Uuid;

use super::{CsrfForm, DoneQuery, Failure, PageResult, Session, layout, notice, render};
use crate::{
    domain::{ApprovalStatus, ArtifactKind, TokenRole},
    http::api::{ApiState, page::Cursor, problem::Problem},
    links, pipeline,
    store::{self, console::InboxRow},
};

const INBOX_PAGE: i64 = 50;

#[derive(Debug, Deserialize)]
pub struct InboxQuery {
    cursor: Option<String>,
    done: Option<String>,
}

fn score(s: Option<i32>) -> Markup {
    html! {
        @match s {
            Some(s) => span class={ "score " @if s >= 75 { "good" } @else { "low" } } { (s) },
            None => span.muted { "—" },
        }
    }
}

fn what(r: &InboxRow) -> Markup {
    html! {
        @if r.kind == ArtifactKind::BrandVoice { "Brand voice" }
        @else if let Some(c) = r.channel { (render::channel_name(c)) }
        @else { (r.kind) }
    }
}

/// Pending approvals, oldest first; then the latest decisions.
pub async fn inbox(
    State(state): State<ApiState>,
    session: Session,
    Query(q): Query<InboxQuery>,
) -> PageResult {
    let after = q
        .cursor
        .as_deref()
        .map(Cursor::decode)
        .transpose()?
        .and_then(|c| c.at.map(|at| (at, c.id)));
    let mut tx = session.caller.begin(&state).await?;
    let pending = store::console::inbox(&mut *tx, after, INBOX_PAGE + 1).await?;
    let decided = store::console::recently_decided(&mut *tx, 20).await?;
    tx.commit().await?;
    let more = pending.len() as i64 > INBOX_PAGE;
    let pending = &pending[..pending.len().min(INBOX_PAGE as usize)];
    let next = more.then(|| {
        let last = pending.last().expect("a full page");
        Cursor {
            at: Some(last.created_at),
            id: last.id,
        }
        .encode()
    });
    Ok(layout(
        "Approvals",
        Some(&session),
        html! {
            (notice(q.done.as_deref()))
            h2 { "Waiting for a decision" }
            @if pending.is_empty() {
                p.empty { "Nothing waits for a decision." }
            } @else {
                table.list #pending {
                    thead { tr { th { "Waiting" } th { "Project" } th { "Channel" } th { "Draft" } th.num { "Score" } th {} } }
                    tbody {
                        @for r in pending {
                            tr {
                                td { (render::age(r.created_at)) }
                                td { (r.project.as_deref().unwrap_or("—")) }
                                td { (what(r)) }
                                td { (r.title.as_deref().unwrap_or("(untitled)")) " " span.muted { "v" (r.version) } }
                                td.num { (score(r.score)) }
                                td { a.button href={ "/console/approvals/" (r.id) } { "Review" } }
                            }
                        }
                    }
                }
                @if let Some(n) = next {
                    p { a href={ "/console/approvals?cursor=" (n) } { "Older approvals →" } }
                }
            }
            h2 { "Decided lately" }
            @if decided.is_empty() {
                p.empty { "No decisions yet." }
            } @else {
                table.list #decided {
                    thead { tr { th { "Decided" } th { "Project" } th { "Channel" } th { "Draft" } th { "Decision" } th { "By" } } }
                    tbody {
                        @for r in &decided {
                            tr {
                                td { (r.decided_at.map(render::age).unwrap_or_default()) " ago" }
                                td { (r.project.as_deref().unwrap_or("—")) }
                                td { (what(r)) }
                                td { a href={ "/console/approvals/" (r.id) } { (r.title.as_deref().unwrap_or("(untitled)")) } " " span.muted { "v" (r.version) } }
                                td { span class={ "status " (r.status) } { (r.status) } }
                                td { (r.decided_by.as_deref().unwrap_or("")) }
                            }
                        }
                    }
                }
            }
        },
    ))
}

/// The parts of the approval page a review link shows too.
pub fn draft_section(r: &store::console::Review) -> Markup {
    let a = &r.artifact;
    html! {
        section.draft {
            h2 { "The draft" @if let Some(c) = a.channel { " for " (render::channel_name(c)) } " · version " (a.version)
                 @if a.source.as_str() == "human" { " (edited by a person)" } }
            (render::draft(a.channel, a.title.as_deref(), &a.content))
        }
        @if let Some(prev) = &r.previous {
            section.changes {
                h2 { "Changes from version " (prev.version) }
                (render::diff(&prev.content, &a.content))
            }
        }
        @if let Some(e) = &r.evaluation {
            section.evaluation {
                h2 { "Evaluation of version " (e.of_version) }
                p {
                    "Overall " (score(e.overall.map(|v| v as i32)))
                    @if let Some(t) = e.threshold { " (passes at " (t) ")" }
                    @if let Some(p) = e.passed { " — " @if p { "passed" } @else { "below the bar" } }
                }
                @if !e.criteria.is_empty() {
                    table.criteria {
                        @for (name, v) in &e.criteria {
                            tr { th { (name) } td.num { (v) } td { meter min="0" max="100" value=(v) {} } }
                        }
                    }
                }
                @if !e.feedback.is_empty() {
                    h3 { "Feedback" }
                    ul { @for f in &e.feedback { li { (f) } } }
                }
            }
        }
    }
}

/// One approval, with what a person needs to decide it.
pub async fn show(
    State(state): State<ApiState>,
    session: Session,
    Path(id): Path<Uuid>,
    Query(q): Query<DoneQuery>,
) -> PageResult {
    let mut tx = session.caller.begin(&state).await?;
    let r = store::console::review(&mut tx, id).await?;
    let links = store::review_links::for_approval(&mut *tx, id).await?;
    tx.commit().await?;
    Ok(page(&session, &r, &links, notice(q.done.as_deref()), None))
}

fn page(
    session: &Session,
    r: &store::console::Review,
    links: &[store::review_links::ReviewLink],
    notice: Markup,
    new_link: Option<&str>,
) -> Markup {
    let a = &r.artifact;
    let pending = r.approval.status == ApprovalStatus::Pending;
    let may_decide = session.caller.require(TokenRole::Approver).is_ok();
    let title = a.title.clone().unwrap_or_else(|| "Approval".into());
    let now = Utc::now();
    layout(
        &title,
        Some(session),
        html! {
            (notice)
            p.meta {
                span class={ "status " (r.approval.status) } { (r.approval.status) }
                " · " (r.project.as_deref().unwrap_or("no project"))
                " · waiting since " (render::time(r.approval.created_at))
                @if let Some(by) = &r.approval.decided_by { " · decided by " (by) }
                @if let Some(j) = r.approval.job_id { " · " a href={ "/console/jobs/" (j) } { "job" } }
                @if let Some(p) = a.project_id { " · " a href={ "/console/projects/" (p) } { "project timeline" } }
            }
            @if let Some(n) = &r.approval.notes { p.notes { "Notes: " (n) } }
            @if let Some(url) = new_link {
                section.newlink role="status" {
                    h2 { "Review link made" }
                    p { "Send this address to the reviewer. It is shown once; it decides this approval once, until it expires." }
                    input.url type="text" readonly value=(url);
                }
            }
            div.columns {
                div.main {
                    (draft_section(r))
                    @if pending && may_decide {
                        section.decide #decide {
                            h2 { "Decide" }
                            form method="post" action={ "/console/approvals/" (r.approval.id) "/decide" } {
                                (session.csrf_field())
                                label for="notes" { "Notes (needed to reject: the rewrite is made from them)" }
                                textarea #notes name="notes" rows="3" {}
                                div.actions {
                                    button.approve type="submit" name="action" value="approve" { "Approve" }
                                    button.reject type="submit" name="action" value="reject" { "Reject with notes" }
                                }
                            }
                            @if a.kind == ArtifactKind::Draft {
                                details {
                                    summary { "Edit the draft (a new version; the approval moves to it)" }
                                    form method="post" action={ "/console/approvals/" (r.approval.id) "/edit" } {
                                        (session.csrf_field())
                                        textarea name="content" rows="14" required { (a.content) }
                                        div.actions { button type="submit" { "Save my version" } }
                                    }
                                }
                            }
                        }
                    }
                }
                aside {
                    section.cost {
                        h2 { "Cost so far" }
                        p { "This channel: " strong { (render::usd(r.cost_channel_usd)) } }
                        p { "The whole project: " (render::usd(r.cost_project_usd)) }
                    }
                    @if !r.history.is_empty() {
                        section.history {
                            h2 { "Rewrite history" }
                            ol {
                                @for v in &r.history {
                                    li class=@if v.id == a.id { "current" } {
                                        "v" (v.version) " · " (v.source) " · " (score(v.score))
                                        @if let Some(d) = v.decision { " · " span class={ "status " (d) } { (d) } }
                                        @if let Some(n) = &v.notes { br; span.muted { "“" (n) "”" } }
                                    }
                                }
                            }
                        }
                    }
                    @if may_decide {
                        section.links {
                            h2 { "Client review links" }
                            @for l in links {
                                p {
                                    (l.name) " · "
                                    @match l.refusal(now) {
                                        Some(why) => span.muted { (why) },
                                        None => {
                                            "valid until " (render::time(l.expires_at))
                                            form.inline method="post" action={ "/console/links/" (l.id) "/revoke" } {
                                                (session.csrf_field())
                                                button.link type="submit" { "withdraw" }
                                            }
                                        }
                                    }
                                }
                            }
                            @if pending {
                                form method="post" action={ "/console/approvals/" (r.approval.id) "/links" } {
                                    (session.csrf_field())
                                    label for="link-name" { "For (name)" }
                                    input #link-name type="text" name="name" required placeholder="Acme marketing";
                                    label for="link-expires" { "Expires in" }
                                    input #link-expires type="text" name="expires" value="72h";
                                    div.actions { button type="submit" { "Make a review link" } }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

#[derive(Debug, Deserialize)]
pub struct DecideForm {
    csrf: String,
    action: String,
    #[serde(default)]
    notes: String,
}

/// Approve or reject (with notes) from the approval page.
pub async fn decide(
    State(state): State<ApiState>,
    session: Session,
    Path(id): Path<Uuid>,
    Form(f): Form<DecideForm>,
) -> Result<Response, Failure> {
    session.check(&f.csrf)?;
    session.caller.require(TokenRole::Approver)?;
    let notes = Some(f.notes.trim()).filter(|n| !n.is_empty());
    let approve = match f.action.as_str() {
        "approve" => true,
        "reject" if notes.is_some() => false,
        "reject" => {
            return Err(Problem::unprocessable(
                "a rejection needs notes: they say what the rewrite should change",
            )
            .into());
        }
        other => return Err(Problem::bad_request(format!("unknown action {other:?}")).into()),
    };
    let mut tx = session.caller.begin(&state).await?;
    pipeline::decisions::decide_in(&mut tx, id, approve, session.caller.actor(), notes).await?;
    tx.commit().await?;
    let done = if approve { "approved" } else { "rejected" };
    Ok(Redirect::to(&format!("/console/approvals/{id}?done={done}")).into_response())
}

#[derive(Debug, Deserialize)]
pub struct EditForm {
    csrf: String,
    content: String,
}

/// A person's version of the draft.
pub async fn edit(
    State(state): State<ApiState>,
    session: Session,
    Path(id): Path<Uuid>,
    Form(f): Form<EditForm>,
) -> Result<Response, Failure> {
    session.check(&f.csrf)?;
    session.caller.require(TokenRole::Approver)?;
    let mut tx = session.caller.begin(&state).await?;
    let a = store::approvals::get(&mut *tx, id)
        .await?
        .ok_or_else(|| Problem::not_found(format!("no approval {id}")))?;
    pipeline::decisions::edit_draft_in(&mut tx, a.artifact_id, &f.content, session.caller.actor())
        .await?;
    tx.commit().await?;
    Ok(Redirect::to(&format!("/console/approvals/{id}?done=edited")).into_response())
}

#[derive(Debug, Deserialize)]
pub struct LinkForm {
    csrf: String,
    name: String,
    #[serde(default)]
    expires: String,
}

/// Makes a client review link; the page shows its address once.
pub async fn make_link(
    State(state): State<ApiState>,
    session: Session,
    Path(id): Path<Uuid>,
    Form(f): Form<LinkForm>,
) -> PageResult {
    session.check(&f.csrf)?;
    session.caller.require(TokenRole::Approver)?;
    let key = state.link_key()?.clone();
    let expires = if f.expires.trim().is_empty() {
        "72h"
    } else {
        f.expires.trim()
    };
    let ttl = crate::config::parse_duration(expires)
        .map_err(|e| Problem::unprocessable(format!("expires: {e}")))?;
    let expires_at = Utc::now()
        + chrono::Duration::from_std(ttl)
            .map_err(|_| Problem::unprocessable("expires: too far away"))?;
    let mut tx = session.caller.begin(&state).await?;
    let link =
        pipeline::review_links::create_in(&mut tx, id, &f.name, session.caller.actor(), expires_at)
            .await?;
    let r = store::console::review(&mut tx, id).await?;
    let all = store::review_links::for_approval(&mut *tx, id).await?;
    tx.commit().await?;
    let url = links::url(&state.public_url(), &key.sign(link.id));
    Ok(page(&session, &r, &all, html! {}, Some(&url)))
}

/// Withdraws a review link.
pub async fn revoke_link(
    State(state): State<ApiState>,
    session: Session,
    Path(id): Path<Uuid>,
    Form(f): Form<CsrfForm>,
) -> Result<Response, Failure> {
    session.check(&f.csrf)?;
    session.caller.require(TokenRole::Approver)?;
    let mut tx = session.caller.begin(&state).await?;
    let link = pipeline::review_links::revoke_in(&mut tx, id, session.caller.actor()).await?;
    tx.commit().await?;
    Ok(Redirect::to(&format!(
        "/console/approvals/{}?done=revoked",
        link.approval_id
    ))
    .into_response())
}
