//! The tenant's notifications (unread first, or all), marked read one by one or all
//! at once by any signed-in person (their token's name is `read_by`), and the
//! channels they are delivered through with each one's last delivery. A webhook is
//! shown by its origin only; its secret is never read.

use axum::{
    Form,
    extract::{Path, Query, State},
    response::{IntoResponse, Redirect, Response},
};
use maud::html;
use uuid::Uuid;

use super::{CsrfForm, Failure, PageResult, Session, layout, notice, render};
use crate::{http::api::ApiState, http::api::problem::Problem, store};

#[derive(Debug, serde::Deserialize)]
pub struct ListQuery {
    pub done: Option<String>,
    /// `all=1`: read ones too.
    pub all: Option<String>,
}

/// Notifications, latest first, and the channels.
pub async fn list(
    State(state): State<ApiState>,
    session: Session,
    Query(q): Query<ListQuery>,
) -> PageResult {
    let all = q.all.is_some();
    let mut tx = session.caller.begin(&state).await?;
    // The session's tenant only: row-level security sees to it.
    let list = store::notifications::list(&mut *tx, None, !all, 200).await?;
    let channels = store::notifications::channels(&mut *tx, None).await?;
    tx.commit().await?;
    let unread = list.iter().filter(|n| n.read_at.is_none()).count();
    Ok(layout(
        "Notifications",
        Some(&session),
        html! {
            (notice(q.done.as_deref()))
            p {
                @if all { a href="/console/notifications" { "Unread only" } }
                @else { a href="/console/notifications?all=1" { "Read ones too" } }
            }
            @if list.is_empty() {
                p.empty { @if all { "No notifications." } @else { "Nothing unread." } }
            } @else {
                @if unread > 0 {
                    form.inline method="post" action="/console/notifications/read-all" {
                        (session.csrf_field())
                        button type="submit" { "Mark all " (unread) " read" }
                    }
                }
                table.list #notifications {
                    thead { tr { th { "Last" } th { "Severity" } th { "What" } th.num { "Times" } th { "Read" } th {} } }
                    tbody {
                        @for n in &list {
                            tr {
                                td { (render::time(n.last_at)) }
                                td { span class={ "status " (n.severity) } { (n.severity) } }
                                td {
                                    strong { (n.title) }
                                    @if !n.body.is_empty() { br; span.detail { (n.body) } }
                                    br;
                                    span.detail {
                                        (n.kind)
                                        @if let Some(j) = n.job_id { " · " a href={ "/console/jobs/" (j) } { "job" } }
                                        @if let Some(p) = n.project_id { " · " a href={ "/console/projects/" (p) } { "project" } }
                                        @if let Some(a) = n.data.get("approval_id").and_then(|v| v.as_str()) {
                                            " · " a href={ "/console/approvals/" (a) } { "approval" }
                                        }
                                    }
                                }
                                td.num { (n.count) }
                                td { (n.read_by.as_deref().unwrap_or("unread")) }
                                td {
                                    @if n.read_at.is_none() {
                                        form.inline method="post" action={ "/console/notifications/" (n.id) "/read" } {
                                            (session.csrf_field())
                                            button type="submit" { "Mark read" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            h2 { "Channels" }
            @if channels.is_empty() {
                p.empty { "No channels: add one with " code { "copydesk notifications channels add webhook URL" } " or " code { "… add email ADDRESS" } "." }
            } @else {
                table.list #channels {
                    thead { tr { th { "Kind" } th { "Where" } th { "From" } th { "Project" } th { "Last delivery" } } }
                    tbody {
                        @for c in &channels {
                            tr {
                                td { (c.kind) }
                                td { (c.target) }
                                td { (c.min_severity) " and above" }
                                td { (c.project_id.map_or("all".into(), |p| p.to_string())) }
                                td { (render::last_delivery(c.last_status.as_ref(), c.last_answer_status, c.last_at)) }
                            }
                        }
                    }
                }
            }
        },
    ))
}

/// Marks one of the tenant's notifications read by the session's token.
pub async fn read(
    State(state): State<ApiState>,
    session: Session,
    Path(id): Path<Uuid>,
    Form(f): Form<CsrfForm>,
) -> Result<Response, Failure> {
    session.check(&f.csrf)?;
    let mut tx = session.caller.begin(&state).await?;
    if !store::notifications::read(&mut *tx, None, id, session.caller.actor()).await? {
        return Err(Problem::not_found(format!("no unread notification {id}")).into());
    }
    tx.commit().await?;
    Ok(Redirect::to("/console/notifications?done=read").into_response())
}

/// Marks every unread notification of the tenant read.
pub async fn read_all(
    State(state): State<ApiState>,
    session: Session,
    Form(f): Form<CsrfForm>,
) -> Result<Response, Failure> {
    session.check(&f.csrf)?;
    let mut tx = session.caller.begin(&state).await?;
    store::notifications::read_all(&mut *tx, None, session.caller.actor()).await?;
    tx.commit().await?;
    Ok(Redirect::to("/console/notifications?done=read_all").into_response())
}
