//! Builders for what most tests need first: customers, loans in a given state, payments. Each
//! returns a typed value ([`TestCustomer`], [`TestLoan`]) that keeps the whole response body
//! behind it (`loan["status"]` still reads the JSON).

use std::ops::Deref;

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

use super::{customer_body, TestApp, TestResponse};

/// A customer as the API created it.
#[derive(Debug, Clone)]
pub struct TestCustomer {
    pub id: Uuid,
    pub body: Value,
}

impl Deref for TestCustomer {
    type Target = Value;
    fn deref(&self) -> &Value {
        &self.body
    }
}

/// A loan as the API last returned it.
#[derive(Debug, Clone)]
pub struct TestLoan {
    pub id: Uuid,
    pub number: String,
    pub body: Value,
}

impl TestLoan {
    /// The loan in `response`, which must have the `expected` status.
    pub fn from_response(response: TestResponse, expected: StatusCode) -> Self {
        assert_eq!(response.status, expected, "{}", response.text());
        let body = response.json();
        Self {
            id: body["loan_id"].as_str().unwrap().parse().unwrap(),
            number: body["loan_number"].as_str().unwrap().to_owned(),
            body,
        }
    }
}

impl std::fmt::Display for TestLoan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.body.fmt(f)
    }
}

impl Deref for TestLoan {
    type Target = Value;
    fn deref(&self) -> &Value {
        &self.body
    }
}

/// The body of a repayment of `amount` on `loan`.
pub fn repayment(loan: &Value, amount: &str) -> Value {
    json!({"loan_id": loan["loan_id"], "payment_type": "REPAYMENT", "amount": amount})
}

impl TestApp {
    /// Creates a customer as staff.
    pub async fn create_customer(&self, code: &str, id_number: &str) -> TestCustomer {
        let response = self
            .json(
                Method::POST,
                "/v1/customers",
                &self.staff(),
                &customer_body(code, id_number),
            )
            .await;
        assert_eq!(response.status, StatusCode::CREATED, "{}", response.text());
        let body = response.json();
        TestCustomer {
            id: body["customer_id"].as_str().unwrap().parse().unwrap(),
            body,
        }
    }

    /// Creates a customer and returns its id.
    pub async fn customer_id(&self, code: &str, id_number: &str) -> Uuid {
        self.create_customer(code, id_number).await.id
    }

    /// A customer whose KYC staff approved; returns its id.
    pub async fn approved_customer(&self, code: &str, id_number: &str) -> Uuid {
        let id = self.customer_id(code, id_number).await;
        let kyc = self
            .json(
                Method::POST,
                &format!("/v1/customers/{id}/kyc"),
                &self.staff(),
                &json!({"decision": "APPROVE"}),
            )
            .await;
        assert_eq!(kyc.status, StatusCode::OK, "{}", kyc.text());
        id
    }

    pub async fn apply(&self, token: &str, body: Value) -> TestResponse {
        self.json(Method::POST, "/v1/loans", token, &body).await
    }

    /// Staff apply for `customer` (PERSONAL_STD, 24 months).
    pub async fn loan_for(&self, customer: Uuid, amount: &str) -> TestLoan {
        self.ensure_products().await;
        let response = self
            .apply(&self.staff(), json!({"customer_id": customer, "product_code": "PERSONAL_STD", "amount": amount, "term_months": 24}))
            .await;
        TestLoan::from_response(response, StatusCode::CREATED)
    }

    pub async fn act(&self, token: &str, loan: &Value, verb: &str) -> TestResponse {
        let id = loan["loan_id"].as_str().unwrap();
        let body = if verb == "reject" {
            json!({"reason": "insufficient income"})
        } else {
            json!({})
        };
        self.json(
            Method::POST,
            &format!("/v1/loans/{id}/{verb}"),
            token,
            &body,
        )
        .await
    }

    pub async fn loan_count(&self) -> i64 {
        self.count("SELECT count(*) FROM core.loans").await
    }
    /// A disbursed loan of `product` for `customer`.
    pub async fn disbursed_loan(
        &self,
        customer: Uuid,
        product: &str,
        amount: &str,
        term: i32,
    ) -> TestLoan {
        self.ensure_products().await;
        let response = self
            .apply(&self.staff(), json!({"customer_id": customer, "product_code": product, "amount": amount, "term_months": term}))
            .await;
        let loan = TestLoan::from_response(response, StatusCode::CREATED);
        let approved = self.act(&self.staff(), &loan, "approve").await;
        TestLoan::from_response(approved, StatusCode::OK);
        let disbursed = self.act(&self.staff(), &loan, "disburse").await;
        TestLoan::from_response(disbursed, StatusCode::OK)
    }

    pub async fn pay(&self, token: &str, key: &str, body: &Value) -> TestResponse {
        self.json_with(
            Method::POST,
            "/v1/payments",
            token,
            body,
            &[("idempotency-key", key)],
        )
        .await
    }

    /// The loan as it is now.
    pub async fn loan(&self, loan: &Value) -> TestLoan {
        let response = self
            .get(
                &format!("/v1/loans/{}", loan["loan_id"].as_str().unwrap()),
                &self.staff(),
            )
            .await;
        TestLoan::from_response(response, StatusCode::OK)
    }
    pub async fn get_loan_by_number(&self, number: &str) -> TestLoan {
        let response = self
            .get(&format!("/v1/loans/by-number/{number}"), &self.staff())
            .await;
        TestLoan::from_response(response, StatusCode::OK)
    }
}
