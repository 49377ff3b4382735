//! The customer record as the API shows it: decrypted or masked by the caller's role, with its
//! `ETag`, and the answer to a conditional write.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::model::{Customer, CustomerChanges, CustomerId};
use super::repo::{Conditional, CustomerRow, PiiView};
use crate::platform::auth::{RequestTx, Role};
use crate::platform::conditional::etag;
use crate::platform::error::ApiError;
use crate::platform::pii::{self, PiiCipher};

pub fn pii_view(role: Role) -> PiiView {
    if role.sees_clear_pii() {
        PiiView::Clear
    } else {
        PiiView::Masked
    }
}

/// The API view of a row: the ID number decrypted when the row was read in clear, masked
/// otherwise.
pub fn to_customer(row: CustomerRow, cipher: &PiiCipher) -> Result<Customer, ApiError> {
    let id_number = match &row.id_number_ciphertext {
        Some(ciphertext) => cipher.open(ciphertext, row.customer_id).map_err(|_| {
            ApiError::Internal(format!(
                "ID number of customer {} does not decrypt with the configured key",
                row.customer_id
            ))
        })?,
        None => pii::mask(&row.id_number_last4),
    };
    let kyc_status = row.kyc_status;
    Ok(Customer {
        customer_id: CustomerId(row.customer_id),
        customer_code: row.customer_code,
        full_name: row.full_name,
        id_number,
        phone_number: row.phone_number,
        email: row.email,
        date_of_birth: row.date_of_birth,
        address: row.address.map(|a| a.0),
        kyc_status,
        kyc_decided_at: row.kyc_decided_at,
        kyc_reason: row.kyc_reason,
        credit_score: row.credit_score,
        version: row.version,
        created_at: row.created_at,
        updated_at: row.updated_at,
        branch: row.branch,
    })
}

/// A customer with its `ETag`.
pub fn with_etag(status: StatusCode, customer: Customer) -> Response {
    let mut response = (status, Json(&customer)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::ETAG, etag(customer.version));
    if status == StatusCode::CREATED {
        if let Ok(location) =
            HeaderValue::from_str(&format!("/v1/customers/{}", customer.customer_id.0))
        {
            headers.insert(header::LOCATION, location);
        }
    }
    response
}

pub fn changes_of(
    request: super::model::UpdateCustomerRequest,
) -> Result<CustomerChanges, ApiError> {
    let changes = CustomerChanges::try_from(request)?;
    if changes.is_empty() {
        return Err(ApiError::Unprocessable {
            detail: "the patch changes nothing".into(),
            errors: Vec::new(),
        });
    }
    Ok(changes)
}

/// Commits a conditional write that matched and answers with the customer; otherwise 404, or
/// `unmet` when the row exists but the condition failed.
pub async fn finish_conditional<A>(
    tx: RequestTx<A>,
    cipher: &PiiCipher,
    outcome: Conditional,
    unmet: ApiError,
) -> Result<Response, ApiError> {
    match outcome {
        Conditional::Done(row) => {
            tx.commit().await?;
            Ok(with_etag(StatusCode::OK, to_customer(*row, cipher)?))
        }
        Conditional::Stale => Err(unmet),
        Conditional::Missing => Err(ApiError::NotFound),
    }
}
