//! Which step follows which, and approvals. The pure rules (channels, limits, what a
//! decision leads to) plus the transactions that apply them.
//!
//! ```mermaid
//! stateDiagram-v2
//!     [*] --> pending: a step ends needing a person (job needs_approval)
//!     pending --> approved: approve (CLI, or any UPDATE)
//!     pending --> rejected: reject with notes
//!     approved --> applied: a worker applies it once (follow-up jobs, job done)
//!     rejected --> applied: a rewrite with the notes, or the channel ends rejected
//! ```

pub mod approvals;
pub mod status;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

/// What a draft is written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Blog,
    Linkedin,
    X,
    Facebook,
}

impl Channel {
    pub const ALL: [Channel; 4] = [
        Channel::Blog,
        Channel::Linkedin,
        Channel::X,
        Channel::Facebook,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Blog => "blog",
            Channel::Linkedin => "linkedin",
            Channel::X => "x",
            Channel::Facebook => "facebook",
        }
    }

    /// The most characters a post may have (`None`: no limit).
    pub fn max_chars(self) -> Option<usize> {
        match self {
            Channel::Blog => None,
            Channel::Linkedin => Some(3000),
            Channel::X => Some(280),
            Channel::Facebook => Some(63_206),
        }
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| format!("unknown channel {s:?}: expected blog, linkedin, x or facebook"))
    }
}

/// What the pipeline was asked for; carried from step to step in job inputs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub channels: Vec<Channel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
    /// When approved drafts are published (now when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<DateTime<Utc>>,
}

/// An artifact to write in a step's finish transaction.
#[derive(Debug, Clone)]
pub struct NewArtifact {
    pub id: Uuid,
    pub project_id: Option<Uuid>,
    pub job_id: Uuid,
    pub kind: &'static str,
    pub channel: Option<Channel>,
    pub based_on_id: Option<Uuid>,
    pub source: &'static str,
    pub title: Option<String>,
    pub content: String,
    pub data: Value,
}

/// Inserts an artifact; its version is one more than the one it is based on.
pub async fn artifact_insert(conn: &mut PgConnection, a: &NewArtifact) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO artifacts (id, project_id, job_id, kind, channel, version, based_on_id, source, title, content, data)
         VALUES ($1, $2, $3, $4, $5,
                 coalesce((SELECT version + 1 FROM artifacts WHERE id = $6), 1),
                 $6, $7, $8, $9, $10)",
    )
    .bind(a.id)
    .bind(a.project_id)
    .bind(a.job_id)
    .bind(a.kind)
    .bind(a.channel.map(Channel::as_str))
    .bind(a.based_on_id)
    .bind(a.source)
    .bind(&a.title)
    .bind(&a.content)
    .bind(&a.data)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Points a job's `output_artifact_id` at what it produced (inside its finish).
pub async fn job_set_output(
    conn: &mut PgConnection,
    job: Uuid,
    artifact: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE jobs SET output_artifact_id = $2 WHERE id = $1")
        .bind(job)
        .bind(artifact)
        .execute(conn)
        .await?;
    Ok(())
}

/// A pending approval of `artifact` for `job`.
pub async fn approval_create(
    conn: &mut PgConnection,
    job: Uuid,
    artifact: Uuid,
) -> Result<Uuid, sqlx::Error> {
    sqlx::query_scalar("INSERT INTO approvals (job_id, artifact_id) VALUES ($1, $2) RETURNING id")
        .bind(job)
        .bind(artifact)
        .fetch_one(conn)
        .await
}

/// Fills `{{name}}` placeholders from a JSON object (strings as they are, anything
/// else as JSON). Unknown placeholders are left as they are.
pub fn render(template: &str, vars: &Value) -> String {
    let mut out = template.to_owned();
    if let Some(map) = vars.as_object() {
        for (k, v) in map {
            let text = match v {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => serde_json::to_string_pretty(other).unwrap_or_default(),
            };
            out = out.replace(&format!("{{{{{k}}}}}"), &text);
        }
    }
    out
}

/// One draft_generation job per channel of `plan`, from an approved brand voice.
pub fn drafts_for(
    plan: &Plan,
    brand_voice: Uuid,
    project: Option<Uuid>,
    parent: Option<Uuid>,
) -> Vec<crate::queue::NewJob> {
    plan.channels
        .iter()
        .map(|c| {
            let mut input = serde_json::json!({
                "channel": c.as_str(),
                "brand_voice_artifact_id": brand_voice,
                "iteration": 1,
            });
            if let Some(t) = &plan.topic {
                input["topic"] = Value::String(t.clone());
            }
            if let Some(i) = &plan.instructions {
                input["instructions"] = Value::String(i.clone());
            }
            if let Some(s) = &plan.schedule {
                input["schedule"] = Value::String(s.to_rfc3339());
            }
            job_with(
                crate::queue::NewJob::new("draft_generation", input),
                project,
                parent,
            )
        })
        .collect()
}

/// A rewrite of a draft with feedback, from an evaluation job's input.
pub fn rewrite_job(
    eval_input: &Value,
    draft: Uuid,
    feedback: Vec<String>,
    iteration: i64,
    project: Option<Uuid>,
    parent: Option<Uuid>,
) -> crate::queue::NewJob {
    let mut input = serde_json::json!({
        "channel": eval_input["channel"],
        "brand_voice_artifact_id": eval_input["brand_voice_artifact_id"],
        "based_on": draft,
        "feedback": feedback,
        "iteration": iteration,
    });
    for k in ["topic", "instructions", "schedule"] {
        if let Some(v) = eval_input.get(k).filter(|v| !v.is_null()) {
            input[k] = v.clone();
        }
    }
    job_with(
        crate::queue::NewJob::new("draft_generation", input),
        project,
        parent,
    )
}

/// The publishing job of an approved draft to `integration`, scheduled as the
/// platform allows (see [`crate::publish::integrations::schedule`]). Without an
/// integration the job still goes in and fails naming the missing integration, so an
/// approved draft never disappears silently.
pub fn publishing_job(
    eval_input: &Value,
    draft: Uuid,
    integration: Option<(Uuid, crate::publish::Platform)>,
    facebook_min_minutes: i64,
    project: Option<Uuid>,
    parent: Option<Uuid>,
) -> crate::queue::NewJob {
    let at = eval_input["schedule"]
        .as_str()
        .and_then(|s| s.parse::<DateTime<Utc>>().ok());
    let mut input = serde_json::json!({"artifact_id": draft, "channel": eval_input["channel"]});
    let (mut run_at, mut publish_at) = (at, None);
    if let Some((id, platform)) = integration {
        input["integration_id"] = serde_json::json!(id);
        (run_at, publish_at) =
            crate::publish::integrations::schedule(platform, at, Utc::now(), facebook_min_minutes);
    }
    if let Some(p) = publish_at {
        input["publish_at"] = Value::String(p.to_rfc3339());
    }
    let mut job =
        crate::queue::NewJob::new("publishing", input).idempotency_key(format!("publish:{draft}"));
    if let Some(at) = run_at {
        job = job.run_at(at);
    }
    job_with(job, project, parent)
}

fn job_with(
    mut job: crate::queue::NewJob,
    project: Option<Uuid>,
    parent: Option<Uuid>,
) -> crate::queue::NewJob {
    job.project_id = project;
    job.parent_id = parent;
    job
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn render_fills_placeholders() {
        let t = "Write about {{topic}} for {{channel}}. Voice: {{voice}}";
        let out = render(
            t,
            &json!({"topic": "linen", "channel": "x", "voice": {"tone": ["warm"]}}),
        );
        assert!(out.starts_with("Write about linen for x. Voice: {"));
        assert!(out.contains("warm"));
    }

    #[test]
    fn plan_round_trips_the_stored_example() {
        let stored =
            r#"{"channels":["blog","x"],"topic":"Linen","schedule":"2026-12-01T09:00:00Z"}"#;
        let plan: Plan = serde_json::from_str(stored).unwrap();
        assert_eq!(plan.channels, vec![Channel::Blog, Channel::X]);
        assert_eq!(serde_json::to_string(&plan).unwrap(), stored);
    }
}
