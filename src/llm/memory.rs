//! What this process knows of the structured modes servers take, kept in memory and
//! in `llm_modes` so other processes learn it too: read from the table on first use
//! (and again after a minute, to pick up what others learned), written when a mode is
//! stepped down to, when a mode first works, when a stronger one than the one
//! remembered worked again, or when the server turned out to speak another dialect.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::db::Db;
use chrono::Utc;

use crate::{
    domain::{Dialect, StructuredMode},
    store::{self, models::Learned},
};

/// How long a value read from the table is trusted before it is read again.
const RELOAD: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy)]
struct Known {
    mode: Option<Learned>,
    read: Instant,
}

/// Modes by (base URL, model).
#[derive(Debug, Default)]
pub struct Memory {
    modes: Mutex<HashMap<(String, String), Known>>,
}

impl Memory {
    fn key(base_url: &str, model: &str) -> (String, String) {
        (base_url.to_owned(), model.to_owned())
    }

    fn cached(&self, key: &(String, String)) -> Option<Known> {
        self.modes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .copied()
    }

    fn put(&self, key: (String, String), mode: Option<Learned>) {
        self.modes.lock().unwrap_or_else(|e| e.into_inner()).insert(
            key,
            Known {
                mode,
                read: Instant::now(),
            },
        );
    }

    /// The mode remembered for `model` on `base_url`, when it was learned, and the
    /// server's dialect.
    pub async fn mode(&self, pool: &Db, base_url: &str, model: &str) -> Option<Learned> {
        let key = Self::key(base_url, model);
        if let Some(k) = self.cached(&key).filter(|k| k.read.elapsed() < RELOAD) {
            return k.mode;
        }
        match store::models::mode(pool, base_url, model).await {
            Ok(found) => {
                self.put(key, found);
                found
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not read the learned structured modes");
                self.cached(&key).and_then(|k| k.mode)
            }
        }
    }

    /// Remembers a step-down to `mode` (asked in `dialect`), here and for every process.
    pub async fn remember(
        &self,
        pool: &Db,
        base_url: &str,
        model: &str,
        mode: StructuredMode,
        dialect: Dialect,
    ) {
        let learned = Learned {
            mode,
            at: Utc::now(),
            dialect: Some(dialect),
        };
        self.put(Self::key(base_url, model), Some(learned));
        if let Err(e) = store::models::set_mode(pool, base_url, model, mode, dialect).await {
            tracing::warn!(error = %e, "could not record a learned structured mode");
        }
    }

    /// `mode` worked, asked in `dialect`: remembered when nothing was, when it is
    /// stronger than what was remembered (a mode tried again upward, after its step-down
    /// aged), or when the dialect is not the one remembered.
    pub async fn succeeded(
        &self,
        pool: &Db,
        base_url: &str,
        model: &str,
        mode: StructuredMode,
        dialect: Dialect,
    ) {
        let known = self
            .cached(&Self::key(base_url, model))
            .and_then(|k| k.mode);
        let news = match known {
            None => true,
            Some(was) => mode < was.mode || was.dialect != Some(dialect),
        };
        if news {
            self.remember(pool, base_url, model, mode, dialect).await;
        }
    }
}
