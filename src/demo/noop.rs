//! `copydesk demo --noop N`: a mixed workload of noop jobs run end to end, with
//! progress, then the queue stats.

use std::{
    io::{IsTerminal, Write},
    time::{Duration, Instant},
};

use copydesk_queue::{NewJob, ops};
use uuid::Uuid;

use crate::{
    app::{
        Env,
        worker::{WorkerOptions, run as run_worker},
    },
    jobs::{JobArgs, noop::NoopArgs},
};

pub async fn run(jobs: u32, env: &Env, out: &mut (dyn Write + Send)) -> anyhow::Result<()> {
    let pool = env.db.pool.clone();

    // A mixed workload: most jobs instant, every fifth sleeps 50-450 ms, every tenth
    // has high priority, and the last few are scheduled two seconds from now.
    let n = jobs as usize;
    let later = chrono::Utc::now() + chrono::Duration::seconds(2);
    let jobs: Vec<NewJob> = (0..n)
        .map(|i| {
            let sleep_ms = (i % 5 == 0).then_some(50 + (i as u64 * 37) % 400);
            let mut j = NewJob::of(&NoopArgs { sleep_ms });
            if i % 10 == 0 {
                j = j.priority(10);
            }
            if i + 5 >= n && n > 10 {
                j = j.run_at(later);
            }
            j
        })
        .collect();
    let runner = env.runner()?;
    let started = Instant::now();
    let mut tx = pool.begin().await?;
    let ids: Vec<Uuid> = copydesk_queue::enqueue_many(&mut tx, runner.catalog(), &jobs)
        .await?
        .into_iter()
        .map(|e| e.id)
        .collect();
    tx.commit().await?;
    writeln!(
        out,
        "enqueued {n} noop jobs in one transaction ({} sleeping, {} high priority, {} scheduled 2 s ahead)",
        n.div_ceil(5),
        n.div_ceil(10),
        if n > 10 { 5 } else { 0 }
    )?;

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let opts = WorkerOptions {
        kinds: Some(vec![NoopArgs::KIND.into()]),
        concurrency: Some(16),
        http: None,
        api: None,
        scheduler: false,
        listen: None,
    };
    let worker = tokio::spawn(run_worker(runner, opts, async move {
        let _ = stop_rx.await;
    }));

    let bar = std::io::stderr().is_terminal().then(|| {
        let b = indicatif::ProgressBar::new(n as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{bar:40}] {pos}/{len} jobs finished {msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        b
    });
    let mut last_line = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let (finished, running, queued): (i64, i64, i64) = crate::db::query_as(
            "SELECT count(*) FILTER (WHERE status IN ('done', 'failed', 'cancelled')),
                    count(*) FILTER (WHERE status = 'running'),
                    count(*) FILTER (WHERE status = 'queued')
             FROM jobs WHERE id = ANY($1)",
        )
        .bind(&ids)
        .fetch_one(&pool)
        .await?;
        let msg = format!("({running} running, {queued} queued)");
        match &bar {
            Some(b) => {
                b.set_position(finished as u64);
                b.set_message(msg.clone());
            }
            None if last_line.elapsed() >= Duration::from_secs(1) || finished as usize == n => {
                eprintln!("progress: {finished}/{n} jobs finished {msg}");
                last_line = Instant::now();
            }
            None => {}
        }
        if finished as usize == n {
            break;
        }
        if Instant::now() > deadline {
            anyhow::bail!("the demo's jobs did not finish within 5 minutes: {msg}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if let Some(b) = bar {
        b.finish();
    }
    let elapsed = started.elapsed();
    let _ = stop_tx.send(());
    worker.await??;

    let (done, failed, p50, p99): (i64, i64, Option<f64>, Option<f64>) = crate::db::query_as(
        "SELECT count(*) FILTER (WHERE status = 'done'), count(*) FILTER (WHERE status = 'failed'),
                percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM started_at - greatest(run_at, created_at)) * 1000),
                percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM started_at - greatest(run_at, created_at)) * 1000)
         FROM jobs WHERE id = ANY($1)",
    )
    .bind(&ids)
    .fetch_one(&pool)
    .await?;
    writeln!(
        out,
        "\n{n} jobs: {done} done, {failed} failed in {:.2} s ({:.0} jobs/s, includes the sleeps and the 2 s schedule)",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64()
    )?;
    writeln!(
        out,
        "due-to-start latency of the last attempt: p50 {:.1} ms, p99 {:.1} ms\n",
        p50.unwrap_or_default(),
        p99.unwrap_or_default()
    )?;
    writeln!(out, "queue stats (whole queue):")?;
    crate::report::queue_stats(out, &ops::stats(&pool).await?)?;
    writeln!(
        out,
        "\nnext: `copydesk jobs list`, `copydesk jobs show ID`, `psql \"$(copydesk db url)\"`"
    )?;
    Ok(())
}
