//! Projects (cost and posts each), a project's pipeline as a timeline per channel, and
//! the integrations page (status, last sync, last error, a test button; never a
//! credential).

use std::collections::BTreeMap;

use axum::{
    Form,
    extract::{Path, Query, State},
    response::{IntoResponse, Redirect, Response},
};
use maud::html;
use uuid::Uuid;

use super::{CsrfForm, DoneQuery, Failure, PageResult, Session, layout, notice, render};
use crate::{
    domain::{ArtifactKind, Channel, TokenRole},
    http::api::ApiState,
    publish,
    store::{self, runs::CostGroup},
};

/// The tenant's projects with what they cost and published.
pub async fn list(State(state): State<ApiState>, session: Session) -> PageResult {
    let mut tx = session.caller.begin(&state).await?;
    let projects = store::runs::cost_per_post(&mut *tx, None).await?;
    tx.commit().await?;
    Ok(layout(
        "Projects",
        Some(&session),
        html! {
            @if projects.is_empty() { p.empty { "No projects yet: start one with " code { "copydesk pipeline start" } "." } }
            @else {
                table.list #projects {
                    thead { tr { th { "Project" } th.num { "Cost" } th.num { "Published" } th.num { "Per post" } } }
                    tbody {
                        @for p in &projects {
                            tr {
                                td { a href={ "/console/projects/" (p.project_id) } { (p.name) } }
                                td.num { (render::usd(p.cost_usd)) }
                                td.num { (p.published) }
                                td.num { (p.cost_per_post_usd.map(render::usd).unwrap_or_else(|| "—".into())) }
                            }
                        }
                    }
                }
            }
        },
    ))
}

/// A project's pipeline: per channel, brand voice → each draft version with its score
/// → its decision → publications with their links; cost per channel and per post.
pub async fn show(
    State(state): State<ApiState>,
    session: Session,
    Path(id): Path<Uuid>,
) -> PageResult {
    let mut tx = session.caller.begin(&state).await?;
    let status = store::status::project(&mut tx, id).await?;
    let steps = store::console::timeline(&mut *tx, id).await?;
    let by_channel = store::runs::cost_by(&mut *tx, CostGroup::Channel, Some(id), None).await?;
    let per_post = store::runs::cost_per_post(&mut *tx, Some(id)).await?;
    tx.commit().await?;
    let brand_voice: Vec<_> = steps
        .iter()
        .filter(|s| s.kind == ArtifactKind::BrandVoice)
        .collect();
    let mut lanes: BTreeMap<Channel, Vec<&store::console::Step>> = BTreeMap::new();
    for s in steps.iter().filter(|s| s.kind != ArtifactKind::BrandVoice) {
        if let Some(c) = s.channel {
            lanes.entry(c).or_default().push(s);
        }
    }
    let per_post = per_post.first();
    Ok(layout(
        &status.name,
        Some(&session),
        html! {
            p.meta {
                "Spent " strong { (render::usd(status.total_cost_usd)) }
                @if let Some(p) = per_post {
                    " · " (p.published) " published"
                    @if let Some(c) = p.cost_per_post_usd { " · " (render::usd(c)) " per published post" }
                }
            }
            section.lane {
                h2 { "Brand voice" }
                @if brand_voice.is_empty() { p.muted { (status.brand_voice.as_deref().unwrap_or("not analysed yet")) } }
                ol.steps {
                    @for b in &brand_voice {
                        li {
                            "analysis v" (b.version)
                            @if let (Some(d), Some(a)) = (b.decision, b.approval_id) {
                                " · " a href={ "/console/approvals/" (a) } { span class={ "status " (d) } { (d) } }
                            }
                        }
                    }
                }
            }
            @for c in &status.channels {
                section.lane {
                    h2 {
                        (render::channel_name(c.channel)) " · " (c.state)
                        @if let Some(line) = by_channel.iter().find(|l| l.key == c.channel.as_str()) {
                            span.cost { (render::usd(line.cost_usd)) }
                        }
                    }
                    ol.steps {
                        @for s in lanes.get(&c.channel).map(Vec::as_slice).unwrap_or_default() {
                            li class=(s.kind) {
                                @if s.kind == ArtifactKind::Publication {
                                    "published "
                                    @if let Some(u) = &s.url { a href=(u) rel="noreferrer" { (u) } }
                                } @else {
                                    "v" (s.version) " " span.muted { (s.source) }
                                    @if let Some(sc) = s.score { " · score " (sc) }
                                    @if let (Some(d), Some(a)) = (s.decision, s.approval_id) {
                                        " · " a href={ "/console/approvals/" (a) } { span class={ "status " (d) } { (d) } }
                                        @if let Some(by) = &s.decided_by { " by " (by) }
                                    }
                                }
                            }
                        }
                    }
                    @if let Some(e) = &c.last_error { p.error { (e) } }
                }
            }
            h2 { "Cost by model" }
            table.list {
                thead { tr { th { "Provider / model" } th.num { "Calls" } th.num { "Cost" } } }
                tbody {
                    @for l in &status.cost {
                        tr { td { (l.provider) " / " (l.model) } td.num { (l.calls) } td.num { (render::usd(l.cost_usd)) } }
                    }
                }
            }
        },
    ))
}

/// The tenant's integrations; no credential is read.
pub async fn integrations(
    State(state): State<ApiState>,
    session: Session,
    Query(q): Query<DoneQuery>,
) -> PageResult {
    let mut tx = session.caller.begin(&state).await?;
    let list = store::integrations::list(&mut *tx, None, None).await?;
    let names = store::runs::cost_per_post(&mut *tx, None).await?;
    tx.commit().await?;
    let name = |id: Uuid| {
        names
            .iter()
            .find(|p| p.project_id == id)
            .map(|p| p.name.clone())
            .unwrap_or_else(|| id.to_string())
    };
    let operator = session.caller.require(TokenRole::Operator).is_ok();
    Ok(layout(
        "Integrations",
        Some(&session),
        html! {
            (notice(q.done.as_deref()))
            @if list.is_empty() { p.empty { "No integrations: add one with " code { "copydesk integrations set" } "." } }
            @else {
                table.list #integrations {
                    thead { tr { th { "Project" } th { "Platform" } th { "Status" } th { "Last sync" } th { "Last error" } th {} } }
                    tbody {
                        @for i in &list {
                            tr {
                                td { a href={ "/console/projects/" (i.project_id) } { (name(i.project_id)) } }
                                td { (i.platform) }
                                td { span class={ "status " (i.status) } { (i.status) } }
                                td { (i.last_sync_at.map(render::time).unwrap_or_else(|| "never".into())) }
                                td.error { (i.last_error.as_deref().unwrap_or("")) }
                                td {
                                    @if operator {
                                        form.inline method="post" action={ "/console/integrations/" (i.id) "/test" } {
                                            (session.csrf_field())
                                            button type="submit" { "Test" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    ))
}

/// Tests an integration: seen as the tenant first, then the CLI's test as the owner
/// (the tenant's session never reads a credential).
pub async fn test_integration(
    State(state): State<ApiState>,
    session: Session,
    Path(id): Path<Uuid>,
    Form(f): Form<CsrfForm>,
) -> Result<Response, Failure> {
    session.check(&f.csrf)?;
    session.caller.require(TokenRole::Operator)?;
    let mut tx = session.caller.begin(&state).await?;
    store::integrations::get(&mut *tx, id).await?;
    tx.commit().await?;
    publish::integrations::test(
        state.pool(),
        &state.settings().publish,
        state.keys()?,
        id,
        session.caller.actor(),
    )
    .await?;
    Ok(Redirect::to("/console/integrations?done=tested").into_response())
}
