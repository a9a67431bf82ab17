//! The tenant's event subscriptions (other services' webhooks) with each one's last
//! delivery, and the latest deliveries: what was sent, what the receiver answered. A
//! webhook is shown by its origin only; its secret is never read. Subscribing is done
//! with the CLI or the API (an admin's token), which show the secret once.

use axum::extract::State;
use maud::html;

use super::{PageResult, Session, layout, render};
use crate::{http::api::ApiState, store};

/// Subscriptions and the latest deliveries.
pub async fn list(State(state): State<ApiState>, session: Session) -> PageResult {
    let mut tx = session.caller.begin(&state).await?;
    // The session's tenant only: row-level security sees to it.
    let subscriptions = store::events::subscriptions(&mut *tx, None).await?;
    let deliveries = store::events::deliveries(&mut *tx, None, 50).await?;
    tx.commit().await?;
    Ok(layout(
        "Events",
        Some(&session),
        html! {
            p.detail {
                "Other services hear the tenant's lifecycle events here (approvals waiting and "
                "decided, publications made or failed, channels finished), each signed as "
                "Standard Webhooks says."
            }
            @if subscriptions.is_empty() {
                p.empty {
                    "No subscriptions: add one with "
                    code { "copydesk events subscribe URL" } " or "
                    code { "POST /api/v1/subscriptions" } "."
                }
            } @else {
                table.list #subscriptions {
                    thead { tr { th { "Where" } th { "Events" } th { "Project" } th { "Last delivery" } th { "By" } } }
                    tbody {
                        @for s in &subscriptions {
                            tr {
                                td { (s.target) }
                                td { @if s.events.is_empty() { "all" } @else { (s.events.join(", ")) } }
                                td {
                                    @match s.project_id {
                                        Some(p) => { a href={ "/console/projects/" (p) } { "project" } }
                                        None => { "all" }
                                    }
                                }
                                td { (render::last_delivery(s.last_status.as_ref(), s.last_answer_status, s.last_at)) }
                                td { (s.created_by) }
                            }
                        }
                    }
                }
            }
            h2 { "Latest deliveries" }
            @if deliveries.is_empty() {
                p.empty { "None yet." }
            } @else {
                table.list #deliveries {
                    thead { tr { th { "When" } th { "Event" } th { "Status" } th.num { "Attempts" } th { "Answer" } } }
                    tbody {
                        @for d in &deliveries {
                            tr {
                                td { (render::time(d.created_at)) }
                                td { code { (d.kind) } }
                                td { span class={ "status " (d.status) } { (d.status) } }
                                td.num { (d.attempts) }
                                td {
                                    @if let Some(code) = d.answer_status { (code) " " }
                                    span.detail { (d.answer.as_deref().unwrap_or("").chars().take(120).collect::<String>()) }
                                }
                            }
                        }
                    }
                }
            }
        },
    ))
}
