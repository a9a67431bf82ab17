//! `evaluation`: blog-reviewer scores a draft (platform_appropriateness,
//! style_consistency, clarity, engagement, grammar, overall; 0-100); deterministic checks
//! (length limits, the project's banned phrases) can only lower the result. Below
//! `[pipeline] pass_score` with iterations left, the draft is rewritten with the
//! feedback; otherwise it waits for approval (or goes straight to publishing).

use std::sync::{Arc, LazyLock};

use serde_json::{Value, json};
use uuid::Uuid;

use super::JobContext;
use crate::{
    llm::Call,
    pipeline::{self, Channel, NewArtifact},
    queue::{self, JobError, Outcome, ResultExt},
};

pub const KIND: &str = "evaluation";
pub const SCHEMA: &str = include_str!("../../jobs/evaluation/schema.json");
const SYSTEM: &str = include_str!("../../jobs/evaluation/reviewer.md");
const USER: &str = include_str!("../../jobs/evaluation/user.md");
const CRITERIA: [&str; 5] = [
    "platform_appropriateness",
    "style_consistency",
    "clarity",
    "engagement",
    "grammar",
];

static SCORES_SCHEMA: LazyLock<Value> = LazyLock::new(|| {
    let score = json!({"type": "integer", "minimum": 0, "maximum": 100});
    let mut props = serde_json::Map::new();
    for c in CRITERIA.iter().chain(&["overall"]) {
        props.insert((*c).into(), score.clone());
    }
    props.insert("feedback".into(), json!({"type": "string"}));
    let mut required: Vec<&str> = CRITERIA.to_vec();
    required.extend(["overall", "feedback"]);
    json!({"type": "object", "required": required, "properties": props, "additionalProperties": false})
});

/// Deterministic checks: each failed one caps the overall score and says why.
pub fn checks(channel: Channel, draft: &str, banned: &[String]) -> Vec<(i64, String)> {
    let mut found = Vec::new();
    let len = if channel == Channel::X {
        crate::publish::x::weighted_len(draft)
    } else {
        draft.chars().count()
    };
    if let Some(max) = channel.max_chars()
        && len > max
    {
        found.push((
            40,
            format!(
                "{len} characters, over the {} limit of {max}",
                channel.as_str()
            ),
        ));
    }
    if channel == Channel::Blog && !draft.lines().any(|l| l.starts_with('#')) {
        found.push((60, "a blog post needs Markdown headings".to_owned()));
    }
    let lower = draft.to_lowercase();
    for phrase in banned {
        if !phrase.is_empty() && lower.contains(&phrase.to_lowercase()) {
            found.push((50, format!("uses the banned phrase {phrase:?}")));
        }
    }
    found
}

pub async fn run(ctx: JobContext) -> Result<Outcome, JobError> {
    let input = ctx.job.input.clone();
    let channel = Channel::parse(input["channel"].as_str().unwrap_or_default())
        .map_err(JobError::permanent)?;
    let draft_id: Uuid = serde_json::from_value(input["draft_artifact_id"].clone()).permanent()?;
    let bv_id: Uuid =
        serde_json::from_value(input["brand_voice_artifact_id"].clone()).permanent()?;
    let (draft, brand_voice, banned): (String, Value, Value) = sqlx::query_as(
        "SELECT d.content, coalesce(b.data->'analysis', '{}'::jsonb),
                coalesce(p.settings->'banned_phrases', '[]'::jsonb)
         FROM artifacts d
         LEFT JOIN artifacts b ON b.id = $2
         LEFT JOIN projects p ON p.id = d.project_id
         WHERE d.id = $1",
    )
    .bind(draft_id)
    .bind(bv_id)
    .fetch_optional(&ctx.pool)
    .await
    .retryable()?
    .ok_or_else(|| JobError::permanent(format!("draft_artifact_id: no artifact {draft_id}")))?;
    let banned: Vec<String> = serde_json::from_value(banned).unwrap_or_default();
    let iteration = input["iteration"].as_i64().unwrap_or(1);
    let vars = json!({"channel": channel.as_str(), "brand_voice": brand_voice, "draft": draft, "iteration": iteration});
    let reply = ctx
        .services
        .llm
        .call(
            &ctx.llm_scope(),
            &Call {
                agent: "blog-reviewer".into(),
                system: pipeline::render(SYSTEM, &vars),
                user: pipeline::render(USER, &vars),
                schema: Some(("evaluation".into(), SCORES_SCHEMA.clone())),
                hints: vars.clone(),
            },
        )
        .await?;
    let mut scores = reply
        .json
        .ok_or_else(|| JobError::transient("blog-reviewer gave no structured answer"))?;
    let failed = checks(channel, &draft, &banned);
    let model_overall = scores["overall"].as_i64().unwrap_or(0);
    let overall = failed
        .iter()
        .map(|(cap, _)| *cap)
        .fold(model_overall, i64::min);
    scores["overall"] = json!(overall);
    scores["model_overall"] = json!(model_overall);
    scores["checks"] = json!(failed.iter().map(|(_, why)| why).collect::<Vec<_>>());
    let mut feedback = vec![scores["feedback"].as_str().unwrap_or_default().to_owned()];
    feedback.extend(failed.iter().map(|(_, why)| format!("Fix: {why}.")));
    feedback.retain(|f| !f.is_empty());

    let cfg = &ctx.settings.pipeline;
    let passed = overall >= cfg.pass_score;
    let evaluation = NewArtifact {
        id: Uuid::now_v7(),
        project_id: ctx.job.project_id,
        job_id: ctx.job.id,
        kind: "evaluation",
        channel: Some(channel),
        based_on_id: Some(draft_id),
        source: "ai",
        title: Some(format!(
            "Evaluation of {} draft, iteration {iteration}: {overall}/100",
            channel.as_str()
        )),
        content: feedback.join("\n"),
        data: json!({"scores": scores, "passed": passed, "iteration": iteration, "threshold": cfg.pass_score}),
    };
    let (job_id, project) = (ctx.job.id, ctx.job.project_id);
    let rewrite = !passed && iteration < cfg.max_iterations;
    let approve = !rewrite && cfg.approve_drafts;
    let follow_up = if rewrite {
        Some(pipeline::rewrite_job(
            &input,
            draft_id,
            feedback.clone(),
            iteration + 1,
            project,
            Some(job_id),
        ))
    } else if !approve {
        let integration = match project {
            Some(p) => crate::publish::integrations::for_channel(&ctx.pool, p, channel)
                .await
                .retryable()?,
            None => None,
        };
        Some(pipeline::publishing_job(
            &input,
            draft_id,
            integration,
            ctx.settings.publish.facebook_min_schedule_minutes,
            project,
            Some(job_id),
        ))
    } else {
        None
    };
    let output = Some(
        json!({"artifact_id": evaluation.id, "overall": overall, "passed": passed, "rewrite": rewrite}),
    );
    let effects: queue::Effects = Arc::new(move |conn| {
        let (e, follow_up) = (evaluation.clone(), follow_up.clone());
        Box::pin(async move {
            pipeline::artifact_insert(conn, &e).await?;
            pipeline::job_set_output(conn, job_id, e.id).await?;
            if approve {
                pipeline::approval_create(conn, job_id, draft_id).await?;
            } else if !rewrite {
                // `approve_drafts = false`: the configuration is the approval, recorded
                // as one so publishing's "approved artifacts only" rule still holds.
                sqlx::query(
                    "INSERT INTO approvals (job_id, artifact_id, status, decided_by, notes, decided_at, applied_at)
                     VALUES ($1, $2, 'approved', 'copydesk', '[pipeline] approve_drafts = false', now(), now())",
                )
                .bind(job_id)
                .bind(draft_id)
                .execute(&mut *conn)
                .await?;
            }
            if let Some(job) = follow_up {
                queue::enqueue(conn, &job).await?;
            }
            Ok(())
        })
    });
    tracing::info!(overall, passed, iteration, rewrite, "draft evaluated");
    Ok(if approve {
        Outcome::NeedsApproval {
            output,
            effects: Some(effects),
        }
    } else {
        Outcome::Done {
            output,
            effects: Some(effects),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_only_lower_and_say_why() {
        let found = checks(Channel::X, &"x".repeat(300), &["game-changer".into()]);
        assert_eq!(found.len(), 1);
        assert!(found[0].1.contains("280"));
        let found = checks(
            Channel::Linkedin,
            "A total Game-Changer.",
            &["game-changer".into()],
        );
        assert!(found[0].1.contains("banned phrase"));
        assert!(checks(Channel::Blog, "# Title\n\nBody", &[]).is_empty());
    }
}
