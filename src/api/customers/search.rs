//! `POST /v1/customers/search`: staff find a customer by customer code, phone number, national
//! ID or name. A POST, so that a national ID never sits in a URL where proxies log it.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::customer_record::model::Customer;
use crate::domain::customer_record::repo::{self, CustomerRow};
use crate::domain::customer_record::view::to_customer;
use crate::domain::customer_record::{parse_customer_code, parse_phone};
use crate::platform::auth::{RequestTx, StaffOnly};
use crate::platform::error::{responses, ApiError, FieldError};
use crate::platform::extract::AppJson;
use crate::platform::pagination::{Page, PageQuery, PageRequest};
use crate::platform::pii::IdNumber;
use crate::platform::state::AppState;

/// Exactly one of the four.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomerSearchRequest {
    /// The exact customer code (letter case ignored).
    pub customer_code: Option<String>,
    /// A phone number in any form a write accepts; compared in E.164. Phones are not unique.
    pub phone: Option<String>,
    /// The national ID number, found through its blind index.
    pub national_id: Option<String>,
    /// At least 3 characters: names that start with it or resemble it, ignoring case and
    /// accents; names that start with it come first.
    pub name: Option<String>,
}

/// Where a search page starts: after this rank (name searches) and id.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct SearchCursor {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rank: Option<i64>,
    id: Uuid,
}

enum SearchKey {
    Code(String),
    Phone(String),
    NationalId(IdNumber),
    Name(String),
}

const NAME_MIN_CHARS: usize = 3;
const NAME_MAX_CHARS: usize = 255;

impl TryFrom<CustomerSearchRequest> for SearchKey {
    type Error = ApiError;

    fn try_from(request: CustomerSearchRequest) -> Result<Self, ApiError> {
        let invalid = |field: &'static str, message: &'static str| ApiError::Unprocessable {
            detail: format!("{field} is not a valid search key"),
            errors: vec![FieldError::new(field, message)],
        };
        let given = [
            request.customer_code.is_some(),
            request.phone.is_some(),
            request.national_id.is_some(),
            request.name.is_some(),
        ];
        if given.iter().filter(|g| **g).count() != 1 {
            return Err(ApiError::Unprocessable {
                detail: "give exactly one of customer_code, phone, national_id and name".into(),
                errors: vec![FieldError::new("", "exactly one search key is required")],
            });
        }
        if let Some(code) = request.customer_code {
            let code = parse_customer_code(&code.trim().to_ascii_uppercase())
                .map_err(|m| invalid("customer_code", m))?;
            return Ok(Self::Code(code));
        }
        if let Some(phone) = request.phone {
            return Ok(Self::Phone(
                parse_phone(&phone).map_err(|m| invalid("phone", m))?,
            ));
        }
        if let Some(id) = request.national_id {
            return Ok(Self::NationalId(
                IdNumber::parse(&id).map_err(|m| invalid("national_id", m))?,
            ));
        }
        let name = request.name.unwrap_or_default();
        let name = name.trim();
        let chars = name.chars().count();
        if !(NAME_MIN_CHARS..=NAME_MAX_CHARS).contains(&chars) || name.chars().any(char::is_control)
        {
            return Err(invalid(
                "name",
                "must be 3 to 255 characters, without control characters",
            ));
        }
        Ok(Self::Name(name.to_owned()))
    }
}

/// Rows of a search that has no rank (their order is the id's).
fn unranked(rows: Vec<CustomerRow>) -> Vec<(CustomerRow, Option<i64>)> {
    rows.into_iter().map(|row| (row, None)).collect()
}

/// Find customers (staff, administrators) by exactly one of customer code, phone number,
/// national ID or name. Results come in keyset pages (`?limit=&cursor=`); name matches come
/// best first.
#[utoipa::path(
    post,
    path = "/v1/customers/search",
    params(PageQuery),
    request_body = CustomerSearchRequest,
    responses(
        (status = 200, description = "One page of matches", body = Page<Customer>),
        responses::Common, responses::JsonBody, responses::Unprocessable
    )
)]
pub(super) async fn search_customers(
    State(state): State<AppState>,
    mut tx: RequestTx<StaffOnly>,
    page: PageRequest<SearchCursor>,
    AppJson(request): AppJson<CustomerSearchRequest>,
) -> Result<Json<Page<Customer>>, ApiError> {
    let key = SearchKey::try_from(request)?;
    let after_id = page.after.map_or(Uuid::nil(), |c| c.id);
    let rows = match key {
        SearchKey::Code(code) => {
            unranked(repo::search_unique(&mut tx, repo::SEARCH_BY_CODE, code, after_id).await?)
        }
        SearchKey::NationalId(id) => {
            let hash = state.pii.hash(&id);
            unranked(
                repo::search_unique(&mut tx, repo::SEARCH_BY_ID_NUMBER_HASH, hash, after_id)
                    .await?,
            )
        }
        SearchKey::Phone(phone) => {
            unranked(repo::search_by_phone(&mut tx, &phone, after_id, page.fetch()).await?)
        }
        SearchKey::Name(name) => {
            let after_rank = page.after.and_then(|c| c.rank).unwrap_or(i64::MAX);
            repo::search_by_name(&mut tx, &name, (after_rank, after_id), page.fetch())
                .await?
                .into_iter()
                .map(|r| (r.row, Some(r.rank)))
                .collect()
        }
    };
    tx.commit().await?;
    let page = page.page(rows, |(row, rank)| SearchCursor {
        rank: *rank,
        id: row.customer_id,
    })?;
    page.try_map(|(row, _)| to_customer(row, &state.pii))
        .map(Json)
}
