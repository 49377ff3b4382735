//! Keyset pagination with opaque cursors, one way for every list route: `?limit=&cursor=` in
//! ([`PageQuery`], checked into a [`PageRequest`] by its extractor), `{data, next_cursor}` out
//! ([`Page`]).

use std::borrow::Cow;

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, NaiveDate, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::platform::error::ApiError;

/// `?limit=&cursor=` of every list route (documented with `params(…, PageQuery)`).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// 1 to 200; default 50.
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// One page of a listing, and the cursor of the next one (`null` on the last page).
#[derive(Debug, Serialize)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub next_cursor: Option<String>,
}

/// Documented as `Page_<Item>`, whose `data` refers to the item's schema. utoipa's derive would
/// inline the whole item into every page (juhaku/utoipa#1586), so the schema is written here.
impl<T: ToSchema> utoipa::__dev::ComposeSchema for Page<T> {
    fn compose(_: Vec<RefOr<Schema>>) -> RefOr<Schema> {
        ObjectBuilder::new()
            .description(Some(
                "One page of a listing, and the cursor of the next one (`null` on the last page).",
            ))
            .property(
                "data",
                ArrayBuilder::new().items(Ref::from_schema_name(T::name())),
            )
            .required("data")
            .property(
                "next_cursor",
                ObjectBuilder::new().schema_type(SchemaType::from_iter([Type::String, Type::Null])),
            )
            .into()
    }
}

impl<T: ToSchema> ToSchema for Page<T> {
    /// utoipa names each use after its argument: `Page_Payment`, `Page_Loan`, …
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Page")
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((T::name().into_owned(), T::schema()));
        T::schemas(schemas);
    }
}

impl<T> Page<T> {
    /// The same page with each row converted (a failure fails the page).
    pub fn try_map<U, E>(self, convert: impl FnMut(T) -> Result<U, E>) -> Result<Page<U>, E> {
        Ok(Page {
            data: self
                .data
                .into_iter()
                .map(convert)
                .collect::<Result<_, _>>()?,
            next_cursor: self.next_cursor,
        })
    }
}

/// A page request, checked: its size, and the position `C` it starts after. Extracted from the
/// query string; a bad limit or a cursor this API did not issue is 400.
#[derive(Debug)]
pub struct PageRequest<C> {
    pub limit: i64,
    pub after: Option<C>,
}

impl<C> PageRequest<C> {
    /// Rows to fetch: one more than the page, to tell whether another page follows.
    pub fn fetch(&self) -> i64 {
        self.limit + 1
    }
}

impl<C: Serialize> PageRequest<C> {
    /// The page of `rows` (fetched with [`PageRequest::fetch`]) and the cursor after its last
    /// row.
    pub fn page<T>(
        &self,
        mut rows: Vec<T>,
        position: impl Fn(&T) -> C,
    ) -> Result<Page<T>, ApiError> {
        let limit = usize::try_from(self.limit).unwrap_or(usize::MAX);
        let next_cursor = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(|row| encode(&position(row))).transpose()?
        } else {
            None
        };
        Ok(Page {
            data: rows,
            next_cursor,
        })
    }
}

impl<C: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for PageRequest<C> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let Query(query) = Query::<PageQuery>::from_request_parts(parts, &())
            .await
            .map_err(|rejection| ApiError::BadRequest(rejection.body_text()))?;
        Ok(Self {
            limit: limit(query.limit)?,
            after: query.cursor.as_deref().map(decode).transpose()?,
        })
    }
}

/// A position in a newest-first listing: the time and id of the last row of the page before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeCursor {
    pub at: DateTime<Utc>,
    pub id: Uuid,
}

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

/// An opaque cursor for any position type.
pub fn encode<T: Serialize>(position: &T) -> Result<String, ApiError> {
    serde_json::to_vec(position)
        .map(|json| URL_SAFE_NO_PAD.encode(json))
        .map_err(|e| ApiError::Internal(format!("a cursor: {e}")))
}

/// Reads a cursor made by [`encode`]; anything else is 400.
pub fn decode<T: DeserializeOwned>(text: &str) -> Result<T, ApiError> {
    URL_SAFE_NO_PAD
        .decode(text)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or_else(|| ApiError::BadRequest("cursor is not one this API issued".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_a_bad_request() {
        let cursor = IdCursor {
            after: Uuid::now_v7(),
        };
        assert_eq!(
            decode::<IdCursor>(&encode(&cursor).unwrap()).unwrap(),
            cursor
        );
        assert!(decode::<IdCursor>("not-a-cursor").is_err());
    }

    #[test]
    fn the_extra_row_becomes_the_next_cursor() {
        let ids: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
        let by_id = |id: &Uuid| IdCursor { after: *id };
        let request = |limit| PageRequest::<IdCursor> { limit, after: None };
        let page = request(2).page(ids.clone(), by_id).unwrap();
        assert_eq!(page.data, ids[..2]);
        let next = page.next_cursor.unwrap();
        assert_eq!(decode::<IdCursor>(&next).unwrap().after, ids[1]);
        assert!(request(3).page(ids, by_id).unwrap().next_cursor.is_none());
    }

    #[test]
    fn limits_outside_the_range_are_refused() {
        assert_eq!(limit(None).unwrap(), 50);
        assert!(limit(Some(0)).is_err());
        assert!(limit(Some(201)).is_err());
    }
}
