//! `evaluation`: blog-reviewer scores a draft (platform_appropriateness,
//! style_consistency, clarity, engagement, grammar, overall; 0-100); deterministic checks
//! (length limits, the project's banned phrases) can only lower the result, which
//! passes at `[pipeline] pass_score`. What follows (a rewrite with the feedback, an
//! approval, or publishing) is `pipeline`'s.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use copydesk_queue::{JobArgs, JobError, ResultExt};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use super::Ctx;
use crate::{
    domain::{ArtifactKind, ArtifactSource, Channel},
    llm::{Call, render},
    store::{self, artifacts::NewArtifact},
};

/// The input of an `evaluation` job: the draft, and what its rewrite or publication
/// needs carried along.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvaluationArgs {
    pub draft_artifact_id: Uuid,
    pub channel: Channel,
    pub brand_voice_artifact_id: Uuid,
    #[serde(default = "first_iteration")]
    pub iteration: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<DateTime<Utc>>,
}

fn first_iteration() -> i64 {
    1
}

impl JobArgs for EvaluationArgs {
    const KIND: &'static str = "evaluation";
    const SCHEMA: &'static str = include_str!("../../jobs/evaluation/schema.json");
}

/// The output of an `evaluation` job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvaluationOutput {
    pub artifact_id: Uuid,
    pub overall: i64,
    pub passed: bool,
    /// Whether the draft goes back to the writer (`pipeline` decides).
    pub rewrite: bool,
}

/// What the step produced.
#[derive(Debug, Clone)]
pub struct Evaluated {
    pub artifact: NewArtifact,
    pub overall: i64,
    pub passed: bool,
    /// The reviewer's feedback and the failed checks, for a rewrite.
    pub feedback: Vec<String>,
}
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

pub async fn run(ctx: &Ctx, args: &EvaluationArgs) -> Result<Evaluated, JobError> {
    let (channel, draft_id, iteration) = (args.channel, args.draft_artifact_id, args.iteration);
    let inputs = store::artifacts::evaluation_inputs(
        &ctx.pool,
        draft_id,
        args.brand_voice_artifact_id,
        ctx.job.tenant_id,
    )
    .await
    .retryable()?
    .ok_or_else(|| JobError::permanent(format!("draft_artifact_id: no artifact {draft_id}")))?;
    let banned: Vec<String> = serde_json::from_value(inputs.banned_phrases).unwrap_or_default();
    let draft = inputs.draft;
    let vars = json!({"channel": channel.as_str(), "brand_voice": inputs.brand_voice, "draft": draft, "iteration": iteration});
    let reply = ctx
        .app
        .llm
        .call(
            &super::llm_scope(ctx),
            &Call {
                agent: "blog-reviewer".into(),
                system: render(SYSTEM, &vars),
                user: render(USER, &vars),
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

    let pass_score = ctx.app.settings.pipeline.pass_score;
    let passed = overall >= pass_score;
    let artifact = NewArtifact {
        id: Uuid::now_v7(),
        project_id: ctx.job.project_id,
        job_id: Some(ctx.job.id),
        kind: ArtifactKind::Evaluation,
        channel: Some(channel),
        based_on_id: Some(draft_id),
        source: ArtifactSource::Ai,
        title: Some(format!(
            "Evaluation of {channel} draft, iteration {iteration}: {overall}/100"
        )),
        content: feedback.join("\n"),
        data: json!({"scores": scores, "passed": passed, "iteration": iteration,
                     "threshold": pass_score, "model": reply.model, "repairs": reply.notes}),
    };
    tracing::info!(overall, passed, iteration, "draft evaluated");
    Ok(Evaluated {
        artifact,
        overall,
        passed,
        feedback,
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
