use axum::body::Body;
use axum::http::{Method, StatusCode};
use lakehouse_api::{app, openapi};
use serde_json::Value;

use crate::helpers::TestApp;

async fn fetch(app: &TestApp, path: &str) -> crate::helpers::TestResponse {
    app.send(
        app.request(Method::GET, path, None)
            .body(Body::empty())
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn the_committed_spec_is_exactly_what_the_service_serves() {
    let app = TestApp::spawn().await;
    let served = fetch(&app, "/openapi.json").await;
    assert_eq!(served.status, StatusCode::OK);
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json"))
            .expect("openapi/openapi.json is committed");
    assert!(
        served.text() == committed,
        "openapi/openapi.json is stale: run `cargo run -p lakehouse-api -- openapi` and commit it"
    );
    assert_eq!(
        served.text(),
        openapi::to_json(&app::openapi_document()).unwrap()
    );
}

#[test]
fn every_v1_operation_requires_a_bearer_token_and_documents_its_errors() {
    let spec: Value =
        serde_json::from_str(&openapi::to_json(&app::openapi_document()).unwrap()).unwrap();
    assert_eq!(spec["openapi"], "3.1.0");
    assert_eq!(
        spec["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    // The bearer scheme is stated once, for the whole document; only the health probes opt out.
    assert_eq!(spec["security"], serde_json::json!([{ "bearer": [] }]));
    let mut operations = 0;
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            operations += 1;
            let responses = op["responses"].as_object().unwrap();
            if path.starts_with("/health/") {
                assert_eq!(op["security"], serde_json::json!([{}]), "{method} {path}");
            } else {
                assert!(op.get("security").is_none(), "{method} {path} restates it");
            }
            if path.starts_with("/v1/") {
                for status in ["401", "403", "503"] {
                    let content = &responses[status]["content"]["application/problem+json"];
                    assert!(content.is_object(), "{method} {path} lacks {status}");
                }
            }
            assert!(op["operationId"].is_string(), "{method} {path}");
        }
    }
    assert!(operations >= 8, "{operations}");
}

#[tokio::test]
async fn swagger_ui_and_its_assets_are_served_without_network_access() {
    let app = TestApp::spawn().await;
    let page = fetch(&app, "/docs/").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.text().contains("swagger-ui"), "{}", page.text());
    assert!(
        !page.text().contains("https://"),
        "the page loads nothing from elsewhere"
    );

    let bundle = fetch(&app, "/docs/swagger-ui-bundle.js").await;
    assert_eq!(bundle.status, StatusCode::OK);
    assert!(bundle.body.len() > 100_000, "the vendored bundle is served");

    let init = fetch(&app, "/docs/swagger-initializer.js").await;
    assert!(init.text().contains("/openapi.json"), "{}", init.text());

    let redirect = fetch(&app, "/docs").await;
    assert!(redirect.status.is_redirection());
}

/// Every closed set of the crate: its texts are the ones serde writes and reads.
#[test]
fn every_closed_set_spells_its_texts_as_serde_does() {
    fn check<T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug>(
        all: &[T],
        text: impl Fn(&T) -> &'static str,
    ) {
        for value in all {
            let json = serde_json::to_string(value).unwrap();
            assert_eq!(json, format!("\"{}\"", text(value)));
            assert_eq!(&serde_json::from_str::<T>(&json).unwrap(), value);
        }
    }
    use lakehouse_api::domain::customer_record::model::KycStatus;
    use lakehouse_api::domain::jobs::JobStatus;
    use lakehouse_api::domain::ledger::model::{LoanStatus, PaymentKind, PaymentStatus};
    check(KycStatus::ALL, |v| v.as_str());
    check(JobStatus::ALL, |v| v.as_str());
    check(LoanStatus::ALL, |v| v.as_str());
    check(PaymentKind::ALL, |v| v.as_str());
    check(PaymentStatus::ALL, |v| v.as_str());
    use lakehouse_api::domain::contract::{Amortization, DayCount, Frequency, InterestMethod};
    check(DayCount::ALL, |v| v.as_str());
    check(Amortization::ALL, |v| v.as_str());
    check(InterestMethod::ALL, |v| v.as_str());
    check(Frequency::ALL, |v| v.as_str());
    use lakehouse_api::domain::ledger::{Overpayment, PaymentAllocation, Reamortisation};
    check(Overpayment::ALL, |v| v.as_str());
    check(PaymentAllocation::ALL, |v| v.as_str());
    check(Reamortisation::ALL, |v| v.as_str());
}

/// A field whose description names the values of one of the spec's enums is typed with that
/// enum, not as a bare string (`value_type = String` hid them): a client generator sees the
/// closed set, and Swagger UI offers its values.
#[test]
fn a_field_that_names_a_closed_set_s_values_shows_the_set() {
    fn walk(node: &Value, at: &str, sets: &[(String, Vec<String>)], found: &mut Vec<String>) {
        match node {
            Value::Object(object) => {
                if let Some(description) = object.get("description").and_then(Value::as_str) {
                    let schema = object.get("schema").unwrap_or(node);
                    let bare = matches!(
                        &schema["type"],
                        Value::String(t) if t == "string"
                    ) || schema["type"] == serde_json::json!(["string", "null"]);
                    let words: Vec<&str> = description
                        .split(|c: char| {
                            !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                        })
                        .collect();
                    for (name, values) in sets {
                        let named = values
                            .iter()
                            .filter(|v| words.contains(&v.as_str()))
                            .count();
                        if bare && schema.get("enum").is_none() && named >= 2 {
                            found.push(format!("{at} names {name}'s values"));
                        }
                    }
                }
                for (key, value) in object {
                    walk(value, &format!("{at}/{key}"), sets, found);
                }
            }
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    walk(item, &format!("{at}[{i}]"), sets, found);
                }
            }
            _ => {}
        }
    }
    let spec: Value =
        serde_json::from_str(&openapi::to_json(&app::openapi_document()).unwrap()).unwrap();
    let sets: Vec<(String, Vec<String>)> = spec["components"]["schemas"]
        .as_object()
        .unwrap()
        .iter()
        .filter_map(|(name, schema)| {
            let values = schema["enum"].as_array()?;
            Some((
                name.clone(),
                values
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect(),
            ))
        })
        .collect();
    assert!(sets.iter().any(|(name, _)| name == "DayCount"), "{sets:?}");
    let mut found = Vec::new();
    walk(&spec, "", &sets, &mut found);
    assert!(found.is_empty(), "{found:#?}");
    // And the fields that name no value in their description, each by its enum.
    let schemas = &spec["components"]["schemas"];
    let property = |schema: &str, field: &str| schemas[schema]["properties"][field].to_string();
    let parameter = |path: &str, name: &str| {
        spec["paths"][path]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .map(|p| p["schema"].to_string())
            .unwrap_or_default()
    };
    for (field, set) in [
        ("overpayment", "Overpayment"),
        ("payment_allocation", "PaymentAllocation"),
        ("prepayment_reamortisation", "Reamortisation"),
        ("day_count", "DayCount"),
    ] {
        for schema in ["CreateProductRequest", "UpdateProductRequest"] {
            let shown = property(schema, field);
            assert!(
                shown.contains(&format!("schemas/{set}\"")),
                "{schema}.{field}: {shown}"
            );
        }
    }
    for (shown, set) in [
        (property("InstallmentDue", "status"), "InstallmentStatus"),
        (parameter("/v1/payments", "payment_type"), "PaymentKind"),
        (parameter("/v1/metadata/jobs", "status"), "JobStatus"),
    ] {
        assert!(
            shown.contains(&format!("schemas/{set}\"")),
            "{set}: {shown}"
        );
    }
}
