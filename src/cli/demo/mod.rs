//! `copydesk demo`: the content pipeline end to end on the embedded Postgres with no
//! configuration and no key. A sample store page is served on loopback; the offline
//! provider writes unless a key is configured; every step is shown as it happens; the
//! demo approves as `demo`; approved drafts are published to local fakes of WordPress,
//! LinkedIn, X and Facebook that speak the real protocols (`publish::fake`); it ends
//! with the posts, the drafts, their scores and a cost table.
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
    keys::Keys,
    pipeline::{approvals, status},
    publish::{Platform, fake::FakePlatforms, integrations},
    queue::{
        self, NewJob,
        runner::{Runner, Services},
        worker::{WorkerOptions, run as run_worker},
    },
};

const STORE_PAGE: &str = include_str!("store.html");

/// Where the demo's approved drafts go (blog to WordPress).
const DESTINATIONS: [Platform; 4] = [
    Platform::Wordpress,
    Platform::Linkedin,
    Platform::X,
    Platform::Facebook,
];

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
    // The five platforms, faked on loopback, speaking their real protocols.
    let platforms = FakePlatforms::start().await?;
    let mut settings = (*env.settings).clone();
    settings.fetch.allow_loopback = true;
    let mut services = Services::from_settings(&settings).map_err(anyhow::Error::msg)?;
    // Credentials are stored encrypted; without COPYDESK_FERNET_KEYS the demo uses a
    // key of its own for this run only.
    let ephemeral = services.keys.is_err();
    let keys = match &services.keys {
        Ok(k) => k.clone(),
        Err(_) => {
            writeln!(
                out,
                "credentials: COPYDESK_FERNET_KEYS is not set, so this run encrypts them with a key of its own"
            )?;
            Arc::new(Keys::parse(&Keys::generate())?)
        }
    };
    services.keys = Ok(keys.clone());
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
            "channels": ["blog", "linkedin", "x", "facebook"], "topic": "Why our linen lasts a decade"}}),
    )
    .project(project);
    queue::enqueue(&mut tx, &start).await?;
    tx.commit().await?;
    for platform in DESTINATIONS {
        let (creds, metadata) = platforms.integration(platform);
        integrations::set(&pool, &keys, project, platform, &creds, &metadata).await?;
    }
    writeln!(
        out,
        "project {project}: store page at {store_url}, channels blog, linkedin, x, facebook\n\
         destinations: local WordPress, LinkedIn, X and Facebook on {} (real protocols, nothing leaves this machine)\n",
        platforms.addr
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
                ("publishing", Some(o)) => format!(
                    "{} {} ({})",
                    o["platform"].as_str().unwrap_or_default(),
                    o["url"].as_str().unwrap_or_default(),
                    o["how"].as_str().unwrap_or_default()
                ),
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
        if !open && published == DESTINATIONS.len() {
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

    let posts = platforms.posts();
    writeln!(out, "\nthe fake platforms hold {} post(s):", posts.len())?;
    for p in &posts {
        let first: String = p
            .text
            .lines()
            .next()
            .unwrap_or_default()
            .chars()
            .take(60)
            .collect();
        writeln!(
            out,
            "  {:<9} id {:<24} {:<10} {first}",
            p.platform.as_str(),
            p.id,
            p.status
        )?;
    }
    writeln!(out)?;
    drop(platforms);
    // The fakes are gone with this process: say so rather than leave integrations that
    // look usable, and drop them if their key was this run's own (nothing could read
    // them again, and `keys rotate` would stop at them).
    sqlx::query(if ephemeral {
        "DELETE FROM integrations WHERE project_id = $1"
    } else {
        "UPDATE integrations SET status = 'disconnected', last_error = 'demo platform stopped with the demo'
         WHERE project_id = $1"
    })
    .bind(project)
    .execute(&pool)
    .await?;
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
