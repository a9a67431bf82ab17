//! `copydesk demo`: the content pipeline end to end on the embedded Postgres with no
//! configuration and no key. A sample store page is served on loopback; the offline
//! provider writes unless a key is configured; every step is shown as it happens; the
//! demo approves as `demo`; it ends with the drafts, their scores and a cost table.
//! `copydesk demo --noop N` runs a plain queue workload instead.

mod noop;

use std::{
    collections::BTreeMap,
    io::Write,
    sync::Arc,
    time::{Duration, Instant},
};

use clap::Args;
use serde_json::json;
use uuid::Uuid;

use super::Env;
use crate::{
    jobs::Registry,
    pipeline::{approvals, status},
    queue::{
        self, NewJob,
        runner::{Runner, Services},
        worker::{WorkerOptions, run as run_worker},
    },
};

const STORE_PAGE: &str = include_str!("store.html");

/// A job of the demo's project, as the progress display reads it.
#[derive(sqlx::FromRow)]
struct StepRow {
    id: Uuid,
    kind: String,
    status: String,
    channel: Option<String>,
    last_error: Option<String>,
    output: Option<serde_json::Value>,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Run N plain noop jobs instead of the content pipeline (a queue workout).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub noop: Option<u32>,
}

pub async fn run(args: DemoArgs, out: &mut (dyn Write + Send)) -> anyhow::Result<()> {
    let env = Env::open().await?;
    match &env.db.cluster {
        Some(c) => writeln!(out, "postgres: embedded cluster, {}", c.url("copydesk"))?,
        None => writeln!(out, "postgres: DATABASE_URL")?,
    }
    let applied = crate::db::migrate(&env.db.pool).await?;
    writeln!(out, "migrations: {applied} applied, schema current")?;
    let result = match args.noop {
        Some(n) => noop::run(n, &env, out).await,
        None => pipeline(&env, out).await,
    };
    env.db.pool.close().await;
    result
}

async fn pipeline(env: &Env, out: &mut (dyn Write + Send)) -> anyhow::Result<()> {
    let pool = env.db.pool.clone();
    // The sample store, on loopback; the demo alone allows fetching loopback.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let store_url = format!("http://{}/", listener.local_addr()?);
    let store = tokio::spawn(async move {
        let app = axum::Router::new().route(
            "/",
            axum::routing::get(|| async { axum::response::Html(STORE_PAGE) }),
        );
        axum::serve(listener, app).await
    });
    let mut settings = (*env.settings).clone();
    settings.fetch.allow_loopback = true;
    let services = Services::from_settings(&settings).map_err(anyhow::Error::msg)?;
    let provider = services.llm.provider.label().to_owned();
    writeln!(
        out,
        "model provider: {provider}{}",
        if provider == crate::llm::OFFLINE {
            " (deterministic text, no model, no key: set COPYDESK_LLM_API_KEY or OPENROUTER_API_KEY for a real one)"
        } else {
            ""
        }
    )?;
    let runner = Runner {
        pool: pool.clone(),
        settings: Arc::new(settings),
        registry: Registry::builtin(),
        services: Arc::new(services),
    };

    let mut tx = pool.begin().await?;
    let project: Uuid = sqlx::query_scalar(
        "INSERT INTO projects (name, store_url) VALUES ('Linen & Loom (demo)', $1) RETURNING id",
    )
    .bind(&store_url)
    .fetch_one(&mut *tx)
    .await?;
    let start = NewJob::new(
        "brand_voice_analysis",
        json!({"store_url": store_url, "pipeline": {
            "channels": ["blog", "linkedin", "x"], "topic": "Why our linen lasts a decade"}}),
    )
    .project(project);
    queue::enqueue(&mut tx, &start).await?;
    tx.commit().await?;
    writeln!(
        out,
        "project {project}: store page at {store_url}, channels blog, linkedin, x\n"
    )?;

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(run_worker(runner, WorkerOptions::default(), async move {
        let _ = stop_rx.await;
    }));

    let started = Instant::now();
    let deadline = started + Duration::from_secs(300);
    let mut seen: BTreeMap<Uuid, String> = BTreeMap::new();
    let mut approved: Vec<Uuid> = Vec::new();
    loop {
        // Show every job's new state as it happens.
        let jobs: Vec<StepRow> = sqlx::query_as(
            "SELECT id, kind, status, input->>'channel' AS channel, last_error, output FROM jobs
             WHERE project_id = $1 ORDER BY created_at, id",
        )
        .bind(project)
        .fetch_all(&pool)
        .await?;
        for StepRow {
            id,
            kind,
            status,
            channel,
            last_error: error,
            output,
        } in &jobs
        {
            if seen.get(id) == Some(status) || status == "queued" {
                continue;
            }
            seen.insert(*id, status.clone());
            let what = match (kind.as_str(), output) {
                ("evaluation", Some(o)) => format!(
                    "score {}/100{}",
                    o["overall"],
                    if o["rewrite"] == true {
                        ", rewriting with the reviewer's feedback"
                    } else {
                        ""
                    }
                ),
                ("brand_voice_analysis", Some(o)) if o["from_cache"] == true => {
                    "from the 7-day cache".into()
                }
                _ => error.clone().unwrap_or_default(),
            };
            writeln!(
                out,
                "[{:>5.1}s] {:<21} {:<9} {:<15} {what}",
                started.elapsed().as_secs_f64(),
                kind,
                channel.as_deref().unwrap_or(""),
                status
            )?;
        }
        // Approve what waits, as a person would.
        for a in approvals::list(&pool, Some("pending"), 50).await? {
            let belongs: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM jobs WHERE id = $1 AND project_id = $2)",
            )
            .bind(a.job_id)
            .bind(project)
            .fetch_one(&pool)
            .await?;
            if belongs && !approved.contains(&a.id) {
                approvals::decide(&pool, a.id, true, "demo", Some("looks good")).await?;
                approved.push(a.id);
                writeln!(
                    out,
                    "[{:>5.1}s] approval {} approved by demo",
                    started.elapsed().as_secs_f64(),
                    a.id
                )?;
            }
        }
        let open = jobs
            .iter()
            .any(|j| matches!(j.status.as_str(), "queued" | "running" | "needs_approval"));
        let published = jobs
            .iter()
            .filter(|j| {
                j.kind == "publishing" && !matches!(j.status.as_str(), "queued" | "running")
            })
            .count();
        if !open && published == 3 {
            break;
        }
        if Instant::now() > deadline {
            anyhow::bail!("the demo pipeline did not finish within 5 minutes");
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let _ = stop_tx.send(());
    worker.await??;
    store.abort();

    writeln!(
        out,
        "\nPublishing destinations (WordPress, Shopify, LinkedIn, X, Facebook) are not built yet, so each\n\
         approved draft's publishing job fails with \"no integration\" instead of being skipped.\n"
    )?;
    let drafts: Vec<(String, i32, String, String)> = sqlx::query_as(
        "SELECT DISTINCT ON (channel) channel, version, source, content FROM artifacts
         WHERE project_id = $1 AND kind = 'draft' ORDER BY channel, created_at DESC",
    )
    .bind(project)
    .fetch_all(&pool)
    .await?;
    for (channel, version, source, content) in drafts {
        writeln!(
            out,
            "── {channel} draft v{version} ({source}) ──\n{}\n",
            content.trim()
        )?;
    }
    super::approvals::write_status(out, &status::show(&pool, project).await?)?;
    writeln!(
        out,
        "\nnext: `copydesk pipeline show {project}`, `copydesk approvals list`, `copydesk artifacts search linen`"
    )?;
    Ok(())
}
