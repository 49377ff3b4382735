//! `/v1/reports/collection-sheet`: what to collect on a day, installment by installment.

use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::domain::money::Amount;
use crate::platform::auth::{RequestTx, RiskViewers, Role};
use crate::platform::csv::{self, Format};
use crate::platform::error::{responses, ApiError};
use crate::platform::extract::AppQuery;
use crate::platform::pagination::{Page, PageQuery, PageRequest};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SheetQuery {
    /// The day to collect on (default today's business date).
    pub date: Option<NaiveDate>,
}

/// Where a sheet's page starts: after this loan's installment, in the order of the loans' next
/// due dates.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct SheetCursor {
    pub due: NaiveDate,
    pub loan: Uuid,
    pub installment: i32,
}

/// One installment to collect.
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct SheetLine {
    /// The loan's next due date: the sheet's order.
    #[serde(skip)]
    pub next_due_date: NaiveDate,
    pub loan_id: Uuid,
    pub loan_number: String,
    pub installment_number: i32,
    pub due_date: NaiveDate,
    /// Days between the due date and the sheet's date (0: due that day).
    pub days_overdue: i32,
    pub customer_id: Uuid,
    pub customer_code: String,
    /// In clear for staff and administrators; analysts see its last three digits.
    pub phone_number: Option<String>,
    pub principal: Amount,
    pub interest: Amount,
    /// What the installment still owes: principal and interest.
    pub to_collect: Amount,
}

/// Every installment due on the date or before it and unpaid now, on the loans the caller sees
/// (a teller: their branches'), a loan's installments together, the loans in the order their
/// next due dates came. Keyset pages; JSON, or CSV with `Accept: text/csv` (the page's lines,
/// `Link: <…>; rel="next"` to the next).
#[utoipa::path(
    get,
    path = "/v1/reports/collection-sheet",
    params(SheetQuery, PageQuery),
    responses(
        (status = 200, description = "One page",
         content((Page<SheetLine> = "application/json"), (String = "text/csv"))),
        responses::Common
    )
)]
pub(super) async fn collection_sheet(
    mut tx: RequestTx<RiskViewers>,
    headers: HeaderMap,
    AppQuery(query): AppQuery<SheetQuery>,
    page: PageRequest<SheetCursor>,
) -> Result<Response, ApiError> {
    let masked = tx.caller().role == Role::Analyst;
    let date = match query.date {
        Some(date) => date,
        None => super::repo::today(&mut tx).await?,
    };
    let mut rows = super::repo::sheet(&mut tx, date, page.after, page.fetch()).await?;
    tx.commit().await?;
    if masked {
        for row in &mut rows {
            row.phone_number = row.phone_number.as_deref().map(mask_phone);
        }
    }
    let page = page.page(rows, |r| SheetCursor {
        due: r.next_due_date,
        loan: r.loan_id,
        installment: r.installment_number,
    })?;
    Ok(match Format::of(&headers) {
        Format::Json => Json(page).into_response(),
        Format::Csv => {
            let mut body = String::from(
                "loan_number,installment_number,due_date,days_overdue,customer_code,\
                 phone_number,principal,interest,to_collect\r\n",
            );
            for l in &page.data {
                body.push_str(&csv::line(&[
                    l.loan_number.clone(),
                    l.installment_number.to_string(),
                    l.due_date.to_string(),
                    l.days_overdue.to_string(),
                    l.customer_code.clone(),
                    l.phone_number.clone().unwrap_or_default(),
                    format!("{:.2}", l.principal.0),
                    format!("{:.2}", l.interest.0),
                    format!("{:.2}", l.to_collect.0),
                ]));
            }
            let mut response = ([(header::CONTENT_TYPE, csv::CONTENT_TYPE)], body).into_response();
            if let Some(next) = &page.next_cursor {
                let date = date.to_string();
                let link = format!(
                    "</v1/reports/collection-sheet?date={date}&cursor={next}>; rel=\"next\""
                );
                if let Ok(value) = header::HeaderValue::from_str(&link) {
                    response.headers_mut().insert(header::LINK, value);
                }
            }
            response
        }
    })
}

/// `+84901234567` → `*********567`.
fn mask_phone(phone: &str) -> String {
    let hidden = phone.chars().count().saturating_sub(3);
    phone
        .chars()
        .enumerate()
        .map(|(i, c)| if i < hidden { '*' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_analyst_sees_a_phone_s_last_three_digits() {
        assert_eq!(super::mask_phone("+84901234567"), "*********567");
        assert_eq!(super::mask_phone("12"), "12");
    }
}
