//! What model servers taught copydesk, shared by every process: the strongest
//! structured mode a server accepted for a model (`llm_modes`), and models that keep
//! failing (`llm_model_health`), skipped by every job until their cooldown ends.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use super::Result;
use crate::domain::{Dialect, StructuredMode};

/// What was learned of a model on a server: the structured mode, when, and the
/// server's dialect (`None`: not recorded, or one this release does not know).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Learned {
    pub mode: StructuredMode,
    pub at: DateTime<Utc>,
    pub dialect: Option<Dialect>,
}

/// The mode learned for a model on a server, and when.
pub async fn mode(db: impl PgExecutor<'_>, base_url: &str, model: &str) -> Result<Option<Learned>> {
    let row: Option<(StructuredMode, DateTime<Utc>, Option<String>)> = crate::db::query_as(
        "SELECT mode, learned_at, dialect FROM llm_modes WHERE base_url = $1 AND model = $2",
    )
    .bind(base_url)
    .bind(model)
    .fetch_optional(db)
    .await?;
    Ok(row.map(|(mode, at, dialect)| Learned {
        mode,
        at,
        dialect: dialect.and_then(|d| d.parse().ok()),
    }))
}

/// The dialect some model on `base_url` was found to speak, most recently learned.
pub async fn dialect(db: impl PgExecutor<'_>, base_url: &str) -> Result<Option<Dialect>> {
    let found: Option<String> = crate::db::query_scalar(
        "SELECT dialect FROM llm_modes WHERE base_url = $1 AND dialect IS NOT NULL
         ORDER BY learned_at DESC LIMIT 1",
    )
    .bind(base_url)
    .fetch_optional(db)
    .await?;
    Ok(found.and_then(|d| d.parse().ok()))
}

/// Remembers the mode that worked (or the one stepped down to), and the dialect.
pub async fn set_mode(
    db: impl PgExecutor<'_>,
    base_url: &str,
    model: &str,
    mode: StructuredMode,
    dialect: Dialect,
) -> Result<()> {
    crate::db::query(
        "INSERT INTO llm_modes (base_url, model, mode, dialect) VALUES ($1, $2, $3, $4)
         ON CONFLICT (base_url, model) DO UPDATE
         SET mode = excluded.mode, dialect = excluded.dialect, learned_at = now()",
    )
    .bind(base_url)
    .bind(model)
    .bind(mode)
    .bind(dialect)
    .execute(db)
    .await?;
    Ok(())
}

/// One row of `llm_modes`, as `copydesk models list` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LearnedMode {
    pub base_url: String,
    pub model: String,
    pub mode: StructuredMode,
    /// `None`: not recorded, or one this release does not know.
    pub dialect: Option<Dialect>,
    pub learned_at: DateTime<Utc>,
}

/// A row of `llm_modes` as read: base URL, model, mode, when, dialect.
type LearnedRow = (
    String,
    String,
    StructuredMode,
    DateTime<Utc>,
    Option<String>,
);

/// Every learned mode, by server and model (for `copydesk models list`).
pub async fn learned(db: impl PgExecutor<'_>) -> Result<Vec<LearnedMode>> {
    let rows: Vec<LearnedRow> = crate::db::query_as(
        "SELECT base_url, model, mode, learned_at, dialect FROM llm_modes ORDER BY base_url, model",
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(base_url, model, mode, learned_at, dialect)| LearnedMode {
            base_url,
            model,
            mode,
            dialect: dialect.and_then(|d| d.parse().ok()),
            learned_at,
        })
        .collect())
}

/// The models of `models` that are cooling down on `base_url`, with when they end.
pub async fn cooldowns(
    db: impl PgExecutor<'_>,
    base_url: &str,
    models: &[String],
) -> Result<HashMap<String, DateTime<Utc>>> {
    Ok(crate::db::query_as::<(String, DateTime<Utc>)>(
        "SELECT model, cooldown_until FROM llm_model_health
         WHERE base_url = $1 AND model = ANY($2) AND cooldown_until > now()",
    )
    .bind(base_url)
    .bind(models)
    .fetch_all(db)
    .await?
    .into_iter()
    .collect())
}

/// Counts a failure of `model`; at `threshold` failures in a row it cools down for
/// `cooldown_secs` (and the count starts again). Returns the end of its cooldown, if it
/// is cooling down.
pub async fn record_failure(
    db: impl PgExecutor<'_>,
    base_url: &str,
    model: &str,
    error: &str,
    threshold: u32,
    cooldown_secs: u64,
) -> Result<Option<DateTime<Utc>>> {
    Ok(crate::db::query_scalar(
        "INSERT INTO llm_model_health AS h (base_url, model, failures, last_error, cooldown_until)
         VALUES ($1, $2, CASE WHEN 1 >= $4 THEN 0 ELSE 1 END, $3,
                 CASE WHEN 1 >= $4 THEN now() + $5 * interval '1 second' END)
         ON CONFLICT (base_url, model) DO UPDATE SET
             failures = CASE WHEN h.failures + 1 >= $4 THEN 0 ELSE h.failures + 1 END,
             cooldown_until = CASE WHEN h.failures + 1 >= $4 THEN now() + $5 * interval '1 second'
                                   ELSE h.cooldown_until END,
             last_error = excluded.last_error, updated_at = now()
         RETURNING CASE WHEN h.cooldown_until > now() THEN h.cooldown_until END",
    )
    .bind(base_url)
    .bind(model)
    .bind(error)
    .bind(threshold.max(1) as i32)
    .bind(cooldown_secs as i64)
    .fetch_one(db)
    .await?)
}

/// `model` answered: its failures count from zero again and any cooldown ends.
pub async fn record_success(db: impl PgExecutor<'_>, base_url: &str, model: &str) -> Result<()> {
    crate::db::query(
        "UPDATE llm_model_health SET failures = 0, cooldown_until = NULL, updated_at = now()
         WHERE base_url = $1 AND model = $2 AND (failures > 0 OR cooldown_until IS NOT NULL)",
    )
    .bind(base_url)
    .bind(model)
    .execute(db)
    .await?;
    Ok(())
}
