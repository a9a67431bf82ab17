//! Keyset pagination: a listing returns `next`, an opaque cursor naming the last row
//! it gave (its sort key and id); the next page starts after it. No OFFSET: a page
//! deep in a large table costs what the first one does.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::problem::Problem;

/// Where a page starts: after the row with this sort key (a time, for listings sorted
/// by one) and id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub at: Option<DateTime<Utc>>,
    pub id: Uuid,
}

impl Cursor {
    pub fn encode(&self) -> String {
        let raw = match self.at {
            Some(at) => format!("{}.{}", at.timestamp_micros(), self.id),
            None => self.id.to_string(),
        };
        URL_SAFE_NO_PAD.encode(raw)
    }

    pub fn decode(s: &str) -> Result<Self, Problem> {
        let bad = || Problem::bad_request(format!("cursor {s:?} is not one this API gave"));
        let raw =
            String::from_utf8(URL_SAFE_NO_PAD.decode(s).map_err(|_| bad())?).map_err(|_| bad())?;
        let (at, id) = match raw.split_once('.') {
            Some((micros, id)) => (
                Some(
                    micros
                        .parse::<i64>()
                        .ok()
                        .and_then(DateTime::from_timestamp_micros)
                        .ok_or_else(bad)?,
                ),
                id,
            ),
            None => (None, raw.as_str()),
        };
        Ok(Self {
            at,
            id: Uuid::parse_str(id).map_err(|_| bad())?,
        })
    }
}

/// `?cursor=…&limit=…` of every listing.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// `next` of the previous page.
    pub cursor: Option<String>,
    /// Rows per page, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
}

impl PageQuery {
    pub const DEFAULT: i64 = 50;
    pub const MAX: i64 = 500;

    /// The page's start; none (the first page) when `cursor` is absent or empty, as a
    /// form or a client that always sends the parameter gives it.
    pub fn cursor(&self) -> Result<Option<Cursor>, Problem> {
        self.cursor
            .as_deref()
            .filter(|c| !c.is_empty())
            .map(Cursor::decode)
            .transpose()
    }

    pub fn limit(&self) -> Result<i64, Problem> {
        match self.limit {
            None => Ok(Self::DEFAULT),
            Some(n) if (1..=Self::MAX).contains(&n) => Ok(n),
            Some(n) => Err(Problem::bad_request(format!(
                "limit {n} is out of range: 1 to {}",
                Self::MAX
            ))),
        }
    }
}

/// One page of a listing.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// The cursor of the next page; absent on the last.
    pub next: Option<String>,
}

impl<T> Page<T> {
    /// A page from up to `limit + 1` rows (the extra row only says there is more).
    pub fn of(mut rows: Vec<T>, limit: i64, key: impl Fn(&T) -> Cursor) -> Self {
        let more = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        let next = if more {
            rows.last().map(|r| key(r).encode())
        } else {
            None
        };
        Self { items: rows, next }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_what_they_did_not_make() {
        let id = Uuid::now_v7();
        let at = DateTime::from_timestamp_micros(1_790_000_000_123_456).unwrap();
        for c in [Cursor { at: Some(at), id }, Cursor { at: None, id }] {
            assert_eq!(Cursor::decode(&c.encode()).unwrap(), c);
        }
        let empty = PageQuery {
            cursor: Some(String::new()),
            limit: None,
        };
        assert_eq!(
            empty.cursor().unwrap(),
            None,
            "an empty cursor is the first page"
        );
        for bad in ["", "!!", "bm90LWEtdXVpZA", "MTIzLm5vdA"] {
            let p = Cursor::decode(bad).unwrap_err();
            assert_eq!(p.status, 400, "{bad}");
            assert!(p.detail.contains("cursor"), "{}", p.detail);
        }
    }

    #[test]
    fn a_page_says_whether_there_is_more() {
        let key = |n: &u128| Cursor {
            at: None,
            id: Uuid::from_u128(*n),
        };
        let page = Page::of(vec![1u128, 2, 3], 2, key);
        assert_eq!(page.items, vec![1, 2]);
        assert_eq!(
            Cursor::decode(page.next.as_deref().unwrap()).unwrap().id,
            Uuid::from_u128(2)
        );
        assert!(Page::of(vec![1u128, 2], 2, key).next.is_none());
    }
}
