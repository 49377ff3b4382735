//! Keyset pagination with opaque cursors: `?limit=&cursor=` in, `{data, next_cursor}` out.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, NaiveDate, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ApiError;

pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 200;

/// The page size a request asked for, checked: 1..=200, default 50.
pub fn limit(requested: Option<i64>) -> Result<i64, ApiError> {
    match requested {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {MAX_LIMIT}"
        ))),
    }
}

/// An optional instant on each side of a range: `[start, end)`.
pub type Bounds = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// The instants bounding the days `from` to `to` (inclusive, UTC): `[from 00:00, to+1 00:00)`.
/// 400 when `from` is after `to`.
pub fn day_range(from: Option<NaiveDate>, to: Option<NaiveDate>) -> Result<Bounds, ApiError> {
    if let (Some(from), Some(to)) = (from, to) {
        if from > to {
            return Err(ApiError::BadRequest("from must not be after to".into()));
        }
    }
    let start = |day: NaiveDate| day.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc();
    Ok((from.map(start), to.and_then(|d| d.succ_opt()).map(start)))
}

/// A position in an id-ordered listing: the last id of the previous page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdCursor {
    pub after: Uuid,
}

impl IdCursor {
    pub fn encode(&self) -> String {
        encode(self)
    }

    pub fn decode(text: &str) -> Result<Self, ApiError> {
        decode(text)
    }
}

/// An opaque cursor for any position type.
pub fn encode<T: Serialize>(position: &T) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(position).unwrap_or_default())
}

/// Reads a cursor made by [`encode`]; anything else is 400.
pub fn decode<T: DeserializeOwned>(text: &str) -> Result<T, ApiError> {
    URL_SAFE_NO_PAD
        .decode(text)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or_else(|| ApiError::BadRequest("cursor is not one this API issued".into()))
}

/// Turns `limit + 1` fetched rows into a page and the cursor of the next one: the extra row only
/// says that another page exists.
pub fn paginate<T>(
    mut rows: Vec<T>,
    limit: i64,
    cursor_of: impl Fn(&T) -> String,
) -> (Vec<T>, Option<String>) {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let next_cursor = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(cursor_of)
    } else {
        None
    };
    (rows, next_cursor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_a_bad_request() {
        let cursor = IdCursor {
            after: Uuid::now_v7(),
        };
        assert_eq!(IdCursor::decode(&cursor.encode()).unwrap(), cursor);
        assert!(IdCursor::decode("not-a-cursor").is_err());
    }

    #[test]
    fn the_extra_row_becomes_the_next_cursor() {
        let ids: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
        let by_id = |id: &Uuid| IdCursor { after: *id }.encode();
        let (data, next) = paginate(ids.clone(), 2, by_id);
        assert_eq!(data, ids[..2]);
        assert_eq!(IdCursor::decode(&next.unwrap()).unwrap().after, ids[1]);
        assert!(paginate(ids, 3, by_id).1.is_none());
    }

    #[test]
    fn limits_outside_the_range_are_refused() {
        assert_eq!(limit(None).unwrap(), 50);
        assert!(limit(Some(0)).is_err());
        assert!(limit(Some(201)).is_err());
    }
}
