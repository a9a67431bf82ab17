//! Read models of the web console: the approvals inbox, one approval with what a
//! person needs to decide it, the queue's recent throughput and its failures grouped by
//! error, and a project's timeline. Each reads only what its page shows, through the
//! indexes the listings use, as whatever role the caller's transaction has (row-level
//! security keeps a tenant's session to its rows).

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use super::{Error, Result, approvals::Approval};
use crate::domain::{ApprovalStatus, ArtifactKind, ArtifactSource, Channel};

/// One row of the approvals inbox.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct InboxRow {
    pub id: Uuid,
    pub status: ApprovalStatus,
    pub created_at: DateTime<Utc>,
    pub decided_by: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
    pub kind: ArtifactKind,
    pub channel: Option<Channel>,
    pub version: i32,
    pub title: Option<String>,
    pub project_id: Option<Uuid>,
    pub project: Option<String>,
    /// The draft's evaluation score (none for a person's version or a brand voice).
    pub score: Option<i32>,
}

const INBOX_SELECT: &str = "SELECT a.id, a.status, a.created_at, a.decided_by, a.decided_at,
        ar.kind, ar.channel, ar.version, ar.title, ar.project_id, p.name AS project,
        (SELECT (e.data->'scores'->>'overall')::int FROM artifacts e
         WHERE e.based_on_id = a.artifact_id AND e.kind = 'evaluation'
         ORDER BY e.created_at DESC LIMIT 1) AS score
     FROM approvals a
     JOIN artifacts ar ON ar.id = a.artifact_id
     LEFT JOIN projects p ON p.id = ar.project_id";

/// Pending approvals, oldest first, after `(created_at, id)`.
pub async fn inbox(
    db: impl PgExecutor<'_>,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<InboxRow>> {
    Ok(crate::db::query_as(sqlx::AssertSqlSafe(format!(
        "{INBOX_SELECT}
         WHERE a.status = 'pending'
           AND ($1::timestamptz IS NULL OR (a.created_at, a.id) > ($1, $2))
         ORDER BY a.created_at, a.id LIMIT $3"
    )))
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(limit)
    .persistent(false)
    .fetch_all(db)
    .await?)
}

/// The latest decisions, newest first.
pub async fn recently_decided(db: impl PgExecutor<'_>, limit: i64) -> Result<Vec<InboxRow>> {
    Ok(crate::db::query_as(sqlx::AssertSqlSafe(format!(
        "{INBOX_SELECT}
         WHERE a.status <> 'pending' AND a.decided_at IS NOT NULL
         ORDER BY a.decided_at DESC LIMIT $1"
    )))
    .bind(limit)
    .persistent(false)
    .fetch_all(db)
    .await?)
}

/// An artifact as the approval page shows it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ArtifactRow {
    pub id: Uuid,
    pub project_id: Option<Uuid>,
    pub kind: ArtifactKind,
    pub channel: Option<Channel>,
    pub version: i32,
    pub based_on_id: Option<Uuid>,
    pub source: ArtifactSource,
    pub title: Option<String>,
    pub content: String,
    pub data: Value,
    pub created_at: DateTime<Utc>,
}

const ARTIFACT_COLUMNS: &str =
    "id, project_id, kind, channel, version, based_on_id, source, title, content, data, created_at";

async fn artifact_row(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<ArtifactRow>> {
    Ok(crate::db::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {ARTIFACT_COLUMNS} FROM artifacts WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(db)
    .await?)
}

/// A draft's evaluation: criteria scores, feedback, the threshold.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    /// The version it evaluated (the draft itself, or the version a person edited).
    pub of_version: i32,
    pub overall: Option<i64>,
    pub passed: Option<bool>,
    pub threshold: Option<i64>,
    /// Each criterion and its score, in the evaluator's order.
    pub criteria: Vec<(String, i64)>,
    /// What the evaluator and copydesk's own checks said.
    pub feedback: Vec<String>,
}

impl Evaluation {
    fn of(version: i32, e: &ArtifactRow) -> Self {
        let scores = &e.data["scores"];
        let criteria = scores
            .as_object()
            .map(|o| {
                o.iter()
                    .filter(|(k, _)| !matches!(k.as_str(), "overall" | "model_overall"))
                    .filter_map(|(k, v)| v.as_i64().map(|v| (k.replace('_', " "), v)))
                    .collect()
            })
            .unwrap_or_default();
        Self {
            of_version: version,
            overall: scores["overall"].as_i64(),
            passed: e.data["passed"].as_bool(),
            threshold: e.data["threshold"].as_i64(),
            criteria,
            feedback: e
                .content
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect(),
        }
    }
}

/// One version of a draft in its rewrite history.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct VersionRow {
    pub id: Uuid,
    pub version: i32,
    pub source: ArtifactSource,
    pub created_at: DateTime<Utc>,
    pub score: Option<i32>,
    /// The decision taken on this version, if any (the latest).
    pub decision: Option<ApprovalStatus>,
    pub decided_by: Option<String>,
    pub notes: Option<String>,
}

/// Everything the approval page shows.
#[derive(Debug, Clone, Serialize)]
pub struct Review {
    pub approval: Approval,
    pub project: Option<String>,
    pub artifact: ArtifactRow,
    /// The version this one was made from (the diff's left side).
    pub previous: Option<ArtifactRow>,
    pub evaluation: Option<Evaluation>,
    /// Every version of this channel's draft in the project, oldest first.
    pub history: Vec<VersionRow>,
    /// What the project's model and platform calls cost so far, and this channel's part.
    pub cost_project_usd: f64,
    pub cost_channel_usd: f64,
}

/// One approval with its draft, the previous version, the evaluation, the rewrite
/// history and the cost so far.
pub async fn review(conn: &mut PgConnection, approval: Uuid) -> Result<Review> {
    let approval = super::approvals::get(&mut *conn, approval)
        .await?
        .ok_or(Error::NotFound {
            what: "approval",
            id: approval,
        })?;
    let artifact = artifact_row(&mut *conn, approval.artifact_id)
        .await?
        .ok_or(Error::NotFound {
            what: "artifact",
            id: approval.artifact_id,
        })?;
    let previous = match artifact.based_on_id {
        Some(id) if artifact.kind == ArtifactKind::Draft => artifact_row(&mut *conn, id).await?,
        _ => None,
    };
    // The evaluation of this version, else (a person's edit) of the version it edited.
    let mut evaluation = None;
    for a in std::iter::once(&artifact).chain(previous.as_ref()) {
        let e: Option<ArtifactRow> = crate::db::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {ARTIFACT_COLUMNS} FROM artifacts
             WHERE based_on_id = $1 AND kind = 'evaluation' ORDER BY created_at DESC LIMIT 1"
        )))
        .bind(a.id)
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(e) = e {
            evaluation = Some(Evaluation::of(a.version, &e));
            break;
        }
    }
    let project: Option<String> = match artifact.project_id {
        Some(p) => super::projects::name(&mut *conn, p).await?,
        None => None,
    };
    let history = match (artifact.project_id, artifact.channel) {
        (Some(p), Some(c)) if artifact.kind == ArtifactKind::Draft => {
            crate::db::query_as(
                "SELECT d.id, d.version, d.source, d.created_at,
                        (SELECT (e.data->'scores'->>'overall')::int FROM artifacts e
                         WHERE e.based_on_id = d.id AND e.kind = 'evaluation'
                         ORDER BY e.created_at DESC LIMIT 1) AS score,
                        ap.status AS decision, ap.decided_by, ap.notes
                 FROM artifacts d
                 LEFT JOIN LATERAL (SELECT status, decided_by, notes FROM approvals
                                    WHERE artifact_id = d.id ORDER BY created_at DESC LIMIT 1) ap ON true
                 WHERE d.project_id = $1 AND d.kind = 'draft' AND d.channel = $2
                 ORDER BY d.created_at, d.version",
            )
            .bind(p)
            .bind(c)
            .fetch_all(&mut *conn)
            .await?
        }
        _ => Vec::new(),
    };
    let (cost_project_usd, cost_channel_usd): (f64, f64) = match artifact.project_id {
        Some(p) => {
            crate::db::query_as(
                "SELECT coalesce(sum(r.cost_usd), 0)::float8,
                    coalesce(sum(r.cost_usd) FILTER (WHERE j.input->>'channel' = $2), 0)::float8
             FROM runs r LEFT JOIN jobs j ON j.id = r.job_id WHERE r.project_id = $1",
            )
            .bind(p)
            .bind(artifact.channel)
            .fetch_one(&mut *conn)
            .await?
        }
        None => (0.0, 0.0),
    };
    Ok(Review {
        approval,
        project,
        artifact,
        previous,
        evaluation,
        history,
        cost_project_usd,
        cost_channel_usd,
    })
}

/// Jobs that finished in one minute.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Minute {
    pub minute: DateTime<Utc>,
    pub done: i64,
    pub failed: i64,
}

/// Done and failed jobs per minute over the last hour (minutes with none left out).
pub async fn throughput(db: impl PgExecutor<'_>) -> Result<Vec<Minute>> {
    Ok(crate::db::query_as(
        "SELECT date_trunc('minute', finished_at) AS minute,
                count(*) FILTER (WHERE status = 'done') AS done,
                count(*) FILTER (WHERE status = 'failed') AS failed
         FROM jobs
         WHERE status IN ('done', 'failed', 'cancelled') AND finished_at > now() - interval '1 hour'
         GROUP BY 1 ORDER BY 1",
    )
    .persistent(false)
    .fetch_all(db)
    .await?)
}

/// Failed jobs that share an error (ids and numbers masked).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct FailedGroup {
    /// The masked error (`copydesk_error_group`); the bulk retry's filter. None: jobs
    /// failed with no error recorded (set by plain SQL).
    pub error_group: Option<String>,
    pub jobs: i64,
    /// The kinds of the group's jobs.
    pub kinds: Vec<String>,
    /// The group's latest jobs, newest first (at most five).
    pub sample: Vec<Uuid>,
    pub last_failed_at: Option<DateTime<Utc>>,
}

/// Failed jobs grouped by error, biggest group first. One index-only scan of
/// `jobs_failed_group_idx` (tenant, masked error, id) in group order counts each group
/// and takes its kinds and five latest jobs; grouping by `tenant_id` first is what lets
/// the planner use that order (as the owner, groups are per tenant).
pub async fn failed_groups(db: impl PgExecutor<'_>, limit: i64) -> Result<Vec<FailedGroup>> {
    Ok(crate::db::query_as(
        "SELECT error_group, jobs, kinds, sample, last_failed_at
         FROM (SELECT tenant_id, copydesk_error_group(last_error) AS error_group,
                      count(*) AS jobs, array_agg(DISTINCT kind) AS kinds,
                      (array_agg(id ORDER BY id DESC))[1:5] AS sample,
                      max(finished_at) AS last_failed_at
               FROM jobs WHERE status = 'failed'
               GROUP BY tenant_id, 2) g
         ORDER BY jobs DESC, error_group LIMIT $1",
    )
    .bind(limit)
    .persistent(false)
    .fetch_all(db)
    .await?)
}

/// One step of a project's timeline.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Step {
    pub id: Uuid,
    pub kind: ArtifactKind,
    pub channel: Option<Channel>,
    pub version: i32,
    pub source: ArtifactSource,
    pub based_on_id: Option<Uuid>,
    pub title: Option<String>,
    /// A publication's URL.
    pub url: Option<String>,
    pub score: Option<i32>,
    pub created_at: DateTime<Utc>,
    /// The latest decision on this artifact.
    pub decision: Option<ApprovalStatus>,
    pub approval_id: Option<Uuid>,
    pub decided_by: Option<String>,
}

/// A project's artifacts (brand voice, drafts with their scores and decisions,
/// publications), oldest first.
pub async fn timeline(db: impl PgExecutor<'_>, project: Uuid) -> Result<Vec<Step>> {
    Ok(crate::db::query_as(
        "SELECT a.id, a.kind, a.channel, a.version, a.source, a.based_on_id, a.title,
                CASE WHEN a.kind = 'publication' THEN a.content END AS url,
                (SELECT (e.data->'scores'->>'overall')::int FROM artifacts e
                 WHERE e.based_on_id = a.id AND e.kind = 'evaluation'
                 ORDER BY e.created_at DESC LIMIT 1) AS score,
                a.created_at, ap.status AS decision, ap.id AS approval_id, ap.decided_by
         FROM artifacts a
         LEFT JOIN LATERAL (SELECT id, status, decided_by FROM approvals
                            WHERE artifact_id = a.id ORDER BY created_at DESC LIMIT 1) ap ON true
         WHERE a.project_id = $1 AND a.kind IN ('brand_voice', 'draft', 'publication')
         ORDER BY a.created_at, a.version",
    )
    .bind(project)
    .fetch_all(db)
    .await?)
}
