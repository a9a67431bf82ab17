//! The queue page (counts by kind and status, the oldest ready wait, throughput over
//! the last hour, failures grouped by error with a bulk retry per group), the jobs
//! listing, and one job with its attempts timeline, retry and cancel.

use std::collections::BTreeMap;

use axum::{
    Form,
    extract::{Path, Query, State},
    response::{IntoResponse, Redirect, Response},
};
use chrono::{DateTime, Utc};
use copydesk_queue::{
    JobStatus,
    ops::{self, BulkAction, JobFilter},
};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use super::{CsrfForm, DoneQuery, Failure, PageResult, Session, layout, notice, render};
use crate::{
    domain::TokenRole,
    http::api::{ApiState, jobs::bulk_in, page::Cursor, problem::Problem},
    pipeline, store,
};

const STATUSES: [JobStatus; 6] = [
    JobStatus::Queued,
    JobStatus::Running,
    JobStatus::NeedsApproval,
    JobStatus::Failed,
    JobStatus::Cancelled,
    JobStatus::Done,
];

fn badge(s: JobStatus) -> Markup {
    html! { span class={ "status " (s) } { (s) } }
}

/// Counts, wait, throughput, failures by error.
pub async fn overview(
    State(state): State<ApiState>,
    session: Session,
    Query(q): Query<DoneQuery>,
) -> PageResult {
    let mut tx = session.caller.begin(&state).await?;
    let stats = ops::stats(&mut *tx).await?;
    let minutes = store::console::throughput(&mut *tx).await?;
    let groups = store::console::failed_groups(&mut *tx, 50).await?;
    tx.commit().await?;
    let mut by_kind: BTreeMap<&str, BTreeMap<JobStatus, i64>> = BTreeMap::new();
    let mut waiting: BTreeMap<&str, i64> = BTreeMap::new();
    for r in &stats.rows {
        *by_kind
            .entry(r.kind.as_str())
            .or_default()
            .entry(r.status)
            .or_default() += r.jobs;
        *waiting.entry(r.kind.as_str()).or_default() += r.waiting;
    }
    let may_retry = session.caller.require(TokenRole::Operator).is_ok();
    Ok(layout(
        "Queue",
        Some(&session),
        html! {
            (notice(q.done.as_deref()))
            p.meta {
                "Oldest ready job has waited "
                strong { @match stats.oldest_ready_secs { Some(s) => (format!("{s:.1} s")), None => "—" } }
                " · finished in the last 5 minutes: " (stats.done_last_5m) " done, " (stats.failed_last_5m) " failed"
            }
            h2 { "Done and failed per minute" }
            (render::chart(&minutes))
            h2 { "Jobs by kind and status" }
            p.hint { "Every job not done, and the done ones of the last hour. Queued jobs \"waiting\" were sent back to wait for a rate limit (the job page names it)." }
            table.list #counts {
                thead { tr { th { "Kind" } @for s in STATUSES { th.num { (s) } } } }
                tbody {
                    @for (kind, counts) in &by_kind {
                        tr {
                            td { (kind) }
                            @for s in STATUSES {
                                td.num {
                                    @match counts.get(&s) {
                                        Some(n) => a href={ "/console/jobs?kind=" (kind) "&status=" (s) } { (n) },
                                        None => span.muted { "0" },
                                    }
                                    @if let (JobStatus::Queued, Some(w)) = (s, waiting.get(kind).filter(|w| **w > 0)) {
                                        br;
                                        span.muted title="sent back to wait for a rate limit" { (w) " waiting" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            h2 { "Failed, by error" }
            @if groups.is_empty() {
                p.empty { "No failed jobs." }
            }
            @for g in &groups {
                section.group {
                    p.error { code { (g.error_group.as_deref().unwrap_or("(no error recorded)")) } }
                    p.meta {
                        strong { (g.jobs) " job(s)" } " · " (g.kinds.join(", "))
                        @if let Some(t) = g.last_failed_at { " · last " (render::age(t)) " ago" }
                        " · "
                        @for id in &g.sample { a href={ "/console/jobs/" (id) } { (short(*id)) } " " }
                    }
                    @if let (true, Some(group)) = (may_retry, &g.error_group) {
                        form method="post" action="/console/queue/retry" {
                            (session.csrf_field())
                            input type="hidden" name="error_group" value=(group);
                            input type="hidden" name="expect" value=(g.jobs);
                            button type="submit" { "Retry these " (g.jobs) }
                        }
                    }
                }
            }
        },
    ))
}

fn short(id: Uuid) -> String {
    id.to_string()[..8].to_owned()
}

#[derive(Debug, Deserialize)]
pub struct RetryGroupForm {
    csrf: String,
    error_group: String,
    expect: i64,
}

/// Retries every failed job of one error group, if the group still has the count the
/// page showed (else the page says how many it has now).
pub async fn retry_group(
    State(state): State<ApiState>,
    session: Session,
    Form(f): Form<RetryGroupForm>,
) -> Result<Response, Failure> {
    session.check(&f.csrf)?;
    session.caller.require(TokenRole::Operator)?;
    let filter = JobFilter {
        status: Some(JobStatus::Failed),
        error_group: Some(f.error_group),
        ..JobFilter::default()
    };
    let mut tx = session.caller.begin(&state).await?;
    bulk_in(
        &mut tx,
        &session.caller,
        BulkAction::Retry,
        &filter,
        Some(f.expect),
    )
    .await?;
    tx.commit().await?;
    Ok(Redirect::to("/console/queue?done=bulk").into_response())
}

#[derive(Debug, Deserialize)]
pub struct JobsQuery {
    status: Option<String>,
    kind: Option<String>,
    cursor: Option<String>,
}

const JOBS_PAGE: i64 = 50;

/// Jobs, newest first, by status and kind; keyset pages.
pub async fn jobs(
    State(state): State<ApiState>,
    session: Session,
    Query(q): Query<JobsQuery>,
) -> PageResult {
    let status = q
        .status
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<JobStatus>()
                .map_err(|e| Problem::bad_request(format!("status: {e}")))
        })
        .transpose()?;
    let kind = q.kind.clone().filter(|k| !k.is_empty());
    let filter = JobFilter {
        status,
        kind: kind.clone(),
        ..JobFilter::default()
    };
    let after = q
        .cursor
        .as_deref()
        .map(Cursor::decode)
        .transpose()?
        .map(|c| c.id);
    let mut tx = session.caller.begin(&state).await?;
    let rows = ops::page(&mut *tx, &filter, after, JOBS_PAGE + 1).await?;
    tx.commit().await?;
    let more = rows.len() as i64 > JOBS_PAGE;
    let rows = &rows[..rows.len().min(JOBS_PAGE as usize)];
    let mut next_query = String::new();
    if let Some(s) = status {
        next_query.push_str(&format!("status={s}&"));
    }
    if let Some(k) = &kind {
        let k = percent_encoding::utf8_percent_encode(k, percent_encoding::NON_ALPHANUMERIC);
        next_query.push_str(&format!("kind={k}&"));
    }
    Ok(layout(
        "Jobs",
        Some(&session),
        html! {
            form.filters method="get" action="/console/jobs" {
                label for="status" { "Status" }
                select #status name="status" {
                    option value="" { "any" }
                    @for s in STATUSES { option value=(s) selected[status == Some(s)] { (s) } }
                }
                label for="kind" { "Kind" }
                input #kind type="text" name="kind" value=(kind.as_deref().unwrap_or(""));
                button type="submit" { "Filter" }
            }
            @if rows.is_empty() { p.empty { "No job matches." } }
            @else {
                table.list #jobs {
                    thead { tr { th { "Job" } th { "Kind" } th { "Status" } th.num { "Attempts" } th { "Created" } th { "Error" } } }
                    tbody {
                        @for j in rows {
                            tr {
                                td { a href={ "/console/jobs/" (j.id) } { code { (short(j.id)) } } }
                                td { (j.kind) }
                                td { (badge(j.status)) }
                                td.num { (j.attempts) "/" (j.max_attempts) }
                                td { (render::age(j.created_at)) " ago" }
                                @if let Some(w) = &j.waiting_for { td.hint { (w) } }
                                @else { td.error { (j.last_error.as_deref().unwrap_or("")) } }
                            }
                        }
                    }
                }
                @if more {
                    @let last = rows.last().expect("a full page");
                    p { a href={ "/console/jobs?" (next_query) "cursor=" (Cursor { at: None, id: last.id }.encode()) } { "Older jobs →" } }
                }
            }
        },
    ))
}

/// One event of a job's timeline.
struct Event {
    at: DateTime<Utc>,
    attempt: Option<i64>,
    what: Markup,
}

fn when(v: &Value, key: &str) -> Option<DateTime<Utc>> {
    v.get(key)
        .and_then(Value::as_str)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// One job: its fields, its attempts timeline (calls, publishing attempts, artifacts,
/// approvals), retry and cancel.
pub async fn job(
    State(state): State<ApiState>,
    session: Session,
    Path(id): Path<Uuid>,
    Query(q): Query<DoneQuery>,
) -> PageResult {
    let mut tx = session.caller.begin(&state).await?;
    let d = store::status::job(&mut tx, id).await?;
    tx.commit().await?;
    let j = &d.job;
    let mut events = vec![Event {
        at: j.created_at,
        attempt: None,
        what: html! { "enqueued" @if j.run_at > j.created_at { ", to run at " (render::time(j.run_at)) } },
    }];
    for r in &d.runs {
        let Some(at) = when(r, "created_at") else {
            continue;
        };
        events.push(Event {
            at,
            attempt: r.get("attempt").and_then(Value::as_i64),
            what: html! {
                "call " strong { (text(r, "provider")) } " " (text(r, "model"))
                @if !text(r, "agent").is_empty() { " (" (text(r, "agent")) ")" }
                " · " (r.get("duration_ms").and_then(Value::as_i64).unwrap_or(0)) " ms"
                @if let Some(c) = r.get("cost_usd").and_then(|c| c.as_f64().or_else(|| c.as_str().and_then(|s| s.parse().ok()))) {
                    " · " (render::usd(c))
                }
                " · " span class={ "status " (text(r, "status")) } { (text(r, "status")) }
                @if !text(r, "error").is_empty() { " " span.error { (text(r, "error")) } }
            },
        });
    }
    for p in &d.publish_attempts {
        let Some(at) = when(p, "created_at") else {
            continue;
        };
        events.push(Event {
            at,
            attempt: p.get("attempt").and_then(Value::as_i64),
            what: html! {
                "publish to " strong { (text(p, "platform")) } " · " (text(p, "state"))
                @if !text(p, "url").is_empty() { " · " a href=(text(p, "url")) rel="noreferrer" { (text(p, "url")) } }
                @if !text(p, "error").is_empty() { " " span.error { (text(p, "error")) } }
            },
        });
    }
    for a in &d.artifacts {
        if let Some(at) = when(a, "created_at") {
            events.push(Event {
                at,
                attempt: None,
                what: html! { "wrote " (text(a, "kind")) " " (text(a, "channel")) " " span.muted { (text(a, "title")) } },
            });
        }
    }
    for a in &d.approvals {
        if let Some(at) = when(a, "created_at") {
            events.push(Event {
                at,
                attempt: None,
                what: html! { "waits for " a href={ "/console/approvals/" (text(a, "id")) } { "an approval" } " (" (text(a, "status")) ")" },
            });
        }
    }
    if let Some(at) = j.started_at {
        events.push(Event {
            at,
            attempt: Some(j.attempts.into()),
            what: html! { "started (attempt " (j.attempts) ")" },
        });
    }
    if let Some(at) = j.finished_at {
        events.push(Event {
            at,
            attempt: None,
            what: html! { "finished " (badge(j.status)) @if let Some(e) = &j.last_error { " " span.error { (e) } } },
        });
    }
    events.sort_by_key(|e| e.at);
    let operator = session.caller.require(TokenRole::Operator).is_ok();
    let retryable = matches!(j.status, JobStatus::Failed | JobStatus::Cancelled);
    let cancellable = matches!(j.status, JobStatus::Queued | JobStatus::Running);
    Ok(layout(
        &format!("Job {}", short(j.id)),
        Some(&session),
        html! {
            (notice(q.done.as_deref()))
            dl.fields {
                dt { "Id" } dd { code { (j.id) } }
                dt { "Kind" } dd { (j.kind) }
                dt { "Status" } dd { (badge(j.status)) }
                dt { "Attempts" } dd { (j.attempts) " of " (j.max_attempts) }
                @if let Some(p) = j.project_id { dt { "Project" } dd { a href={ "/console/projects/" (p) } { code { (p) } } } }
                @if let Some(p) = j.parent_id { dt { "After" } dd { a href={ "/console/jobs/" (p) } { code { (p) } } } }
                @if let Some(e) = &j.last_error { dt { "Last error" } dd.error { (e) } }
                @if let Some(w) = &j.waiting_for { dt { "Waiting" } dd { (w) " (until " (render::time(j.run_at)) ")" } }
            }
            @if operator && (retryable || cancellable) {
                div.actions {
                    @if retryable {
                        form.inline method="post" action={ "/console/jobs/" (j.id) "/retry" } {
                            (session.csrf_field()) button type="submit" { "Retry" }
                        }
                    }
                    @if cancellable {
                        form.inline method="post" action={ "/console/jobs/" (j.id) "/cancel" } {
                            (session.csrf_field()) button.reject type="submit" { "Cancel" }
                        }
                    }
                }
            }
            @if !d.steps.is_empty() {
                h2 { "Steps" }
                p.muted { "Each step is paid for once: a later run of the job gets its output back." }
                table {
                    thead { tr { th { "Step" } th { "Attempt" } th { "Ended" } th { "Paid" } } }
                    tbody {
                        @for s in &d.steps {
                            tr {
                                td { (s.name) }
                                td { (s.attempt) }
                                td { (render::time(s.created_at)) }
                                td {
                                    @if s.replays == 0 { "called" }
                                    @else { "called, then replayed " (s.replays) " time(s)" }
                                }
                            }
                        }
                    }
                }
            }
            h2 { "Timeline" }
            ol.timeline {
                @for e in &events {
                    li {
                        time { (render::time(e.at)) }
                        @if let Some(n) = e.attempt { span.attempt { "attempt " (n) } }
                        span { (e.what) }
                    }
                }
            }
            h2 { "Input" }
            pre { (serde_json::to_string_pretty(&j.input).unwrap_or_default()) }
            @if let Some(o) = &j.output {
                h2 { "Output" }
                pre { (serde_json::to_string_pretty(o).unwrap_or_default()) }
            }
        },
    ))
}

/// A failed or cancelled job back to queued.
pub async fn retry(
    State(state): State<ApiState>,
    session: Session,
    Path(id): Path<Uuid>,
    Form(f): Form<CsrfForm>,
) -> Result<Response, Failure> {
    session.check(&f.csrf)?;
    session.caller.require(TokenRole::Operator)?;
    let mut tx = session.caller.begin(&state).await?;
    pipeline::operator::retry_in(&mut tx, id, session.caller.actor()).await?;
    tx.commit().await?;
    Ok(Redirect::to(&format!("/console/jobs/{id}?done=retried")).into_response())
}

/// A queued or running job cancelled.
pub async fn cancel(
    State(state): State<ApiState>,
    session: Session,
    Path(id): Path<Uuid>,
    Form(f): Form<CsrfForm>,
) -> Result<Response, Failure> {
    session.check(&f.csrf)?;
    session.caller.require(TokenRole::Operator)?;
    let mut tx = session.caller.begin(&state).await?;
    pipeline::operator::cancel_in(&mut tx, id, session.caller.actor()).await?;
    tx.commit().await?;
    Ok(Redirect::to(&format!("/console/jobs/{id}?done=cancelled")).into_response())
}
