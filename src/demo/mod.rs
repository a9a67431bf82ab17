//! `copydesk demo`: the content pipeline end to end on the embedded Postgres with no
//! configuration and no key. A sample store page is served on loopback; the offline
//! provider writes unless a key is configured; every step is shown as it happens; the
//! demo approves as `demo`; approved drafts are published to local stand-ins of
//! WordPress, LinkedIn, X and Facebook that speak the real protocols
//! (`platforms.rs`, which the tests use too); it ends with the posts, the drafts, their
//! scores and a cost table. `copydesk demo --noop N` runs a plain queue workload
//! instead; `copydesk demo --serve` keeps the console up afterwards with a token printed.

mod noop;
pub mod platforms;

use std::{
    collections::BTreeMap,
    io::Write,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use copydesk_queue::JobStatus;
use uuid::Uuid;

use crate::{
    app::{
        self, Env,
        worker::{WorkerOptions, run as run_worker},
    },
    config::Settings,
    domain::{ApprovalStatus, Channel, Platform},
    jobs::{
        JobArgs,
        brand_voice_analysis::{BrandVoiceArgs, BrandVoiceOutput},
        evaluation::{EvaluationArgs, EvaluationOutput},
        output_of,
        publishing::{PublishingArgs, PublishingOutput},
    },
    keys::Keys,
    pipeline::{
        Plan, decisions,
        start::{ProjectRef, start},
    },
    publish::integrations,
    store,
};
use platforms::FakePlatforms;

const STORE_PAGE: &str = include_str!("store.html");

/// Where the demo's approved drafts go (blog to WordPress).
const DESTINATIONS: [Platform; 4] = [
    Platform::Wordpress,
    Platform::Linkedin,
    Platform::X,
    Platform::Facebook,
];

/// Runs the demo: the content pipeline, or with `noop`, that many plain jobs.
///
/// With `serve` (an address, or `[http] serve` without one, and the future that stops
/// the server), the console and the API stay up afterwards.
pub async fn run<F>(
    noop: Option<u32>,
    serve: Option<(Option<std::net::SocketAddr>, F)>,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()>
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    // Listen first (a port in use is said before the demo runs, not after).
    let listener = match serve {
        None => None,
        Some((addr, shutdown)) => {
            let addr = match addr {
                Some(a) => a,
                None => {
                    let s = &Settings::load()?.http.serve;
                    s.parse().with_context(|| {
                        format!("[http] serve = {s:?} is not an address like 127.0.0.1:8080")
                    })?
                }
            };
            let listener = std::net::TcpListener::bind(addr)
                .with_context(|| format!("--serve: listening on {addr} (give --http ADDR)"))?;
            Some((listener, shutdown))
        }
    };
    let env = Env::open().await?;
    match &env.db.cluster {
        Some(c) => {
            writeln!(out, "postgres: embedded cluster, {}", c.url("copydesk"))?;
            writeln!(out, "postgres data: {}", c.data_dir().display())?;
            if let Some(why) = c.relocated() {
                writeln!(out, "postgres note: {why}")?;
            }
        }
        None => writeln!(out, "postgres: DATABASE_URL")?,
    }
    let applied = env.db.migrate(&crate::app::catalog()).await?;
    writeln!(out, "migrations: {applied} applied, schema current")?;
    let result = match noop {
        Some(n) => noop::run(n, &env, out).await,
        None => pipeline(&env, out).await,
    };
    let result = match (result, listener) {
        (Ok(()), Some((listener, shutdown))) => serve_after(&env, listener, shutdown, out).await,
        (result, _) => result,
    };
    env.db.pool.close().await;
    result
}

/// Keeps the console and the API up over what the demo made and prints an admin token
/// to log in with, until Ctrl-C. No worker runs (the demo's stand-in platforms are
/// gone): decisions taken now are applied by the next `copydesk worker`.
async fn serve_after(
    env: &Env,
    listener: std::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let bound = listener.local_addr()?;
    let tenant = store::tenants::by_slug(&env.db.pool, "default").await?;
    let mut tx = env.db.pool.begin().await?;
    let (token, secret) = store::tokens::create(
        &mut tx,
        tenant.id,
        "demo console",
        crate::domain::TokenRole::Admin,
        Some(Duration::from_secs(86_400)),
        "demo",
    )
    .await?;
    tx.commit().await?;
    writeln!(
        out,
        "\nthe console is up at http://{bound}/console/ (and the API at http://{bound}/api/v1);\n\
         log in with this admin token, valid for a day (revoke it with `copydesk tokens revoke {}`):\n{}\n\
         Ctrl-C stops",
        token.id,
        secret.expose()
    )?;
    out.flush()?;
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let server = tokio::spawn(crate::http::serve_on(
        app::api_state(env, Some(bound)),
        listener,
        shutdown,
    ));
    server.await??;
    writeln!(out, "stopped")?;
    Ok(())
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
    let mut services = app::services(Arc::new(settings))?;
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
    let runner = app::runner(pool.clone(), app::registry(), services);

    let mut tx = pool.begin().await?;
    let plan = Plan {
        channels: Channel::ALL.to_vec(),
        topic: Some("Why our linen lasts a decade".into()),
        instructions: None,
        schedule: None,
    };
    let project = start(
        &mut tx,
        runner.catalog(),
        None,
        ProjectRef::New("Linen & Loom (demo)".into()),
        &store_url,
        plan,
    )
    .await?
    .project_id;
    tx.commit().await?;
    for platform in DESTINATIONS {
        let (creds, metadata) = platforms.integration(platform);
        integrations::connect(&pool, &keys, project, platform, &creds, &metadata, "demo").await?;
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
    let mut seen: BTreeMap<Uuid, JobStatus> = BTreeMap::new();
    let mut approved: Vec<Uuid> = Vec::new();
    loop {
        // Show every job's new state as it happens.
        let jobs = store::status::project_jobs(&pool, project).await?;
        for j in &jobs {
            if seen.get(&j.id) == Some(&j.status) || j.status == JobStatus::Queued {
                continue;
            }
            seen.insert(j.id, j.status);
            let o = j.output.as_ref();
            let what = match j.kind.as_str() {
                EvaluationArgs::KIND => output_of::<EvaluationOutput>(o).map(|e| {
                    format!(
                        "score {}/100{}",
                        e.overall,
                        if e.rewrite {
                            ", rewriting with the reviewer's feedback"
                        } else {
                            ""
                        }
                    )
                }),
                BrandVoiceArgs::KIND => output_of::<BrandVoiceOutput>(o)
                    .filter(|b| b.from_cache)
                    .map(|_| "from the 7-day cache".to_owned()),
                PublishingArgs::KIND => output_of::<PublishingOutput>(o)
                    .map(|p| format!("{} {} ({})", p.platform, p.url, p.how)),
                _ => None,
            }
            .unwrap_or_else(|| j.last_error.clone().unwrap_or_default());
            writeln!(
                out,
                "[{:>5.1}s] {:<21} {:<9} {:<15} {what}",
                started.elapsed().as_secs_f64(),
                j.kind,
                j.channel.map(Channel::as_str).unwrap_or(""),
                j.status
            )?;
        }
        // Approve what waits, as a person would.
        for a in store::approvals::list(
            &pool,
            Some(ApprovalStatus::Pending),
            Some(project),
            None,
            50,
        )
        .await?
        {
            if !approved.contains(&a.id) {
                decisions::decide(&pool, a.id, true, "demo", Some("looks good")).await?;
                approved.push(a.id);
                writeln!(
                    out,
                    "[{:>5.1}s] approval {} approved by demo",
                    started.elapsed().as_secs_f64(),
                    a.id
                )?;
            }
        }
        let open = jobs.iter().any(|j| !j.status.is_finished());
        let published = jobs
            .iter()
            .filter(|j| j.kind == PublishingArgs::KIND && j.status.is_finished())
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
    if ephemeral {
        store::integrations::delete_project(&pool, project).await?;
    } else {
        store::integrations::disconnect_project(
            &pool,
            project,
            "demo platform stopped with the demo",
        )
        .await?;
    }
    for d in store::artifacts::latest_drafts(&pool, project).await? {
        writeln!(
            out,
            "── {} draft v{} ({}) ──\n{}\n",
            d.channel,
            d.version,
            d.source,
            d.content.trim()
        )?;
    }
    crate::report::project_status(
        out,
        &store::status::project(&mut *pool.begin().await?, project).await?,
    )?;
    writeln!(
        out,
        "\nnext: `copydesk pipeline show {project}`, `copydesk approvals list`, `copydesk artifacts search linen`"
    )?;
    Ok(())
}
