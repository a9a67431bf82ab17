//! What follows each step of the pipeline. Each function runs its kind's handler
//! (`jobs::<kind>::run`), then turns what the step produced into the job's finish: the
//! artifact, and the approval or the next jobs, all written in the finish transaction
//! (`Effects`), so a step's results and what follows commit together or not at all.

use std::sync::Arc;

use copydesk_queue::{Effects, JobError, NewJob, Outcome};
use serde_json::json;
use uuid::Uuid;

use super::{
    Plan,
    publication::{self, PublicationRequest},
};
use crate::{
    jobs::{
        Ctx,
        brand_voice_analysis::{self, Analysed, BrandVoiceArgs},
        draft_generation::{self, DraftArgs, Drafted},
        evaluation::{self, Evaluated, EvaluationArgs, EvaluationOutput},
    },
    store::{self, artifacts::NewArtifact, jobs::NewJobExt},
};

/// `brand_voice_analysis` done: the analysis waits for approval
/// (`[pipeline] approve_brand_voice`), or its plan's drafts follow at once.
pub async fn brand_voice_analysis(ctx: Ctx, args: BrandVoiceArgs) -> Result<Outcome, JobError> {
    let Analysed {
        artifact,
        cache,
        output,
    } = brand_voice_analysis::run(&ctx, &args).await?;
    let approve = ctx.app.settings.pipeline.approve_brand_voice;
    let (job_id, project, tenant) = (ctx.job.id, ctx.job.project_id, ctx.job.tenant_id);
    let follow_ups = match (&args.pipeline, approve) {
        (Some(plan), false) => drafts_for(plan, artifact.id, project, Some(job_id)),
        _ => Vec::new(),
    };
    let catalog = ctx.catalog.clone();
    let effects: Effects = Arc::new(move |conn| {
        let (a, cache, follow_ups, catalog) = (
            artifact.clone(),
            cache.clone(),
            follow_ups.clone(),
            catalog.clone(),
        );
        Box::pin(async move {
            record(&mut *conn, job_id, &a).await?;
            if let Some((url, analysis)) = &cache {
                store::caches::put_brand_voice(&mut *conn, tenant, url, analysis, a.id).await?;
            }
            if approve {
                store::approvals::create_pending(&mut *conn, job_id, a.id).await?;
            }
            copydesk_queue::enqueue_many(conn, &catalog, &follow_ups).await?;
            Ok(())
        })
    });
    Ok(Outcome::done_with(json!(output))
        .with_effects(effects)
        .waiting_if(approve))
}

/// `draft_generation` done: the draft is evaluated next.
pub async fn draft_generation(ctx: Ctx, args: DraftArgs) -> Result<Outcome, JobError> {
    let Drafted { artifact, output } = draft_generation::run(&ctx, &args).await?;
    let eval = NewJob::of(&EvaluationArgs {
        draft_artifact_id: artifact.id,
        channel: args.channel,
        brand_voice_artifact_id: args.brand_voice_artifact_id,
        iteration: args.iteration,
        topic: args.topic.clone(),
        instructions: args.instructions.clone(),
        schedule: args.schedule,
    })
    .project(ctx.job.project_id)
    .parent(ctx.job.id)
    .input_artifact(artifact.id);
    let (job_id, catalog) = (ctx.job.id, ctx.catalog.clone());
    let effects: Effects = Arc::new(move |conn| {
        let (a, eval, catalog) = (artifact.clone(), eval.clone(), catalog.clone());
        Box::pin(async move {
            record(&mut *conn, job_id, &a).await?;
            copydesk_queue::enqueue(conn, &catalog, &eval).await?;
            Ok(())
        })
    });
    Ok(Outcome::done_with(json!(output)).with_effects(effects))
}

/// `evaluation` done: below `[pipeline] pass_score` with iterations left, a rewrite
/// with the feedback; otherwise the draft waits for approval (`[pipeline]
/// approve_drafts`), or the configuration approves it and its publication is requested.
pub async fn evaluation(ctx: Ctx, args: EvaluationArgs) -> Result<Outcome, JobError> {
    let Evaluated {
        artifact,
        overall,
        passed,
        feedback,
    } = evaluation::run(&ctx, &args).await?;
    let cfg = &ctx.app.settings.pipeline;
    let rewrite = !passed && args.iteration < cfg.max_iterations;
    let approve = !rewrite && cfg.approve_drafts;
    let (job_id, project, draft) = (ctx.job.id, ctx.job.project_id, args.draft_artifact_id);
    let follow_up = rewrite.then(|| rewrite_job(&args, feedback.clone(), project, job_id));
    let publishing = (!rewrite && !approve).then_some(PublicationRequest {
        artifact: draft,
        integration: None,
        at: args.schedule,
        again: false,
        parent: Some(job_id),
        by: None,
    });
    let facebook_min = ctx.app.settings.publish.facebook_min_schedule_minutes;
    let output = EvaluationOutput {
        artifact_id: artifact.id,
        overall,
        passed,
        rewrite,
    };
    let catalog = ctx.catalog.clone();
    let effects: Effects = Arc::new(move |conn| {
        let (e, follow_up, publishing, catalog) = (
            artifact.clone(),
            follow_up.clone(),
            publishing.clone(),
            catalog.clone(),
        );
        Box::pin(async move {
            record(&mut *conn, job_id, &e).await?;
            if approve {
                store::approvals::create_pending(&mut *conn, job_id, draft).await?;
            }
            if let Some(job) = follow_up {
                copydesk_queue::enqueue(&mut *conn, &catalog, &job).await?;
            }
            if let Some(request) = publishing {
                // `approve_drafts = false`: the configuration is the approval, recorded
                // as one so publishing's "approved artifacts only" rule still holds.
                store::approvals::create_approved(
                    &mut *conn,
                    job_id,
                    draft,
                    "copydesk",
                    "[pipeline] approve_drafts = false",
                )
                .await?;
                publication::request(conn, &catalog, facebook_min, &request).await?;
            }
            Ok(())
        })
    });
    Ok(Outcome::done_with(json!(output))
        .with_effects(effects)
        .waiting_if(approve))
}

/// The step's artifact, and the job pointing at it.
async fn record(
    conn: &mut sqlx::PgConnection,
    job: Uuid,
    artifact: &NewArtifact,
) -> Result<(), copydesk_queue::Error> {
    store::artifacts::insert(&mut *conn, artifact).await?;
    store::jobs::set_output_artifact(&mut *conn, job, artifact.id).await?;
    Ok(())
}

/// One `draft_generation` per channel of `plan`, from an approved brand voice.
pub fn drafts_for(
    plan: &Plan,
    brand_voice: Uuid,
    project: Option<Uuid>,
    parent: Option<Uuid>,
) -> Vec<NewJob> {
    plan.channels
        .iter()
        .map(|c| {
            NewJob::of(&DraftArgs {
                channel: *c,
                brand_voice_artifact_id: brand_voice,
                topic: plan.topic.clone(),
                instructions: plan.instructions.clone(),
                catalog_item_ids: Vec::new(),
                feedback: Vec::new(),
                based_on: None,
                iteration: 1,
                schedule: plan.schedule,
            })
            .project(project)
            .parent(parent)
            .input_artifact(brand_voice)
        })
        .collect()
}

/// A rewrite of an evaluated draft with `feedback` (the reviewer's, or a person's
/// rejection notes).
pub fn rewrite_job(
    eval: &EvaluationArgs,
    feedback: Vec<String>,
    project: Option<Uuid>,
    parent: Uuid,
) -> NewJob {
    NewJob::of(&DraftArgs {
        channel: eval.channel,
        brand_voice_artifact_id: eval.brand_voice_artifact_id,
        topic: eval.topic.clone(),
        instructions: eval.instructions.clone(),
        catalog_item_ids: Vec::new(),
        feedback,
        based_on: Some(eval.draft_artifact_id),
        iteration: eval.iteration + 1,
        schedule: eval.schedule,
    })
    .project(project)
    .parent(parent)
    .input_artifact(eval.draft_artifact_id)
}
