//! Every statement the queue runs, one function each, named noun + verb.
//!
//! Runtime-checked queries (`sqlx::query`), each covered by the tests in `tests/`.
//! Time always comes from the database's `now()`, never from this process's clock.

use chrono::{DateTime, Utc};
use std::time::Duration;

use serde_json::Value;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::{ClaimedJob, Enqueued, Job, JobStatus, NewJob, Result};

/// The NOTIFY channel workers LISTEN on; the payload is the job's kind.
pub const JOBS_CHANNEL: &str = "copydesk_jobs";

/// Inserts `jobs` in one statement; an idempotency key already taken yields the
/// existing row's id with `created: false`.
pub async fn job_insert_many(conn: &mut PgConnection, jobs: &[NewJob]) -> Result<Vec<Enqueued>> {
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    let n = jobs.len();
    let mut ids = Vec::with_capacity(n);
    let (mut kinds, mut inputs) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut tenants, mut projects, mut parents) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut priorities, mut run_ats, mut max_attempts, mut keys) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut traceparents, mut tracestates) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let mut columns = std::collections::BTreeSet::new();
    // The caller's trace, looked up once for the whole batch.
    let ambient = std::sync::OnceLock::new();
    for j in jobs {
        // A job with a parent and no trace takes its parent's in the database; one with
        // neither takes the caller's (see `trace`).
        let trace = j.trace.clone().or_else(|| {
            j.parent_id
                .is_none()
                .then(|| ambient.get_or_init(crate::trace::current).clone())
                .flatten()
        });
        let (parent, state) = trace.map_or((None, None), |t| (Some(t.traceparent), t.tracestate));
        traceparents.push(parent);
        tracestates.push(state);
        // Time-ordered ids keep the primary key's inserts at the right edge of the index.
        ids.push(Uuid::now_v7());
        kinds.push(j.kind.as_str());
        inputs.push(&j.input);
        tenants.push(j.tenant_id);
        projects.push(j.project_id);
        parents.push(j.parent_id);
        priorities.push(j.priority);
        run_ats.push(j.run_at);
        max_attempts.push(j.max_attempts);
        keys.push(j.idempotency_key.as_deref());
        for name in j.columns.keys() {
            check_column(name)?;
            columns.insert(name.as_str());
        }
    }
    // The coalesce defaults are the column defaults of the migration; a test checks
    // that a library enqueue and a plain INSERT produce the same row. A batch that names
    // no tenant leaves `tenant_id` out, as such an INSERT would: the database decides
    // (its column default or the application's trigger), without a trigger call per row.
    let mut into = String::new();
    let mut select = String::new();
    if tenants.iter().any(Option::is_some) {
        into.push_str(", tenant_id");
        select.push_str(", t.tenant_id");
    }
    // The application's columns, typed by the table itself (no array at all when no job
    // names one: unnest pads it with NULLs).
    let extras: Option<Vec<Value>> = (!columns.is_empty()).then(|| {
        jobs.iter()
            .map(|j| serde_json::to_value(&j.columns).unwrap_or_default())
            .collect()
    });
    let lateral = if columns.is_empty() {
        ""
    } else {
        for c in &columns {
            into.push_str(&format!(", \"{c}\""));
            select.push_str(&format!(", x.\"{c}\""));
        }
        " CROSS JOIN LATERAL jsonb_populate_record(NULL::jobs, t.extra) AS x"
    };
    let inserted: Vec<Uuid> = crate::db::query_scalar(sqlx::AssertSqlSafe(format!(
        "INSERT INTO jobs (id, kind, input, project_id, parent_id,
                           priority, run_at, max_attempts, idempotency_key,
                           traceparent, tracestate{into})
         SELECT t.id, t.kind, t.input, t.project_id, t.parent_id,
                coalesce(t.priority, 0), coalesce(t.run_at, now()), coalesce(t.max_attempts, 5),
                t.idempotency_key, t.traceparent, t.tracestate{select}
         FROM unnest($1::uuid[], $2::text[], $3::jsonb[], $4::uuid[], $5::uuid[],
                     $6::int[], $7::timestamptz[], $8::int[], $9::text[], $10::uuid[], $11::jsonb[],
                     $12::text[], $13::text[])
              AS t(id, kind, input, project_id, parent_id,
                   priority, run_at, max_attempts, idempotency_key, tenant_id, extra,
                   traceparent, tracestate){lateral}
         ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
         RETURNING id"
    )))
    .bind(&ids)
    .bind(&kinds)
    .bind(&inputs)
    .bind(&projects)
    .bind(&parents)
    .bind(&priorities)
    .bind(&run_ats)
    .bind(&max_attempts)
    .bind(&keys)
    .bind(&tenants)
    .bind(&extras)
    .bind(&traceparents)
    .bind(&tracestates)
    .fetch_all(&mut *conn)
    .await?;

    if inserted.len() == n {
        return Ok(ids
            .into_iter()
            .map(|id| Enqueued { id, created: true })
            .collect());
    }
    // Some keys were taken (by earlier rows or by a twin in this batch).
    let inserted: std::collections::HashSet<Uuid> = inserted.into_iter().collect();
    let taken: Vec<&str> = jobs
        .iter()
        .zip(&ids)
        .filter(|(_, id)| !inserted.contains(id))
        .filter_map(|(j, _)| j.idempotency_key.as_deref())
        .collect();
    let existing: std::collections::HashMap<String, Uuid> = crate::db::query_as::<(String, Uuid)>(
        "SELECT idempotency_key, id FROM jobs WHERE idempotency_key = ANY($1)",
    )
    .bind(&taken)
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .collect();
    Ok(jobs
        .iter()
        .zip(ids)
        .map(|(j, id)| {
            if inserted.contains(&id) {
                Enqueued { id, created: true }
            } else {
                let key = j.idempotency_key.as_deref().unwrap_or_default();
                Enqueued {
                    id: existing.get(key).copied().unwrap_or(id),
                    created: false,
                }
            }
        })
        .collect())
}

/// Claims up to `limit` ready jobs of `kind` for `worker`, skipping rows other workers
/// hold, fairly: `copydesk_claim` takes from every project (a job with no project: its
/// tenant) with ready jobs in turn, higher priority first, and is the plain best-first
/// claim when one project has them all. Commits on its own (the caller passes the pool).
pub async fn job_claim(
    db: impl PgExecutor<'_>,
    worker: &str,
    kind: &str,
    limit: i64,
    lease: Duration,
) -> Result<Vec<ClaimedJob>> {
    Ok(job_claim_counting(db, worker, kind, limit, lease).await?.0)
}

/// [`job_claim`], and how many projects had ready jobs (at most `limit` are counted;
/// 0 when nothing was ready).
pub async fn job_claim_counting(
    db: impl PgExecutor<'_>,
    worker: &str,
    kind: &str,
    limit: i64,
    lease: Duration,
) -> Result<(Vec<ClaimedJob>, usize)> {
    // Inside the function each statement's plan is cached by PL/pgSQL; the claims keep
    // custom plans (a generic one, not knowing the LIMIT, costs more), as the plain
    // statement does when it is sent unprepared. See PERFORMANCE.md.
    let rows = crate::db::query(
        "SELECT id, kind, tenant_id, project_id, input, parent_id, priority,
                attempts, max_attempts, run_at, created_at, locked_by,
                traceparent, tracestate, groups
         FROM copydesk_claim($1, $2::int, $3, $4)",
    )
    .persistent(false)
    .bind(kind)
    .bind(limit)
    .bind(worker)
    .bind(lease.as_millis() as i64)
    .fetch_all(db)
    .await?;
    let groups = rows
        .first()
        .map(|r| sqlx::Row::try_get::<i32, _>(r, "groups"))
        .transpose()?
        .unwrap_or(0) as usize;
    let jobs = rows
        .iter()
        .map(<ClaimedJob as sqlx::FromRow<_>>::from_row)
        .collect::<Result<Vec<_>, _>>()?;
    Ok((in_turns(jobs), groups))
}

/// A plain claim's statement: the rows `$select` picks (`$1` kind, `$2` limit) set
/// `running` under worker `$3` for a lease of `$4` ms, returned as [`ClaimedJob`]s.
macro_rules! claim_of {
    ($select:literal) => {
        concat!(
            "UPDATE jobs j
             SET status = 'running', locked_by = $3,
                 locked_until = now() + $4 * interval '1 millisecond',
                 attempts = j.attempts + 1, started_at = now(), updated_at = now(),
                 waiting_for = NULL
             WHERE j.id = ANY(ARRAY(",
            $select,
            "))
             RETURNING j.id, j.kind, j.tenant_id, j.project_id, j.input, j.parent_id,
                       j.priority, j.attempts, j.max_attempts, j.run_at, j.created_at, j.locked_by,
                       j.traceparent, j.tracestate"
        )
    };
}

/// The plain claim: the best `limit` ready jobs of `kind`, whoever's they are. What a
/// worker uses while one project has all the ready jobs (see `backend`).
pub async fn job_claim_plain(
    db: impl PgExecutor<'_>,
    worker: &str,
    kind: &str,
    limit: i64,
    lease: Duration,
) -> Result<Vec<ClaimedJob>> {
    // `id = ANY(ARRAY(…))`, not a join with the chosen rows: with real statistics and a
    // batch of 1,000, the planner hashes the join and reads the whole table (28 ms per
    // claim on 100,000 rows, growing with the table); an array of ids can only be
    // looked up through the primary key (10 ms). Not a persistent prepared statement:
    // a cached generic plan does not know `LIMIT $2` and, once statistics show a
    // backlog, may sort the whole queue to take 32 rows. See PERFORMANCE.md.
    let jobs = crate::db::query_as::<ClaimedJob>(claim_of!(
        "SELECT id FROM jobs
         WHERE status = 'queued' AND kind = $1 AND run_at <= now()
         ORDER BY priority DESC, run_at, id
         LIMIT $2
         FOR UPDATE SKIP LOCKED"
    ))
    .persistent(false)
    .bind(kind)
    .bind(limit)
    .bind(worker)
    .bind(lease.as_millis() as i64)
    .fetch_all(db)
    .await?;
    Ok(in_turns(jobs))
}

/// The plain claim from `floors` (see [`crate::floors`]): each known priority read from
/// its floor, the others from their head, in the plain claim's order.
pub async fn job_claim_from(
    db: impl PgExecutor<'_>,
    worker: &str,
    kind: &str,
    limit: i64,
    lease: Duration,
    floors: &[(i32, DateTime<Utc>)],
) -> Result<Vec<ClaimedJob>> {
    let (priorities, at): (Vec<i32>, Vec<DateTime<Utc>>) = floors.iter().copied().unzip();
    let jobs = crate::db::query_as::<ClaimedJob>(
        "SELECT id, kind, tenant_id, project_id, input, parent_id, priority,
                attempts, max_attempts, run_at, created_at, locked_by, traceparent, tracestate
         FROM copydesk_claim_from($1, $2::int, $3, $4, $5, $6)",
    )
    .persistent(false)
    .bind(kind)
    .bind(limit)
    .bind(worker)
    .bind(lease.as_millis() as i64)
    .bind(priorities)
    .bind(at)
    .fetch_all(db)
    .await?;
    Ok(in_turns(jobs))
}

/// The plain claim from where `start` says: its one priority alone ([`job_claim_at`])
/// when it may, else every priority from its floor or head ([`job_claim_from`]).
pub async fn job_claim_start(
    db: impl PgExecutor<'_>,
    worker: &str,
    kind: &str,
    limit: i64,
    lease: Duration,
    start: &crate::floors::Start,
) -> Result<Vec<ClaimedJob>> {
    match start.alone() {
        Some(floor) => job_claim_at(db, worker, kind, limit, lease, floor).await,
        None => job_claim_from(db, worker, kind, limit, lease, &start.floors).await,
    }
}

/// The plain claim of one priority alone, from its floor: what a worker sends while it
/// knows of no other priority of the kind (see [`crate::floors::Start::alone`]). One
/// statement, as [`job_claim_plain`], where [`job_claim_from`] runs a function.
pub async fn job_claim_at(
    db: impl PgExecutor<'_>,
    worker: &str,
    kind: &str,
    limit: i64,
    lease: Duration,
    (priority, floor): (i32, DateTime<Utc>),
) -> Result<Vec<ClaimedJob>> {
    let jobs = crate::db::query_as::<ClaimedJob>(claim_of!(
        "SELECT id FROM jobs
         WHERE status = 'queued' AND kind = $1 AND priority = $5
           AND run_at >= $6 AND run_at <= now()
         ORDER BY run_at, id
         LIMIT $2
         FOR UPDATE SKIP LOCKED"
    ))
    .persistent(false)
    .bind(kind)
    .bind(limit)
    .bind(worker)
    .bind(lease.as_millis() as i64)
    .bind(priority)
    .bind(floor)
    .fetch_all(db)
    .await?;
    Ok(in_turns(jobs))
}

/// The `run_at` of the first ready job of `kind` and `priority` before `floor`, if any:
/// a read of every entry behind the floor, for the sweep (see [`crate::floors`]).
pub async fn job_ready_behind(
    db: impl PgExecutor<'_>,
    kind: &str,
    priority: i32,
    floor: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>> {
    Ok(crate::db::query_scalar(
        "SELECT run_at FROM jobs
         WHERE status = 'queued' AND kind = $1 AND priority = $2 AND run_at < $3 AND run_at <= now()
         ORDER BY run_at LIMIT 1",
    )
    .persistent(false)
    .bind(kind)
    .bind(priority)
    .bind(floor)
    .fetch_optional(db)
    .await?)
}

/// Whether a ready job of `kind` belongs to a project (or tenant, for a job with none)
/// other than `group` (`copydesk_other_group_ready`: the group index either side of
/// `group`, so the entries of `group` itself, all that a held horizon keeps when one
/// project has the queue to itself, are never read).
pub async fn job_other_group_ready(
    db: impl PgExecutor<'_>,
    kind: &str,
    group: Uuid,
) -> Result<bool> {
    Ok(
        crate::db::query_scalar("SELECT copydesk_other_group_ready($1, $2)")
            .persistent(false)
            .bind(kind)
            .bind(group)
            .fetch_one(db)
            .await?,
    )
}

/// RETURNING has no order: claimed jobs start as the claim chose them, best first
/// within each project, the projects in turns, higher priority first.
fn in_turns(mut jobs: Vec<ClaimedJob>) -> Vec<ClaimedJob> {
    jobs.sort_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then(a.run_at.cmp(&b.run_at))
            .then(a.id.cmp(&b.id))
    });
    let mut turns: std::collections::HashMap<Uuid, usize> = std::collections::HashMap::new();
    let mut ranked: Vec<(usize, ClaimedJob)> = jobs
        .into_iter()
        .map(|j| {
            let turn = turns
                .entry(j.project_id.unwrap_or(j.tenant_id))
                .or_default();
            *turn += 1;
            (*turn, j)
        })
        .collect();
    ranked.sort_by(|(ta, a), (tb, b)| b.priority.cmp(&a.priority).then(ta.cmp(tb)));
    ranked.into_iter().map(|(_, j)| j).collect()
}

/// One job's finish, as [`job_finish_many`] writes it.
#[derive(Debug, Clone)]
pub struct FinishRow {
    pub id: Uuid,
    pub attempts: i32,
    /// `done`, `failed`, `needs_approval`, `retry` (queued again, or failed when the
    /// attempts are used up), or `wait` (queued again, the attempt given back; `error`
    /// is the note written to `waiting_for`).
    pub outcome: &'static str,
    pub retry_delay: Duration,
    pub error: Option<String>,
    pub output: Option<Value>,
}

/// Finishes many jobs in one statement, each fenced on its own lease. Returns
/// `(id, kind, new status)` for the rows written; a job missing from the answer had lost
/// its lease (rescued, cancelled, or finished by someone else) and was not touched.
///
/// The statement is the engine's `copydesk_finish`, which reaches each job by the
/// primary key whatever the planner's statistics say (its migration,
/// `20261210000001_running_jobs_by_key`, says why); so are the heartbeat's and the
/// give-back's.
pub async fn job_finish_many(
    db: impl PgExecutor<'_>,
    worker: &str,
    rows: &[FinishRow],
) -> Result<Vec<(Uuid, String, JobStatus)>> {
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let attempts: Vec<i32> = rows.iter().map(|r| r.attempts).collect();
    let outcomes: Vec<&str> = rows.iter().map(|r| r.outcome).collect();
    let delays: Vec<i64> = rows
        .iter()
        .map(|r| r.retry_delay.as_millis().min(i64::MAX as u128) as i64)
        .collect();
    let errors: Vec<Option<&str>> = rows.iter().map(|r| r.error.as_deref()).collect();
    let outputs: Vec<Option<&Value>> = rows.iter().map(|r| r.output.as_ref()).collect();
    Ok(crate::db::query_as(
        "SELECT job_id, job_kind, job_status FROM copydesk_finish($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(worker)
    .bind(&ids)
    .bind(&attempts)
    .bind(&outcomes)
    .bind(&delays)
    .bind(&errors)
    .bind(&outputs)
    .fetch_all(db)
    .await?)
}

/// Extends to `lease` the leases of `ids` that have less than `renew_below` left, as far
/// as `worker` still holds them. Returns how many.
///
/// Leases taken or extended since are left alone: in a fast queue nearly every job a
/// worker holds was claimed within the last seconds, and extending them all wrote a new
/// version of each (thousands a beat when finishes fall behind, each beat then seconds
/// long, holding rows the finishes wait for). Rows a finish holds are skipped (the next
/// beat extends any whose finish failed): a heartbeat never waits for a finish, so the
/// two, which lock the same rows in no common order, cannot deadlock. The statement is
/// the engine's `copydesk_extend_leases` (see [`job_finish_many`]).
pub async fn job_heartbeat(
    db: impl PgExecutor<'_>,
    worker: &str,
    ids: &[Uuid],
    lease: Duration,
    renew_below: Duration,
) -> Result<u64> {
    if ids.is_empty() {
        return Ok(0);
    }
    let extended: i64 = crate::db::query_scalar("SELECT copydesk_extend_leases($1, $2, $3, $4)")
        .bind(worker)
        .bind(ids)
        .bind(lease.as_millis() as i64)
        .bind(renew_below.as_millis() as i64)
        .fetch_one(db)
        .await?;
    Ok(extended.max(0) as u64)
}

/// What a rescue of expired leases did, and the database's time when it looked.
#[derive(Debug)]
pub struct Rescued {
    /// `(id, kind, new status)` of each job rescued.
    pub rows: Vec<(Uuid, String, JobStatus)>,
    pub at: DateTime<Utc>,
}

/// Returns jobs whose lease ran out to `queued` (or `failed` when their attempts are
/// used up), at most `limit` of them, looking only at leases that ran out at or after
/// `since` (`None`: all). A caller that looked at `t` and rescued fewer than `limit`
/// may pass a little before `t` next time: a lease that ran out before `t` was seen
/// then (a running row's lease is always ahead of its claim), and the versions of
/// finished jobs a held horizon keeps in `jobs_running_idx` are not read again.
pub async fn job_rescue_expired(
    db: impl PgExecutor<'_>,
    limit: i64,
    since: Option<DateTime<Utc>>,
) -> Result<Rescued> {
    let (at, ids, kinds, statuses): (DateTime<Utc>, Vec<Uuid>, Vec<String>, Vec<JobStatus>) =
        crate::db::query_as(
            "WITH expired AS (
                 SELECT id FROM jobs
                 WHERE status = 'running' AND locked_until < now()
                   AND locked_until >= coalesce($2, '-infinity'::timestamptz)
                 ORDER BY locked_until
                 LIMIT $1
                 FOR UPDATE SKIP LOCKED
             ), rescued AS (
                 UPDATE jobs j SET
                     status = CASE WHEN j.attempts < j.max_attempts THEN 'queued' ELSE 'failed' END,
                     finished_at = CASE WHEN j.attempts < j.max_attempts THEN NULL ELSE now() END,
                     last_error = 'lease expired: worker ' || coalesce(j.locked_by, '?')
                                  || ' stopped heartbeating during attempt ' || j.attempts,
                     run_at = now(), locked_by = NULL, locked_until = NULL, updated_at = now()
                 FROM expired WHERE j.id = expired.id
                 RETURNING j.id, j.kind, j.status)
             SELECT now(), coalesce(array_agg(id), '{}'), coalesce(array_agg(kind), '{}'),
                    coalesce(array_agg(status), '{}')
             FROM rescued",
        )
        .bind(limit)
        .bind(since)
        .fetch_one(db)
        .await?;
    Ok(Rescued {
        rows: ids
            .into_iter()
            .zip(kinds)
            .zip(statuses)
            .map(|((id, kind), status)| (id, kind, status))
            .collect(),
        at,
    })
}

/// Puts every running job held by `workers` back to `queued` without using up an
/// attempt (shutdown: in flight past the grace period, or claimed but never started).
pub async fn job_release(
    db: impl PgExecutor<'_>,
    workers: &[String],
) -> Result<Vec<(Uuid, String)>> {
    Ok(crate::db::query_as(
        "UPDATE jobs SET status = 'queued', attempts = greatest(attempts - 1, 0),
                locked_by = NULL, locked_until = NULL, run_at = now(), updated_at = now()
         WHERE status = 'running' AND locked_by = ANY($1)
         RETURNING id, kind",
    )
    .bind(workers)
    .fetch_all(db)
    .await?)
}

/// Hands claimed jobs that never started back to the queue, as they were before the
/// claim (attempt given back, `run_at` kept, so they keep their place): what a worker
/// does with the jobs its grown buffer holds when its kind turns out slow. Returns
/// `(id, kind)` of the rows given back; a job missing had lost its lease.
pub async fn job_unclaim(
    db: impl PgExecutor<'_>,
    worker: &str,
    ids: &[Uuid],
) -> Result<Vec<(Uuid, String)>> {
    // They keep their `run_at`, so they stand behind the floors of every worker of the
    // kind: the requeue trigger says where they start.
    Ok(
        crate::db::query_as("SELECT job_id, job_kind FROM copydesk_give_back($1, $2)")
            .bind(worker)
            .bind(ids)
            .fetch_all(db)
            .await?,
    )
}

/// Says worker process `name` (claiming `kinds`, running `version`) is alive until
/// `alive_for` from now.
pub async fn worker_alive(
    db: impl PgExecutor<'_>,
    name: &str,
    kinds: &[String],
    version: &str,
    alive_for: Duration,
) -> Result<()> {
    crate::db::query(
        "INSERT INTO copydesk_workers (name, kinds, version, alive_until)
         VALUES ($1, $2, $3, now() + $4 * interval '1 millisecond')
         ON CONFLICT (name) DO UPDATE
         SET kinds = excluded.kinds, version = excluded.version, seen_at = now(),
             alive_until = excluded.alive_until",
    )
    .bind(name)
    .bind(kinds)
    .bind(version)
    .bind(alive_for.as_millis() as i64)
    .execute(db)
    .await?;
    Ok(())
}

/// Worker process `name` stopped; and rows of processes dead for a day go too.
pub async fn worker_gone(db: impl PgExecutor<'_>, name: Option<&str>) -> Result<()> {
    crate::db::query(
        "DELETE FROM copydesk_workers
         WHERE name = $1 OR alive_until < now() - interval '1 day'",
    )
    .bind(name)
    .execute(db)
    .await?;
    Ok(())
}

/// One worker process as `copydesk_workers` has it.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct WorkerRow {
    pub name: String,
    pub kinds: Vec<String>,
    pub version: String,
    pub started_at: DateTime<Utc>,
    pub seen_at: DateTime<Utc>,
    pub alive_until: DateTime<Utc>,
    /// `alive_until` is ahead.
    pub alive: bool,
}

/// Every worker process with a row, live ones first, newest first.
pub async fn workers(db: impl PgExecutor<'_>) -> Result<Vec<WorkerRow>> {
    Ok(crate::db::query_as(
        "SELECT name, kinds, version, started_at, seen_at, alive_until, alive_until > now() AS alive
         FROM copydesk_workers ORDER BY alive_until > now() DESC, started_at DESC",
    )
    .fetch_all(db)
    .await?)
}

/// One kind a `jobs` row may name, with the versions of its input contract the
/// workers registered and the live processes claiming it.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct KindRow {
    pub kind: String,
    /// The kind this former name stands for.
    pub alias_of: Option<String>,
    /// The contract versions registered, oldest first (an alias has its kind's).
    pub versions: Vec<i32>,
    /// When the newest of them was (last) registered.
    pub registered_at: Option<DateTime<Utc>>,
    /// Live worker processes claiming it.
    pub workers: i64,
}

/// Every kind, by name.
pub async fn kinds(db: impl PgExecutor<'_>) -> Result<Vec<KindRow>> {
    Ok(crate::db::query_as(
        "SELECT k.name AS kind, k.alias_of,
                coalesce(array_agg(v.version ORDER BY v.version)
                         FILTER (WHERE v.version IS NOT NULL), '{}') AS versions,
                max(v.registered_at) AS registered_at,
                (SELECT count(*) FROM copydesk_workers w
                  WHERE k.name = ANY (w.kinds) AND w.alive_until > now()) AS workers
         FROM job_kinds k
         LEFT JOIN job_kind_versions v ON v.kind = coalesce(k.alias_of, k.name)
         GROUP BY k.name, k.alias_of
         ORDER BY k.name",
    )
    .fetch_all(db)
    .await?)
}

/// How many live worker processes claim each kind.
pub async fn live_workers(db: impl PgExecutor<'_>) -> Result<Vec<(String, i64)>> {
    Ok(crate::db::query_as(
        "SELECT k, count(*)::bigint FROM copydesk_workers, unnest(kinds) AS k
         WHERE alive_until > now() GROUP BY k ORDER BY k",
    )
    .fetch_all(db)
    .await?)
}

/// Wakes the workers of `kinds` (they LISTEN on [`JOBS_CHANNEL`]).
pub async fn job_notify(db: impl PgExecutor<'_>, kinds: &[&str]) -> Result<()> {
    if kinds.is_empty() {
        return Ok(());
    }
    crate::db::query("SELECT pg_notify($1, k) FROM (SELECT DISTINCT unnest($2::text[]) AS k) s")
        .bind(JOBS_CHANNEL)
        .bind(kinds)
        .execute(db)
        .await?;
    Ok(())
}

/// Every column of [`Job`]: the engine's own columns of `jobs`, which a new job's
/// [`NewJob::columns`] may not name.
const JOB_COLUMNS: &str =
    "id, kind, status, tenant_id, project_id, input, output, parent_id, priority, run_at,
    attempts, max_attempts, locked_by, locked_until, last_error, waiting_for, idempotency_key,
    created_at, started_at, finished_at, updated_at, traceparent, tracestate";

/// A column of [`NewJob::columns`] is a plain lower-case identifier the engine does not
/// set itself (its name is written into the statement).
fn check_column(name: &str) -> Result<()> {
    let why = if name.is_empty()
        || name.starts_with(|c: char| c.is_ascii_digit())
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        "not a plain lower-case column name"
    } else if JOB_COLUMNS.split(',').any(|c| c.trim() == name) {
        "the engine's own column: set it through its own field"
    } else {
        return Ok(());
    };
    Err(crate::Error::Column {
        name: name.to_owned(),
        why,
    })
}

/// One job by id.
pub async fn job_get(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<Job>> {
    Ok(crate::db::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(db)
    .await?)
}

/// Which jobs a listing or a bulk action means; every field narrows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JobFilter {
    pub status: Option<JobStatus>,
    pub kind: Option<String>,
    pub project_id: Option<Uuid>,
    pub tenant_id: Option<Uuid>,
    /// Jobs whose `last_error` reads this once ids and numbers are masked (what
    /// `copydesk_error_group(last_error)` gives): the same failure on many jobs.
    pub error_group: Option<String>,
}

/// The filter's predicate over `jobs`, its values bound from `$1` to `$5`.
const FILTER: &str = "($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR kind = $2)
    AND ($3::uuid IS NULL OR project_id = $3) AND ($4::uuid IS NULL OR tenant_id = $4)
    AND ($5::text IS NULL OR copydesk_error_group(last_error) = $5)";

fn bind_filter<'q, O>(
    q: sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
    f: &'q JobFilter,
) -> sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments> {
    q.bind(f.status)
        .bind(f.kind.as_deref())
        .bind(f.project_id)
        .bind(f.tenant_id)
        .bind(f.error_group.as_deref())
}

/// Up to `limit` jobs matching `filter`, newest first (ids are time-ordered), starting
/// after the job `after`. Planned with the real values each time (`persistent(false)`),
/// so a status filter reads its partial index and no listing sorts the table.
pub async fn job_page(
    db: impl PgExecutor<'_>,
    filter: &JobFilter,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Job>> {
    let sql = format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE {FILTER} AND ($6::uuid IS NULL OR id < $6)
         ORDER BY id DESC LIMIT $7"
    );
    Ok(
        bind_filter(crate::db::query_as(sqlx::AssertSqlSafe(sql)), filter)
            .bind(after)
            .bind(limit)
            .persistent(false)
            .fetch_all(db)
            .await?,
    )
}

/// How many jobs match `filter` and are in one of `statuses`.
pub async fn job_count(
    db: impl PgExecutor<'_>,
    filter: &JobFilter,
    statuses: &[JobStatus],
) -> Result<i64> {
    let sql = format!("SELECT count(*) FROM jobs WHERE {FILTER} AND status = ANY($6)");
    let (n,): (i64,) = bind_filter(crate::db::query_as(sqlx::AssertSqlSafe(sql)), filter)
        .bind(statuses)
        .persistent(false)
        .fetch_one(db)
        .await?;
    Ok(n)
}

const RETRY_SET: &str = "status = 'queued', attempts = 0, run_at = now(), finished_at = NULL,
    locked_by = NULL, locked_until = NULL, updated_at = now()";
const RETRY_FROM: &str = "('failed', 'cancelled')";
const CANCEL_SET: &str = "status = 'cancelled', finished_at = now(), locked_by = NULL,
    locked_until = NULL, waiting_for = NULL, last_error = coalesce(last_error, 'cancelled by an operator'),
    updated_at = now()";
const CANCEL_FROM: &str = "('queued', 'running')";

/// A failed or cancelled job back to `queued` now, with its attempts reset.
pub async fn job_retry(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<Job>> {
    Ok(crate::db::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE jobs SET {RETRY_SET} WHERE id = $1 AND status IN {RETRY_FROM}
         RETURNING {JOB_COLUMNS}"
    )))
    .bind(id)
    .fetch_optional(db)
    .await?)
}

/// A queued or running job to `cancelled`. A running job's worker finds its fence
/// broken when it reports, and its result is discarded.
pub async fn job_cancel(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<Job>> {
    Ok(crate::db::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE jobs SET {CANCEL_SET} WHERE id = $1 AND status IN {CANCEL_FROM}
         RETURNING {JOB_COLUMNS}"
    )))
    .bind(id)
    .fetch_optional(db)
    .await?)
}

/// What a bulk action does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BulkAction {
    /// Failed or cancelled jobs back to `queued`.
    Retry,
    /// Queued or running jobs to `cancelled`.
    Cancel,
}

impl BulkAction {
    /// The statuses the action applies to.
    pub fn applies_to(self) -> &'static [JobStatus] {
        match self {
            Self::Retry => &[JobStatus::Failed, JobStatus::Cancelled],
            Self::Cancel => &[JobStatus::Queued, JobStatus::Running],
        }
    }
}

/// Retries or cancels up to `limit` jobs matching `filter` (of the statuses the action
/// applies to), skipping rows another transaction holds; returns the ids and kinds.
pub async fn job_bulk(
    db: impl PgExecutor<'_>,
    action: BulkAction,
    filter: &JobFilter,
    limit: i64,
) -> Result<Vec<(Uuid, String)>> {
    let (set, from) = match action {
        BulkAction::Retry => (RETRY_SET, RETRY_FROM),
        BulkAction::Cancel => (CANCEL_SET, CANCEL_FROM),
    };
    let sql = format!(
        "UPDATE jobs SET {set}
         WHERE id = ANY(ARRAY(SELECT id FROM jobs WHERE {FILTER} AND status IN {from}
                              LIMIT $6 FOR UPDATE SKIP LOCKED))
           AND status IN {from}
         RETURNING id, kind"
    );
    Ok(
        bind_filter(crate::db::query_as(sqlx::AssertSqlSafe(sql)), filter)
            .bind(limit)
            .persistent(false)
            .fetch_all(db)
            .await?,
    )
}

/// One line of `queue stats`: a kind and status with its count.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct StatsRow {
    pub kind: String,
    pub status: JobStatus,
    pub jobs: i64,
    /// Seconds the oldest ready queued job has waited since it became ready (its
    /// `run_at`, or its insert when that came later: a retry's or a wait's time counts
    /// from when it was due again, not from when the job was first made).
    pub oldest_ready_secs: Option<f64>,
    pub finished_last_5m: i64,
    /// Of the queued jobs, those sent back to wait for a rate limit (`waiting_for`).
    pub waiting: i64,
}

/// Counts per kind and status: every job not done, and the done jobs that finished in
/// the last hour (done rows are history, kept until retention deletes them; counting
/// them all would read the whole table). Each part reads its own partial index, so the
/// answer costs the live jobs, not the table's size.
/// Per kind with ready jobs, how long its oldest ready job has waited since it became
/// ready (its `run_at`, or its insert when that came later), in seconds. Reads the
/// ready jobs alone (not the history `queue_stats` counts).
pub async fn oldest_ready(db: impl PgExecutor<'_>) -> Result<Vec<(String, f64)>> {
    Ok(crate::db::query_as(
        "SELECT kind, extract(epoch FROM now() - min(greatest(run_at, created_at)))::float8
         FROM jobs WHERE status = 'queued' AND run_at <= now()
         GROUP BY kind ORDER BY kind",
    )
    .fetch_all(db)
    .await?)
}

pub async fn queue_stats(db: impl PgExecutor<'_>) -> Result<Vec<StatsRow>> {
    const PART: &str = "SELECT kind, status, count(*)::bigint AS jobs,
                extract(epoch FROM now() - min(greatest(run_at, created_at))
                                            FILTER (WHERE status = 'queued' AND run_at <= now()))::float8
                    AS oldest_ready_secs,
                count(*) FILTER (WHERE finished_at > now() - interval '5 minutes')::bigint AS finished_last_5m,
                count(*) FILTER (WHERE status = 'queued' AND waiting_for IS NOT NULL)::bigint AS waiting
         FROM jobs";
    Ok(crate::db::query_as(sqlx::AssertSqlSafe(format!(
        "{PART} WHERE status = 'queued' GROUP BY kind, status
         UNION ALL {PART} WHERE status = 'running' GROUP BY kind, status
         UNION ALL {PART} WHERE status IN ('failed', 'cancelled', 'needs_approval') GROUP BY kind, status
         UNION ALL {PART} WHERE status = 'done' AND finished_at > now() - interval '1 hour'
                          GROUP BY kind, status
         ORDER BY kind, status"
    )))
    .fetch_all(db)
    .await?)
}

/// Deletes up to `limit` jobs of `status` finished more than `days` ago, oldest first,
/// from `from` on (the last `finished_at` the batch before deleted; `None` for the
/// first). Returns how many jobs and kept steps went, and where the next batch starts.
///
/// Each batch starts where the last ended, not at the head of `jobs_finished_idx`: the
/// entries of the rows deleted before stay in the index until vacuum, and a batch from
/// the head would walk all of them again (with a transaction holding the horizon, each
/// with its heap visit), so deleting a day's history would cost the square of its size.
/// Rows finished at the very instant a batch ended on are read again by the next (a
/// batch of finishes shares one `now()`); none is skipped.
pub async fn job_delete_finished(
    db: impl PgExecutor<'_>,
    status: JobStatus,
    days: i32,
    limit: i64,
    from: Option<DateTime<Utc>>,
) -> Result<DeletedBatch> {
    let (jobs, steps, last): (i64, i64, Option<DateTime<Utc>>) = crate::db::query_as(
        "WITH gone AS (
             DELETE FROM jobs WHERE id IN (
                 SELECT id FROM jobs
                 WHERE status = $1 AND finished_at < now() - $2 * interval '1 day'
                   AND finished_at >= coalesce($4, '-infinity')
                 ORDER BY finished_at LIMIT $3
                 FOR UPDATE SKIP LOCKED)
             RETURNING id, finished_at)
         SELECT (SELECT count(*) FROM gone),
                (SELECT count(*) FROM job_steps s JOIN gone ON gone.id = s.job_id),
                (SELECT max(finished_at) FROM gone)",
    )
    .persistent(false)
    .bind(status)
    .bind(days)
    .bind(limit)
    .bind(from)
    .fetch_one(db)
    .await?;
    Ok(DeletedBatch {
        jobs: jobs as u64,
        steps: steps as u64,
        last: last.or(from),
    })
}

/// What one batch of [`job_delete_finished`] deleted.
#[derive(Debug, Clone, Copy)]
pub struct DeletedBatch {
    pub jobs: u64,
    /// The steps that went with them (the foreign key cascades; the count reads the
    /// steps as they were before the statement).
    pub steps: u64,
    /// Where the next batch starts.
    pub last: Option<DateTime<Utc>>,
}

/// Counts what [`job_delete_finished`] would delete, for `--dry-run`.
pub async fn job_count_finished(
    db: impl PgExecutor<'_>,
    status: JobStatus,
    days: i32,
) -> Result<u64> {
    let n: i64 = crate::db::query_scalar(
        "SELECT count(*) FROM jobs WHERE status = $1 AND finished_at < now() - $2 * interval '1 day'",
    )
    .bind(status)
    .bind(days)
    .fetch_one(db)
    .await?;
    Ok(n as u64)
}

/// Counts running jobs whose lease has run out, for `--dry-run`.
pub async fn job_count_expired(db: impl PgExecutor<'_>) -> Result<u64> {
    let n: i64 = crate::db::query_scalar(
        "SELECT count(*) FROM jobs WHERE status = 'running' AND locked_until < now()",
    )
    .fetch_one(db)
    .await?;
    Ok(n as u64)
}

/// The status of one job, if it exists.
pub async fn job_status(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<JobStatus>> {
    Ok(
        crate::db::query_scalar("SELECT status FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_optional(db)
            .await?,
    )
}

/// Ends a job waiting for a person (`needs_approval`) as `status`, with `error` as its
/// last error when given. Returns whether the job was waiting.
pub async fn job_end_waiting(
    db: impl PgExecutor<'_>,
    id: Uuid,
    status: JobStatus,
    error: Option<&str>,
) -> Result<bool> {
    Ok(crate::db::query(
        "UPDATE jobs SET status = $2, last_error = coalesce($3, last_error), finished_at = now(),
                updated_at = now()
         WHERE id = $1 AND status = 'needs_approval'",
    )
    .bind(id)
    .bind(status)
    .bind(error)
    .execute(db)
    .await?
    .rows_affected()
        == 1)
}
