//! `agent_model_configs`: each agent's model, temperature and max_tokens, read at every
//! call (so an operator's UPDATE takes effect on the next call).

use serde::Serialize;
use sqlx::PgExecutor;
use uuid::Uuid;

use super::Result;

/// One agent's model settings.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct AgentConfig {
    pub agent_id: String,
    pub agent_label: String,
    pub model_id: String,
    pub temperature: f32,
    pub max_tokens: i32,
    /// Models tried in order when `model_id` is down, overloaded or unknown.
    pub fallback_model_ids: Vec<String>,
}

/// The agent's settings for `tenant`: the tenant's own row if it has one, else the
/// global row (`tenant_id IS NULL`), else none.
pub async fn get(
    db: impl PgExecutor<'_>,
    agent: &str,
    tenant: Option<Uuid>,
) -> Result<Option<AgentConfig>> {
    Ok(crate::db::query_as(
        "SELECT agent_id, agent_label, model_id, temperature, max_tokens, fallback_model_ids
         FROM agent_model_configs
         WHERE agent_id = $1 AND (tenant_id IS NULL OR tenant_id = $2)
         ORDER BY tenant_id NULLS LAST LIMIT 1",
    )
    .bind(agent)
    .bind(tenant)
    .fetch_optional(db)
    .await?)
}
