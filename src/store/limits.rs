//! Rate limits shared by every process (`limits`, `limit_slots`). A call names the keys
//! it falls under, most specific first (`llm:HOST/MODEL`, `llm:HOST`;
//! `platform:P:INTEGRATION`, `platform:P`); [`take`] takes what it needs from all of
//! them in one statement (`copydesk_limit_take`, computed from the database clock), or
//! says how long to wait and for which key. Each key's limit is the operator's override
//! in its row, else the configured default (`[limits.keys]`, where `*` in the last place
//! stands for each model or integration).

use std::time::Duration;

use crate::db::Db;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgExecutor;
use uuid::Uuid;

use super::{Error, Result};
use crate::{
    config::{LimitSettings, LimitSpec},
    domain::Platform,
};

/// The keys a model call to `base_url` with `model` falls under, most specific first.
pub fn llm_keys(base_url: &str, model: &str) -> Vec<String> {
    let host = reqwest::Url::parse(base_url)
        .ok()
        .and_then(|u| {
            let host = u.host_str()?.to_ascii_lowercase();
            Some(match u.port() {
                Some(p) => format!("{host}:{p}"),
                None => host,
            })
        })
        .unwrap_or_else(|| "unknown".into());
    vec![format!("llm:{host}/{model}"), format!("llm:{host}")]
}

/// The keys a call to one integration of `platform` falls under, most specific first.
pub fn platform_keys(platform: Platform, integration: Uuid) -> Vec<String> {
    vec![
        format!("platform:{platform}:{integration}"),
        format!("platform:{platform}"),
    ]
}

/// Checks a key's form, naming what is wrong (the table's CHECK says the same).
pub fn validate_key(key: &str) -> Result<()> {
    let bad = |why: &str| {
        Error::Invalid(format!(
            "limit key {key:?} {why}: keys read llm:HOST[:PORT], llm:HOST[:PORT]/MODEL, \
             platform:PLATFORM or platform:PLATFORM:INTEGRATION_ID"
        ))
    };
    if let Some(rest) = key.strip_prefix("llm:") {
        let (host, model) = rest.split_once('/').unwrap_or((rest, ""));
        if host.is_empty() || host.contains(char::is_whitespace) {
            return Err(bad("names no host"));
        }
        if rest.contains('/') && (model.is_empty() || model.contains(char::is_whitespace)) {
            return Err(bad("names no model after the slash"));
        }
        return Ok(());
    }
    if let Some(rest) = key.strip_prefix("platform:") {
        let (platform, id) = rest.split_once(':').unwrap_or((rest, ""));
        if platform.parse::<Platform>().is_err() {
            return Err(bad(
                "names no platform (wordpress, shopify, linkedin, x, facebook)",
            ));
        }
        if rest.contains(':') && Uuid::parse_str(id).is_err() {
            return Err(bad("has an integration id that is not a UUID"));
        }
        return Ok(());
    }
    Err(bad("is not a limit key"))
}

/// The configured default for `key`: its own entry, else the entry with `*` in the
/// last place (`llm:HOST/*`, `platform:P:*`).
pub fn default_for<'a>(cfg: &'a LimitSettings, key: &str) -> Option<&'a LimitSpec> {
    cfg.keys.get(key).or_else(|| {
        let cut = if key.starts_with("llm:") {
            key.find('/')
        } else {
            key.rfind(':').filter(|&i| key[..i].contains(':'))
        }?;
        cfg.keys.get(&format!("{}*", &key[..=cut]))
    })
}

/// What [`take`] answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Taken {
    /// Go ahead; release these concurrency slots when the call ends.
    Granted(Vec<Uuid>),
    /// Nothing taken: `key` has no capacity for `after`.
    Wait { key: String, after: Duration },
}

/// Takes one request (and `tokens`, for a model call) from every key in `keys`, all or
/// nothing. Concurrency slots are held for `job` until [`release`] or their lease ends.
pub async fn take(
    db: impl PgExecutor<'_>,
    cfg: &LimitSettings,
    keys: &[String],
    tokens: u32,
    job: Option<Uuid>,
) -> Result<Taken> {
    let specs: Vec<LimitSpec> = keys
        .iter()
        .map(|k| default_for(cfg, k).cloned().unwrap_or_default())
        .collect();
    let int = |v: Option<u32>| v.map(|n| n.min(i32::MAX as u32) as i32);
    let requests: Vec<Option<i32>> = specs.iter().map(|s| int(s.requests)).collect();
    let per: Vec<Option<i64>> = specs
        .iter()
        .map(|s| s.per.map(|d| d.as_millis().min(i64::MAX as u128) as i64))
        .collect();
    let tpm: Vec<Option<i32>> = specs.iter().map(|s| int(s.tokens_per_minute)).collect();
    let concurrency: Vec<Option<i32>> = specs.iter().map(|s| int(s.concurrency)).collect();
    let (wait_ms, key, slots): (i64, Option<String>, Vec<Uuid>) = crate::db::query_as(
        "SELECT wait_ms, blocked_by, slots FROM copydesk_limit_take($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(keys)
    .bind(&requests)
    .bind(&per)
    .bind(&tpm)
    .bind(&concurrency)
    .bind(tokens.min(i32::MAX as u32) as i32)
    .bind(job)
    .bind((cfg.slot_lease_secs * 1000).min(i64::MAX as u64) as i64)
    .fetch_one(db)
    .await?;
    Ok(match key {
        Some(key) => Taken::Wait {
            key,
            after: Duration::from_millis(wait_ms.max(1) as u64),
        },
        None => Taken::Granted(slots),
    })
}

/// Frees concurrency slots when their call has ended.
pub async fn release(db: impl PgExecutor<'_>, slots: &[Uuid]) -> Result<()> {
    if !slots.is_empty() {
        crate::db::query("DELETE FROM limit_slots WHERE id = ANY($1)")
            .bind(slots)
            .execute(db)
            .await?;
    }
    Ok(())
}

/// Ends a call: frees its concurrency `slots` and, once the server has said what the
/// call used (`used` tokens, prompt and completion), corrects each key's tokens-per-
/// minute bucket from the estimate taken before the call (`estimated`, as
/// [`take`] was given it) to the real use: usually a refund, since the estimate counts
/// the whole `max_tokens`. The keys' rows are locked in key order, as `take` locks
/// them. One statement.
pub async fn settle(
    db: impl PgExecutor<'_>,
    cfg: &LimitSettings,
    keys: &[String],
    slots: &[Uuid],
    estimated: u32,
    used: Option<u32>,
) -> Result<()> {
    if slots.is_empty() && used.is_none() {
        return Ok(());
    }
    let tpm: Vec<Option<i32>> = keys
        .iter()
        .map(|k| {
            default_for(cfg, k)
                .and_then(|s| s.tokens_per_minute)
                .map(|n| n.min(i32::MAX as u32) as i32)
        })
        .collect();
    let int = |n: u32| n.min(i32::MAX as u32) as i32;
    crate::db::query(
        "WITH freed AS (DELETE FROM limit_slots WHERE id = ANY($1)),
         locked AS (
             SELECT l.key, coalesce(l.tokens_per_minute, w.tpm) AS tpm
             FROM limits l JOIN unnest($2::text[], $3::int[]) AS w(key, tpm) ON w.key = l.key
             WHERE $5::int IS NOT NULL AND l.token_tat IS NOT NULL
               AND coalesce(l.tokens_per_minute, w.tpm) IS NOT NULL
             ORDER BY l.key
             FOR UPDATE OF l)
         UPDATE limits l SET token_tat = greatest(
             greatest(l.token_tat, clock_timestamp())
                 + (($5 - least($4, k.tpm))::float8 / k.tpm) * interval '1 minute',
             clock_timestamp())
         FROM locked k
         WHERE l.key = k.key",
    )
    .bind(slots)
    .bind(keys)
    .bind(&tpm)
    .bind(int(estimated))
    .bind(used.map(int))
    .execute(db)
    .await?;
    Ok(())
}

/// A throttled answer: stops every call under `key`, in every process, until the
/// server's reset (`retry_after`), else for `[limits] throttle_pause_secs`, never
/// shortening a longer pause already set. Returns the pause.
pub async fn pause(
    db: impl PgExecutor<'_>,
    cfg: &LimitSettings,
    key: &str,
    retry_after: Option<Duration>,
) -> Result<Duration> {
    let pause = retry_after.unwrap_or(Duration::from_secs(cfg.throttle_pause_secs));
    crate::db::query(
        "INSERT INTO limits (key, paused_until, throttled)
         VALUES ($1, clock_timestamp() + $2 * interval '1 millisecond', 1)
         ON CONFLICT (key) DO UPDATE SET
             paused_until = greatest(limits.paused_until, excluded.paused_until),
             throttled = limits.throttled + 1",
    )
    .bind(key)
    .bind(pause.as_millis().min(i64::MAX as u128) as i64)
    .execute(db)
    .await?;
    Ok(pause)
}

/// Sets the operator's override of `key` (a field left `None` keeps the default).
pub async fn set(db: impl PgExecutor<'_>, key: &str, spec: &LimitSpec, by: &str) -> Result<()> {
    validate_key(key)?;
    if spec.requests.is_some() != spec.per.is_some() {
        return Err(Error::Invalid(
            "--requests and --per go together: N requests per window".into(),
        ));
    }
    if spec == &LimitSpec::default() {
        return Err(Error::Invalid(
            "nothing to set: give --requests N --per DURATION, --tokens-per-minute N or --concurrency N"
                .into(),
        ));
    }
    let int = |v: Option<u32>| v.map(|n| n.min(i32::MAX as u32) as i32);
    crate::db::query(
        "INSERT INTO limits (key, requests, per_ms, tokens_per_minute, concurrency, updated_by)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (key) DO UPDATE SET
             requests = coalesce(excluded.requests, limits.requests),
             per_ms = coalesce(excluded.per_ms, limits.per_ms),
             tokens_per_minute = coalesce(excluded.tokens_per_minute, limits.tokens_per_minute),
             concurrency = coalesce(excluded.concurrency, limits.concurrency),
             updated_by = excluded.updated_by, updated_at = now()",
    )
    .bind(key)
    .bind(int(spec.requests))
    .bind(spec.per.map(|d| d.as_millis() as i64))
    .bind(int(spec.tokens_per_minute))
    .bind(int(spec.concurrency))
    .bind(by)
    .execute(db)
    .await?;
    Ok(())
}

/// Drops the operator's override of `key` (and any pause): the default applies again.
/// False when the key had no row.
pub async fn clear(db: impl PgExecutor<'_>, key: &str, by: &str) -> Result<bool> {
    validate_key(key)?;
    Ok(crate::db::query(
        "UPDATE limits SET requests = NULL, per_ms = NULL, tokens_per_minute = NULL,
             concurrency = NULL, paused_until = NULL, updated_by = $2, updated_at = now()
         WHERE key = $1
           AND (requests IS NOT NULL OR per_ms IS NOT NULL OR tokens_per_minute IS NOT NULL
                OR concurrency IS NOT NULL OR paused_until > clock_timestamp())",
    )
    .bind(key)
    .bind(by)
    .execute(db)
    .await?
    .rows_affected()
        > 0)
}

/// One key as `limits list` shows it: the limit in force and where it comes from, and
/// the current use.
#[derive(Debug, Clone, Serialize)]
pub struct KeyState {
    pub key: String,
    /// `override`, `default` (from `[limits.keys]`) or `none` (a key only paused).
    pub source: &'static str,
    pub requests: Option<i32>,
    pub per_secs: Option<f64>,
    pub tokens_per_minute: Option<i32>,
    pub concurrency: Option<i32>,
    /// Requests in the current window.
    pub requests_in_window: i64,
    /// Tokens taken over the last minute still counted (model keys).
    pub tokens_in_use: i64,
    /// Calls in flight.
    pub in_flight: i64,
    pub paused_until: Option<DateTime<Utc>>,
    pub granted: i64,
    pub waited: i64,
    pub throttled: i64,
}

#[derive(sqlx::FromRow)]
struct Row {
    key: String,
    requests: Option<i32>,
    per_ms: Option<i64>,
    tokens_per_minute: Option<i32>,
    concurrency: Option<i32>,
    request_log: Vec<DateTime<Utc>>,
    token_ms_ahead: Option<i64>,
    in_flight: i64,
    paused_until: Option<DateTime<Utc>>,
    granted: i64,
    waited: i64,
    throttled: i64,
    now: DateTime<Utc>,
}

/// Every key with a row, and every configured default not yet used, by key.
pub async fn list(pool: &Db, cfg: &LimitSettings) -> Result<Vec<KeyState>> {
    let rows: Vec<Row> = crate::db::query_as(
        "SELECT l.key, l.requests, l.per_ms, l.tokens_per_minute, l.concurrency, l.request_log,
                (extract(epoch FROM l.token_tat - clock_timestamp()) * 1000)::bigint AS token_ms_ahead,
                (SELECT count(*) FROM limit_slots s
                 WHERE s.key = l.key AND s.expires_at > clock_timestamp()) AS in_flight,
                CASE WHEN l.paused_until > clock_timestamp() THEN l.paused_until END AS paused_until,
                l.granted, l.waited, l.throttled, clock_timestamp() AS now
         FROM limits l ORDER BY l.key",
    )
    .fetch_all(pool)
    .await?;
    let mut out: Vec<KeyState> = rows
        .into_iter()
        .map(|r| {
            let default = default_for(cfg, &r.key);
            let overridden =
                r.requests.is_some() || r.tokens_per_minute.is_some() || r.concurrency.is_some();
            let int = |v: Option<u32>| v.map(|n| n as i32);
            let requests = r.requests.or(default.and_then(|d| int(d.requests)));
            let per_ms = r
                .per_ms
                .or(default.and_then(|d| d.per.map(|p| p.as_millis() as i64)));
            let tpm = r
                .tokens_per_minute
                .or(default.and_then(|d| int(d.tokens_per_minute)));
            let in_window = per_ms.map_or(0, |ms| {
                let since = r.now - chrono::Duration::milliseconds(ms);
                r.request_log.iter().filter(|t| **t > since).count() as i64
            });
            let tokens_in_use = match (tpm, r.token_ms_ahead) {
                (Some(tpm), Some(ms)) if ms > 0 => (ms as f64 / 60_000.0 * tpm as f64) as i64,
                _ => 0,
            };
            KeyState {
                source: if overridden {
                    "override"
                } else if default.is_some() {
                    "default"
                } else {
                    "none"
                },
                requests,
                per_secs: per_ms.map(|ms| ms as f64 / 1000.0),
                tokens_per_minute: tpm,
                concurrency: r.concurrency.or(default.and_then(|d| int(d.concurrency))),
                requests_in_window: in_window,
                tokens_in_use,
                in_flight: r.in_flight,
                paused_until: r.paused_until,
                granted: r.granted,
                waited: r.waited,
                throttled: r.throttled,
                key: r.key,
            }
        })
        .collect();
    for (key, spec) in &cfg.keys {
        if out.iter().any(|s| &s.key == key) {
            continue;
        }
        out.push(KeyState {
            key: key.clone(),
            source: "default",
            requests: spec.requests.map(|n| n as i32),
            per_secs: spec.per.map(|d| d.as_secs_f64()),
            tokens_per_minute: spec.tokens_per_minute.map(|n| n as i32),
            concurrency: spec.concurrency.map(|n| n as i32),
            requests_in_window: 0,
            tokens_in_use: 0,
            in_flight: 0,
            paused_until: None,
            granted: 0,
            waited: 0,
            throttled: 0,
        });
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_the_host_and_port_and_defaults_match_wildcards() {
        assert_eq!(
            llm_keys("http://127.0.0.1:8080/v1", "qwen/qwen3"),
            ["llm:127.0.0.1:8080/qwen/qwen3", "llm:127.0.0.1:8080"]
        );
        assert_eq!(
            llm_keys("https://API.openai.com/v1/", "gpt-4o-mini"),
            ["llm:api.openai.com/gpt-4o-mini", "llm:api.openai.com"]
        );
        let id = Uuid::nil();
        assert_eq!(
            platform_keys(Platform::X, id),
            [format!("platform:x:{id}"), "platform:x".to_owned()]
        );
        let cfg = crate::config::Settings::defaults().limits;
        assert_eq!(
            default_for(&cfg, &format!("platform:x:{id}")).and_then(|s| s.requests),
            Some(17)
        );
        assert!(default_for(&cfg, "platform:x").is_none());
        assert!(default_for(&cfg, "llm:api.openai.com/gpt-4o-mini").is_none());
        for good in [
            "llm:localhost:11434",
            "llm:api.openai.com/gpt-4o-mini",
            "llm:h/org/model:free",
            "platform:x",
            "platform:shopify:00000000-0000-0000-0000-000000000001",
        ] {
            validate_key(good).unwrap();
        }
        for (bad, says) in [
            ("openai", "is not a limit key"),
            ("llm:", "names no host"),
            ("llm:h/", "names no model"),
            ("platform:myspace", "names no platform"),
            ("platform:x:42", "not a UUID"),
        ] {
            let e = validate_key(bad).unwrap_err().to_string();
            assert!(e.contains(says) && e.contains(bad), "{bad}: {e}");
        }
    }
}
