//! Budgets: `projects.budget_usd` against what the project's runs cost (`spent_usd`,
//! kept by a trigger on `runs`) and what calls in flight may still cost
//! (`reserved_usd`, one `llm_reservations` row each). A model call reserves its
//! worst-case cost with one UPDATE of the project row that checks the budget, so calls
//! made at once cannot each pass the check and overspend together; when the answer
//! comes the reservation is settled to the real cost (or released on failure) in the
//! same transaction as the call's `runs` row.

use std::time::Duration;

use crate::db::Db;
use serde::Serialize;
use sqlx::PgExecutor;
use uuid::Uuid;

use super::{Result, runs::NewRun};

/// A project's budget as it stands.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct BudgetState {
    pub budget_usd: Option<f64>,
    pub spent_usd: f64,
    pub reserved_usd: f64,
    /// What is left to reserve (`None`: no budget).
    pub left_usd: Option<f64>,
}

/// A reservation in flight.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reservation {
    pub id: Uuid,
    pub amount_usd: f64,
    /// The project's budget after reserving (to warn at the soft limit).
    pub state: (Option<f64>, f64, f64),
}

/// Sweeps the project's expired reservations (their process died), then reserves
/// `amount` if the budget allows it: `Ok(None)` when it does not (or the project
/// reached its budget already). No budget: always reserved.
///
/// A reservation that takes the project past `soft_limit` of its budget raises
/// `budget_soft_limit` in the same statement; a refusal raises `budget_reached` (a
/// project's refusals count on one unread row).
pub async fn reserve(
    pool: &Db,
    project: Uuid,
    job: Option<Uuid>,
    amount: f64,
    ttl: Duration,
    soft_limit: f64,
) -> Result<Option<Reservation>> {
    sweep_expired(pool, Some(project)).await?;
    let row: Option<(Uuid, Option<f64>, f64, f64)> = crate::db::query_as(
        "WITH p AS (
             UPDATE projects SET reserved_usd = reserved_usd + $3
             WHERE id = $1
               AND (budget_usd IS NULL
                    OR (spent_usd + reserved_usd < budget_usd
                        AND spent_usd + reserved_usd + $3 <= budget_usd))
             RETURNING id, tenant_id, name, budget_usd, spent_usd, reserved_usd),
         r AS (
             INSERT INTO llm_reservations (project_id, job_id, amount_usd, expires_at)
             SELECT id, $2, $3, now() + $4 * interval '1 millisecond' FROM p
             RETURNING id),
         soft AS (
             SELECT copydesk_notify(p.tenant_id, p.id, $2, 'warning', 'budget_soft_limit',
                        p.id::text,
                        format('%s has used %s%% of its budget', p.name,
                               round(100 * (p.spent_usd + p.reserved_usd) / p.budget_usd)),
                        format('$%s spent and $%s held by calls in flight, of $%s.',
                               round(p.spent_usd, 2), round(p.reserved_usd, 2), round(p.budget_usd, 2)),
                        jsonb_build_object('budget_usd', p.budget_usd, 'spent_usd', p.spent_usd,
                                           'reserved_usd', p.reserved_usd))
               FROM p
              WHERE p.budget_usd > 0
                AND p.spent_usd + p.reserved_usd >= p.budget_usd * $5
                AND p.spent_usd + p.reserved_usd - $3 < p.budget_usd * $5)
         SELECT r.id, p.budget_usd::float8, p.spent_usd::float8, p.reserved_usd::float8
           FROM r, p WHERE (SELECT count(*) FROM soft) >= 0",
    )
    .bind(project)
    .bind(job)
    .bind(amount)
    .bind(ttl.as_millis() as i64)
    .bind(soft_limit)
    .fetch_optional(pool)
    .await?;
    let Some((id, budget, spent, reserved)) = row else {
        crate::db::query(
            "SELECT copydesk_notify(p.tenant_id, p.id, $2, 'error', 'budget_reached', p.id::text,
                        format('%s has reached its budget', p.name),
                        format('$%s spent and $%s held by calls in flight, of $%s: a call of up to $%s was not made.',
                               round(p.spent_usd, 2), round(p.reserved_usd, 2),
                               round(p.budget_usd, 2), round($3::numeric, 4)),
                        jsonb_build_object('budget_usd', p.budget_usd, 'spent_usd', p.spent_usd,
                                           'reserved_usd', p.reserved_usd))
               FROM projects p WHERE p.id = $1 AND p.budget_usd IS NOT NULL",
        )
        .bind(project)
        .bind(job)
        .bind(amount)
        .execute(pool)
        .await?;
        return Ok(None);
    };
    Ok(Some(Reservation {
        id,
        amount_usd: amount,
        state: (budget, spent, reserved),
    }))
}

/// Ends a reservation and records its call in one transaction: the reserved amount
/// leaves `reserved_usd`, the call's real cost enters `spent_usd` (by the trigger).
pub async fn settle(pool: &Db, reservation: Option<Uuid>, run: &NewRun<'_>) -> Result<()> {
    let mut tx = pool.begin().await?;
    if let Some(id) = reservation {
        release(&mut *tx, id).await?;
    }
    super::runs::record(&mut *tx, run).await?;
    tx.commit().await?;
    Ok(())
}

/// Gives a reservation back (nothing was spent, or the spending is recorded apart).
pub async fn release(db: impl PgExecutor<'_>, id: Uuid) -> Result<()> {
    crate::db::query(
        "WITH r AS (DELETE FROM llm_reservations WHERE id = $1 RETURNING project_id, amount_usd)
         UPDATE projects p SET reserved_usd = greatest(p.reserved_usd - r.amount_usd, 0)
         FROM r WHERE p.id = r.project_id",
    )
    .bind(id)
    .execute(db)
    .await?;
    Ok(())
}

/// Releases reservations whose call outlived them (its process died), for one project
/// or all; returns how many.
pub async fn sweep_expired(db: impl PgExecutor<'_>, project: Option<Uuid>) -> Result<u64> {
    Ok(crate::db::query(
        "WITH r AS (
             DELETE FROM llm_reservations
             WHERE expires_at < now() AND ($1::uuid IS NULL OR project_id = $1)
             RETURNING project_id, amount_usd),
         s AS (SELECT project_id, sum(amount_usd) AS amount FROM r GROUP BY project_id)
         UPDATE projects p SET reserved_usd = greatest(p.reserved_usd - s.amount, 0)
         FROM s WHERE p.id = s.project_id",
    )
    .bind(project)
    .execute(db)
    .await?
    .rows_affected())
}

/// The project's budget: spent, reserved and left.
pub async fn state(db: impl PgExecutor<'_>, project: Uuid) -> Result<Option<BudgetState>> {
    Ok(crate::db::query_as(
        "SELECT budget_usd::float8, spent_usd::float8, reserved_usd::float8, left_usd::float8
         FROM project_budgets WHERE project_id = $1",
    )
    .bind(project)
    .fetch_optional(db)
    .await?)
}
