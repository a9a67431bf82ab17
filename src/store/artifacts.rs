//! `artifacts`: everything a step produced or a person supplied, versioned by
//! `based_on_id`, searchable by title and content.

use crate::db::Db;
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use super::{Error, Result};
use crate::domain::{ArtifactKind, ArtifactSource, Channel};

/// An artifact to write (inside a step's finish transaction).
#[derive(Debug, Clone)]
pub struct NewArtifact {
    pub id: Uuid,
    pub project_id: Option<Uuid>,
    pub job_id: Option<Uuid>,
    pub kind: ArtifactKind,
    pub channel: Option<Channel>,
    pub based_on_id: Option<Uuid>,
    pub source: ArtifactSource,
    pub title: Option<String>,
    pub content: String,
    pub data: Value,
}

/// Inserts an artifact; its version is one more than the one it is based on.
pub async fn insert(db: impl PgExecutor<'_>, a: &NewArtifact) -> Result<()> {
    crate::db::query(
        "INSERT INTO artifacts (id, project_id, job_id, kind, channel, version, based_on_id, source, title, content, data)
         VALUES ($1, $2, $3, $4, $5,
                 coalesce((SELECT version + 1 FROM artifacts WHERE id = $6), 1),
                 $6, $7, $8, $9, $10)",
    )
    .bind(a.id)
    .bind(a.project_id)
    .bind(a.job_id)
    .bind(a.kind)
    .bind(a.channel)
    .bind(a.based_on_id)
    .bind(a.source)
    .bind(&a.title)
    .bind(&a.content)
    .bind(&a.data)
    .execute(db)
    .await?;
    Ok(())
}

// The readers a step uses take the job's tenant: a job names artifacts by id, and an id
// of another tenant's artifact reads as no artifact at all.

/// The text of `tenant`'s `source` artifact (a style sample).
pub async fn source_text(
    db: impl PgExecutor<'_>,
    id: Uuid,
    tenant: Uuid,
) -> Result<Option<String>> {
    Ok(crate::db::query_scalar(
        "SELECT content FROM artifacts WHERE id = $1 AND kind = 'source' AND tenant_id = $2",
    )
    .bind(id)
    .bind(tenant)
    .fetch_optional(db)
    .await?)
}

/// The analysis of `tenant`'s `brand_voice` artifact.
pub async fn brand_voice_analysis(
    db: impl PgExecutor<'_>,
    id: Uuid,
    tenant: Uuid,
) -> Result<Option<Value>> {
    Ok(crate::db::query_scalar(
        "SELECT data->'analysis' FROM artifacts
         WHERE id = $1 AND kind = 'brand_voice' AND tenant_id = $2",
    )
    .bind(id)
    .bind(tenant)
    .fetch_optional(db)
    .await?)
}

/// The content of any of `tenant`'s artifacts.
pub async fn content(db: impl PgExecutor<'_>, id: Uuid, tenant: Uuid) -> Result<Option<String>> {
    Ok(
        crate::db::query_scalar("SELECT content FROM artifacts WHERE id = $1 AND tenant_id = $2")
            .bind(id)
            .bind(tenant)
            .fetch_optional(db)
            .await?,
    )
}

/// What an evaluation reads: the draft, the brand voice it was written in, and the
/// project's banned phrases.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EvaluationInputs {
    pub draft: String,
    pub brand_voice: Value,
    pub banned_phrases: Value,
}

pub async fn evaluation_inputs(
    db: impl PgExecutor<'_>,
    draft: Uuid,
    brand_voice: Uuid,
    tenant: Uuid,
) -> Result<Option<EvaluationInputs>> {
    Ok(crate::db::query_as(
        "SELECT d.content AS draft, coalesce(b.data->'analysis', '{}'::jsonb) AS brand_voice,
                coalesce(p.settings->'banned_phrases', '[]'::jsonb) AS banned_phrases
         FROM artifacts d
         LEFT JOIN artifacts b ON b.id = $2 AND b.tenant_id = $3
         LEFT JOIN projects p ON p.id = d.project_id
         WHERE d.id = $1 AND d.tenant_id = $3",
    )
    .bind(draft)
    .bind(brand_voice)
    .bind(tenant)
    .fetch_optional(db)
    .await?)
}

/// An artifact about to be published, with whether a person (or the configuration)
/// approved it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Publishable {
    pub id: Uuid,
    pub kind: ArtifactKind,
    pub channel: Option<Channel>,
    pub title: Option<String>,
    pub content: String,
    pub project_id: Option<Uuid>,
    pub tenant_id: Uuid,
    pub approved: bool,
}

pub async fn publishable(db: impl PgExecutor<'_>, id: Uuid) -> Result<Publishable> {
    crate::db::query_as(
        "SELECT a.id, a.kind, a.channel, a.title, a.content, a.project_id, a.tenant_id,
                EXISTS (SELECT 1 FROM approvals p WHERE p.artifact_id = a.id AND p.status = 'approved') AS approved
         FROM artifacts a WHERE a.id = $1",
    )
    .bind(id)
    .fetch_optional(db)
    .await?
    .ok_or(Error::NotFound {
        what: "artifact",
        id,
    })
}

/// The URLs of `artifact`'s publications to `integration`, oldest first.
pub async fn publications(
    db: impl PgExecutor<'_>,
    artifact: Uuid,
    integration: Uuid,
) -> Result<Vec<String>> {
    Ok(crate::db::query_scalar(
        "SELECT content FROM artifacts WHERE kind = 'publication' AND based_on_id = $1
           AND data->>'integration_id' = $2::text ORDER BY created_at",
    )
    .bind(artifact)
    .bind(integration)
    .fetch_all(db)
    .await?)
}

/// A person's edit of a draft as a new `human` version based on it. Returns its id and
/// tenant (the draft's).
pub async fn insert_human_version(
    conn: &mut PgConnection,
    draft: Uuid,
    content: &str,
    by: &str,
) -> Result<(Uuid, Uuid)> {
    // No row lock: a tenant session (the API's) may not lock artifacts. Two edits of
    // one draft at once make two versions based on it; the pending approval moves to
    // the first.
    let kind: Option<ArtifactKind> =
        crate::db::query_scalar("SELECT kind FROM artifacts WHERE id = $1")
            .bind(draft)
            .fetch_optional(&mut *conn)
            .await?;
    match kind {
        None => {
            return Err(Error::NotFound {
                what: "artifact",
                id: draft,
            });
        }
        Some(ArtifactKind::Draft) => {}
        Some(other) => {
            return Err(Error::Invalid(format!(
                "artifact {draft} is a {other}, not a draft"
            )));
        }
    }
    Ok(crate::db::query_as(
        "INSERT INTO artifacts (tenant_id, project_id, job_id, kind, channel, version, based_on_id, source,
                                title, content, data)
         SELECT tenant_id, project_id, job_id, 'draft', channel, version + 1, id, 'human', title, $2,
                data || jsonb_build_object('edited_by', $3::text)
         FROM artifacts WHERE id = $1
         RETURNING id, tenant_id",
    )
    .bind(draft)
    .bind(content)
    .bind(by)
    .fetch_one(&mut *conn)
    .await?)
}

/// One full-text search hit.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Hit {
    pub id: Uuid,
    pub project_id: Option<Uuid>,
    pub kind: ArtifactKind,
    pub channel: Option<Channel>,
    pub version: i32,
    pub title: Option<String>,
    pub snippet: String,
    pub rank: f32,
}

/// Searches artifacts' titles and contents (web-search syntax: words, "phrases", -not).
pub async fn search(
    db: impl PgExecutor<'_>,
    words: &str,
    project: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Hit>> {
    Ok(crate::db::query_as(
        "SELECT a.id, a.project_id, a.kind, a.channel, a.version, a.title,
                ts_headline('english', a.content, q, 'MaxFragments=1, MaxWords=18, MinWords=6') AS snippet,
                ts_rank(a.search, q) AS rank
         FROM artifacts a, websearch_to_tsquery('english', $1) q
         WHERE a.search @@ q AND ($2::uuid IS NULL OR a.project_id = $2)
         ORDER BY rank DESC, a.created_at DESC LIMIT $3",
    )
    .bind(words)
    .bind(project)
    .bind(limit)
    .fetch_all(db)
    .await?)
}

/// The newest draft of each channel of a project.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct LatestDraft {
    pub id: Uuid,
    pub channel: Channel,
    pub version: i32,
    pub source: ArtifactSource,
    pub title: Option<String>,
    pub content: String,
}

pub async fn latest_drafts(pool: &Db, project: Uuid) -> Result<Vec<LatestDraft>> {
    Ok(crate::db::query_as(
        "SELECT DISTINCT ON (channel) id, channel, version, source, title, content FROM artifacts
         WHERE project_id = $1 AND kind = 'draft' ORDER BY channel, created_at DESC, id DESC",
    )
    .bind(project)
    .fetch_all(pool)
    .await?)
}
