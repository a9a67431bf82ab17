//! Claims while a transaction holds the horizon back: floors (each priority read from
//! where the worker's last claim ended) keep the claim's order, find jobs made ready
//! behind them, and claim no job twice, against a real Postgres with an open
//! transaction that keeps every dead row version.

mod common;

use std::{collections::HashSet, time::Duration};

use chrono::{DateTime, Utc};
use common::*;
use copydesk_queue as queue;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

const LEASE: Duration = Duration::from_secs(60);

/// A session that began a transaction and took a transaction id, then sits idle: vacuum
/// may remove no row version newer than it while it lives.
async fn hold_horizon(db: &TestDb) -> PgConnection {
    let mut conn = PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
    sqlx::query("SELECT txid_current()")
        .execute(&mut conn)
        .await
        .unwrap();
    conn
}

/// Inserts one `noop` job by plain SQL, ready from `seconds_ago` seconds back.
async fn job_at(db: &TestDb, priority: i32, seconds_ago: i64) -> (Uuid, DateTime<Utc>) {
    sqlx::query_as(
        "INSERT INTO jobs (kind, input, priority, run_at)
         VALUES ('noop', '{}', $1, now() - $2 * interval '1 second') RETURNING id, run_at",
    )
    .bind(priority)
    .bind(seconds_ago)
    .fetch_one(&db.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_claim_from_floors_reads_known_priorities_from_their_floor_and_the_rest_from_their_head()
{
    let db = test_db().await;
    let (behind, _) = job_at(&db, 0, 30).await;
    let (at_floor, floor) = job_at(&db, 0, 20).await;
    let (after, _) = job_at(&db, 0, 10).await;
    let (higher, _) = job_at(&db, 5, 40).await;
    let (lower, _) = job_at(&db, -1, 50).await;
    let (future, _) = job_at(&db, 0, -3600).await;

    let took = queue::ops::claim_from(&db.pool, "w", "noop", 10, LEASE, &[(0, floor)])
        .await
        .unwrap();
    let ids: Vec<Uuid> = took.iter().map(|j| j.id).collect();
    assert_eq!(
        ids,
        vec![higher, at_floor, after, lower],
        "the priority above the known one from its head, the known one from its floor \
         (the job behind it left), the one below from its head, in the plain claim's order"
    );
    assert_eq!(status_of(&db.pool, future).await, "queued", "not ready yet");

    // The limit is kept across the priorities read.
    let (a, _) = job_at(&db, 7, 5).await;
    let (_b, _) = job_at(&db, 0, 5).await;
    let took = queue::ops::claim_from(&db.pool, "w", "noop", 1, LEASE, &[(0, floor)])
        .await
        .unwrap();
    assert_eq!(took.iter().map(|j| j.id).collect::<Vec<_>>(), vec![a]);

    // Without floors it is the plain claim: the job left behind comes first now.
    let took = queue::ops::claim_from(&db.pool, "w", "noop", 1, LEASE, &[])
        .await
        .unwrap();
    assert_eq!(took.iter().map(|j| j.id).collect::<Vec<_>>(), vec![behind]);
}

#[tokio::test]
async fn an_insert_says_on_the_ready_channel_where_each_priority_of_its_jobs_starts() {
    let db = test_db().await;
    let mut listener = sqlx::postgres::PgListener::connect(&db.url).await.unwrap();
    listener.listen(queue::floors::READY_CHANNEL).await.unwrap();
    let run_at: DateTime<Utc> = sqlx::query_scalar(
        "WITH i AS (INSERT INTO jobs (kind, input, priority, run_at)
                    VALUES ('noop', '{}', 3, now() - interval '1 hour'),
                           ('noop', '{}', 3, now() - interval '2 hours'),
                           ('noop', '{}', 3, now() + interval '1 hour')
                    RETURNING run_at)
         SELECT min(run_at) FROM i",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let n = tokio::time::timeout(Duration::from_secs(10), listener.recv())
        .await
        .expect("a notification")
        .unwrap();
    let (kind, priority, at) = queue::floors::parse_ready(n.payload()).unwrap();
    assert_eq!((kind, priority, at), ("noop", 3, run_at));
}

#[tokio::test]
async fn under_a_held_horizon_a_worker_runs_every_job_once_including_those_made_ready_behind_its_floor()
 {
    let db = test_db().await;
    let _held = hold_horizon(&db).await;
    let (stop, worker) = start_worker(runner(&db, fast_settings(), registry()), kinds(&["noop"]));

    // Enough jobs, in several statements, for the worker's floors to move on.
    for _ in 0..20 {
        sqlx::query(
            "INSERT INTO jobs (kind, input) SELECT 'noop', '{}' FROM generate_series(1, 100)",
        )
        .execute(&db.pool)
        .await
        .unwrap();
    }
    wait_for(Duration::from_secs(60), "the first 2,000 jobs", || async {
        count(&db.pool, "SELECT count(*) FROM jobs WHERE status = 'done'").await == 2_000
    })
    .await;

    // An insert whose `run_at` lies behind every floor (a transaction that began long
    // ago, or a writer that set it): it says so, and the worker comes back for it.
    let (old, _) = job_at(&db, 0, 3600).await;
    // One set back to `queued` by hand, which nobody announces: found when the worker
    // next reads from the head.
    let by_hand: Uuid = sqlx::query_scalar(
        "UPDATE jobs SET status = 'queued', attempts = 0, finished_at = NULL,
                run_at = now() - interval '2 hours'
         WHERE id = (SELECT id FROM jobs WHERE status = 'done' ORDER BY run_at LIMIT 1)
         RETURNING id",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    // And new work of a higher priority than any the worker has seen.
    let (urgent, _) = job_at(&db, 9, 0).await;
    for id in [old, by_hand, urgent] {
        wait_for(
            Duration::from_secs(30), // well within SWEEP_EVERY: what was said is found
            "a job made ready behind the floors",
            || async { status_of(&db.pool, id).await == "done" },
        )
        .await;
    }
    stop.send(()).unwrap();
    worker.await.unwrap().unwrap();

    // Each ran once: one attempt, one start.
    let attempts: Vec<i32> =
        sqlx::query_scalar("SELECT attempts FROM jobs WHERE status = 'done' AND id <> $1")
            .bind(by_hand)
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(attempts.len(), 2_001);
    assert!(attempts.iter().all(|a| *a == 1), "a job ran twice");
    let unfinished = count(&db.pool, "SELECT count(*) FROM jobs WHERE status <> 'done'").await;
    assert_eq!(unfinished, 0);
}

#[tokio::test]
async fn racing_claimers_with_floors_under_a_held_horizon_claim_each_job_once() {
    let db = test_db().await;
    let _held = hold_horizon(&db).await;
    sqlx::query("INSERT INTO jobs (kind, input, priority) SELECT 'noop', '{}', g % 3 FROM generate_series(1, 3000) g")
        .execute(&db.pool)
        .await
        .unwrap();
    // Eight claimers, each keeping its floors as a worker does.
    let mut tasks = Vec::new();
    for w in 0..8 {
        let pool = db.pool.clone();
        tasks.push(tokio::spawn(async move {
            let mut floors = queue::floors::Floors::new();
            let mut mine = Vec::new();
            loop {
                let start = floors.start();
                let took =
                    queue::ops::claim_start(&pool, &format!("w{w}"), "noop", 37, LEASE, &start)
                        .await
                        .unwrap();
                if took.is_empty() {
                    break;
                }
                floors.claimed(&start, &took, 37);
                mine.extend(took.iter().map(|j| j.id));
            }
            mine
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let distinct: HashSet<Uuid> = all.iter().copied().collect();
    assert_eq!(all.len(), distinct.len(), "a job was claimed twice");
    assert_eq!(distinct.len(), 3_000, "every job was claimed");
}

/// Lowers `floors` by every `copydesk_jobs_ready` notification `listener` has received
/// until one announces `until` (as a worker's LISTEN task does).
async fn hear_until(
    listener: &mut sqlx::postgres::PgListener,
    floors: &mut queue::floors::Floors,
    until: DateTime<Utc>,
) {
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), listener.recv())
            .await
            .expect("the insert was announced")
            .unwrap();
        let (kind, priority, at) = queue::floors::parse_ready(n.payload()).unwrap();
        assert_eq!(kind, "noop");
        floors.lower(priority, at);
        if at == until {
            return;
        }
    }
}

/// Two finishes commit their follow-up jobs in the other order than they began (as a
/// worker's two finishers do): the job that began first, whose `run_at` is earlier,
/// commits while a claim that cannot see it takes the later one. The claim must not
/// leave the floor past it.
#[tokio::test]
async fn a_job_committed_while_a_claim_ran_that_cannot_see_it_is_claimed_next() {
    let db = test_db().await;
    let mut listener = sqlx::postgres::PgListener::connect(&db.url).await.unwrap();
    listener.listen(queue::floors::READY_CHANNEL).await.unwrap();
    let mut floors = queue::floors::Floors::new();
    let (_, first) = job_at(&db, 0, 5).await;
    hear_until(&mut listener, &mut floors, first).await;
    let start = floors.start();
    let took = queue::ops::claim_start(&db.pool, "w", "noop", 10, LEASE, &start)
        .await
        .unwrap();
    floors.claimed(&start, &took, 10);
    assert_eq!(floors.known(), vec![(0, first)]);

    // The earlier finish: its transaction (and so its job's `run_at`) begins first.
    let mut earlier = PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut earlier).await.unwrap();
    let (late, late_at): (Uuid, DateTime<Utc>) =
        sqlx::query_as("INSERT INTO jobs (kind, input) VALUES ('noop', '{}') RETURNING id, run_at")
            .fetch_one(&mut earlier)
            .await
            .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    // The later one commits first, and is heard.
    let (_, second) = job_at(&db, 0, 0).await;
    assert!(second > late_at);
    hear_until(&mut listener, &mut floors, second).await;

    // A claim begins and reads before the earlier finish commits.
    let start = floors.start();
    let took = queue::ops::claim_start(&db.pool, "w", "noop", 10, LEASE, &start)
        .await
        .unwrap();
    assert_eq!(
        took.iter().map(|j| j.run_at).collect::<Vec<_>>(),
        vec![second]
    );
    // The earlier finish commits; its announcement lies ahead of the floor (at the first
    // job) and is heard before the claim's answer is taken in.
    sqlx::query("COMMIT").execute(&mut earlier).await.unwrap();
    hear_until(&mut listener, &mut floors, late_at).await;
    floors.claimed(&start, &took, 10);

    let start = floors.start();
    let took = queue::ops::claim_start(&db.pool, "w", "noop", 10, LEASE, &start)
        .await
        .unwrap();
    assert_eq!(
        took.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![late],
        "the job committed while the claim ran is the next claim's"
    );
}

#[tokio::test]
async fn the_sweep_finds_a_ready_job_nobody_announced_behind_a_floor() {
    let db = test_db().await;
    let _held = hold_horizon(&db).await;
    for _ in 0..5 {
        job_at(&db, 0, 5).await;
    }
    let floors = std::sync::Mutex::new(queue::floors::Floors::new());
    let start = floors.lock().unwrap().start();
    let took = queue::ops::claim_start(&db.pool, "w", "noop", 10, LEASE, &start)
        .await
        .unwrap();
    assert_eq!(took.len(), 5);
    floors.lock().unwrap().claimed(&start, &took, 10);
    // Made ready behind the floor with nobody listening to say so.
    let (late, at) = job_at(&db, 0, 60).await;
    let start = floors.lock().unwrap().start();
    let took = queue::ops::claim_start(&db.pool, "w", "noop", 10, LEASE, &start)
        .await
        .unwrap();
    assert!(took.is_empty(), "the claim does not read behind its floor");

    queue::floors::sweep(&db.pool, "noop", &floors).await;
    let start = floors.lock().unwrap().start();
    assert_eq!(start.floors, vec![(0, at)]);
    let took = queue::ops::claim_start(&db.pool, "w", "noop", 10, LEASE, &start)
        .await
        .unwrap();
    assert_eq!(took.iter().map(|j| j.id).collect::<Vec<_>>(), vec![late]);
}

#[tokio::test]
async fn retention_deletes_in_batches_from_where_the_last_ended_and_skips_no_tie() {
    let db = test_db().await;
    // 2,500 old finished jobs in groups of 700 sharing one `finished_at` (a batched
    // finish shares its `now()`), so batches of 1,000 end inside a group; 30 recent ones
    // and 20 old failed ones stay.
    sqlx::query(
        "INSERT INTO jobs (kind, input, status, finished_at)
         SELECT 'noop', '{}'::jsonb, 'done', now() - interval '9 days' + (g / 700) * interval '1 second'
         FROM generate_series(0, 2499) g
         UNION ALL SELECT 'noop', '{}', 'done', now() - interval '1 day' FROM generate_series(1, 30)
         UNION ALL SELECT 'noop', '{}', 'failed', now() - interval '9 days' FROM generate_series(1, 20)",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    // A session holding the horizon: the deleted rows' entries stay in the index.
    let _held = hold_horizon(&db).await;
    let gone = queue::ops::delete_finished(
        &db.pool,
        [
            (queue::JobStatus::Done, 7),
            (queue::JobStatus::Failed, 30),
            (queue::JobStatus::Cancelled, 7),
        ],
        1_000,
        false,
    )
    .await
    .unwrap();
    assert_eq!((gone.done, gone.failed, gone.cancelled), (2_500, 0, 0));
    let left: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, count(*) FROM jobs GROUP BY status ORDER BY status")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(left, vec![("done".into(), 30), ("failed".into(), 20)]);
}

/// Scans of `relation` in this transaction so far (index scans of an index, sequential
/// scans of a table).
async fn scans_of(tx: &mut PgConnection, relation: &str) -> i64 {
    sqlx::query_scalar("SELECT pg_stat_get_xact_numscans($1::regclass)")
        .bind(relation)
        .fetch_one(tx)
        .await
        .unwrap()
}

#[tokio::test]
async fn finishes_heartbeats_and_unclaims_reach_their_jobs_by_key_not_by_the_running_index_or_the_table()
 {
    let db = test_db().await;
    let _held = hold_horizon(&db).await;
    // 20,000 jobs run and finished under the held horizon: the running version of each
    // stays in `jobs_running_idx`. Then 1,000 running now, and fresh statistics that
    // count only those (the planner then thinks that index small).
    for (worker, n, done) in [("gone", 20_000, true), ("w", 1_000, false)] {
        sqlx::query(
            "INSERT INTO jobs (kind, input) SELECT 'noop', '{}' FROM generate_series(1, $1)",
        )
        .bind(n)
        .execute(&db.pool)
        .await
        .unwrap();
        sqlx::query(
            "UPDATE jobs SET status = 'running', attempts = 1, locked_by = $1,
                    locked_until = now() + interval '1 minute'
             WHERE status = 'queued'",
        )
        .bind(worker)
        .execute(&db.pool)
        .await
        .unwrap();
        if done {
            sqlx::query(
                "UPDATE jobs SET status = 'done', finished_at = now(), locked_by = NULL,
                        locked_until = NULL
                 WHERE status = 'running'",
            )
            .execute(&db.pool)
            .await
            .unwrap();
        }
    }
    sqlx::query("ANALYZE jobs").execute(&db.pool).await.unwrap();
    let ids: Vec<Uuid> =
        sqlx::query_scalar("SELECT id FROM jobs WHERE locked_by = 'w' ORDER BY id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(ids.len(), 1_000);
    let (given_back, finished) = ids.split_at(200);

    let mut tx = db.pool.begin().await.unwrap();
    let beat = queue::ops::heartbeat(
        &mut *tx,
        "w",
        &ids,
        Duration::from_secs(600),
        Duration::from_secs(300),
    )
    .await
    .unwrap();
    let unclaimed = queue::ops::unclaim(&mut *tx, "w", given_back)
        .await
        .unwrap();
    eprintln!(
        "after unclaim {}",
        scans_of(&mut tx, "jobs_running_idx").await
    );
    let rows: Vec<queue::ops::FinishRow> = finished
        .iter()
        .map(|&id| queue::ops::FinishRow {
            id,
            attempts: 1,
            outcome: "done",
            retry_delay: Duration::ZERO,
            error: None,
            output: None,
        })
        .collect();
    let done = queue::ops::finish(&mut *tx, "w", &rows).await.unwrap();
    let (running_scans, table_scans, key_scans) = (
        scans_of(&mut tx, "jobs_running_idx").await,
        scans_of(&mut tx, "jobs").await,
        scans_of(&mut tx, "jobs_pkey").await,
    );
    tx.commit().await.unwrap();

    assert_eq!((beat, unclaimed.len(), done.len()), (1_000, 200, 800));
    assert_eq!(
        running_scans, 0,
        "a statement naming its jobs by id read the index of running rows, which a held \
         horizon fills with the running versions of finished jobs"
    );
    assert_eq!(
        table_scans, 0,
        "a statement naming its jobs by id read the whole table"
    );
    assert!(
        key_scans >= 3,
        "each statement reads the primary key ({key_scans} scans)"
    );
    let left: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, count(*) FROM jobs GROUP BY status ORDER BY status")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(left, vec![("done".into(), 20_800), ("queued".into(), 200)]);
}
