//! The OpenAPI document's frame: info, tags, the bearer scheme (stated once, for every
//! operation) and the shared error responses.
//! Paths and schemas come from the handlers themselves (`utoipa_axum::routes!`).

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::OpenApi as OpenApiDoc;
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "lakehouse-api",
        description = "Transactional REST API over the PostgreSQL core of a consumer-lending \
                       business. Every request runs in one transaction as the caller's database \
                       role; row-level security keeps each customer to their own rows.\n\n\
                       Authorize with a bearer token (`lakehouse-api token --role staff`). Money \
                       is a decimal string with at most two decimals; times are RFC 3339. Errors \
                       are `application/problem+json` (RFC 9457).\n\n\
                       Where the service reads from replicas, every write's response carries a \
                       `Consistency-Token` header; send the latest one back as a \
                       `Consistency-Token` request header and your reads see your writes.",
        license(name = "MIT")
    ),
    tags(
        (name = "customers", description = "Customer master data, KYC decisions"),
        (name = "products", description = "Loan products and their bounds"),
        (name = "loans", description = "Applications, decisions, disbursement, schedules"),
        (name = "payments", description = "Repayments and fees, exactly once (Idempotency-Key)"),
        (name = "ledger", description = "The double-entry journal: trial balance"),
        (name = "events", description = "Loan, fee, contact and payment events as Server-Sent Events"),
        (name = "analytics", description = "Portfolio and risk views"),
        (name = "imports", description = "Customer batches loaded by the ETL pipeline through staging"),
        (name = "metadata", description = "Job runs and data lineage"),
        (name = "ops", description = "Health probes")
    ),
    components(schemas(
        crate::platform::error::Problem,
        crate::platform::error::FieldError,
        crate::api::loans::model::LoanStatus,
        crate::api::payments::model::PaymentStatus,
        crate::domain::customer_record::model::KycStatus,
        crate::domain::events::SseEvent
    )),
    // Every operation takes the bearer token but the health probes, which say `security(())`.
    security(("bearer" = [])),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut OpenApiDoc) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "A JWT: from the configured OpenID Connect provider (RS256, ES256 or \
                         EdDSA, its roles mapped to customer|staff|analyst|etl|admin), or a local \
                         HS256 token (`lakehouse-api token`) with claims sub, role, customer_id \
                         (customers only) and exp",
                    ))
                    .build(),
            ),
        );
    }
}

/// The frame every route is merged into.
pub fn base() -> OpenApiDoc {
    ApiDoc::openapi()
}

/// The document as committed in `openapi/openapi.json`: pretty JSON with a final newline.
pub fn to_json(doc: &OpenApiDoc) -> Result<String, serde_json::Error> {
    let mut json = doc.to_pretty_json()?;
    json.push('\n');
    Ok(json)
}
