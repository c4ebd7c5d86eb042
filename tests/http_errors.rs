//! The verify API's error counter, alone in its binary so no other test's errors reach it.

mod support;

use reqwest::StatusCode;
use serde_json::json;
use support::api::{Api, sample};
use support::*;

on_both_stores!(errors_are_counted_by_endpoint_and_status);

const TOKENS: [&str; 2] = ["first-token-0123456789", "second-token-0123456789"];

/// Every 4xx and 5xx answer of `/v1/*` is counted by endpoint and status.
/// Counters are per process: this binary holds only this test, and its two
/// runs (one per store) take turns, so each series grows by exactly what
/// this run sent.
async fn errors_are_counted_by_endpoint_and_status(db: &TestDb) {
    static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _turn = ONE_AT_A_TIME.lock().await;
    let api = Api::start(db, &[]).await;
    let guarded = Api::start(db, &TOKENS).await;
    let series = |endpoint: &str, status: u16| {
        format!(r#"keygate_http_errors_total{{endpoint="{endpoint}",status="{status}"}}"#)
    };
    let count = |text: &str, endpoint: &str, status: u16| {
        sample(text, &series(endpoint, status)).unwrap_or(0.0)
    };
    let before = api.get("/metrics").await.text().await.unwrap();
    let huge = json!({ "key": "x".repeat(5000) });
    let sent: Vec<(&str, u16, reqwest::RequestBuilder)> = vec![
        (
            "verify",
            400,
            api.post("/v1/keys/verify")
                .header("content-type", "application/json")
                .body("{"),
        ),
        ("verify", 413, api.post("/v1/keys/verify").json(&huge)),
        (
            "verify",
            405,
            api.client.get(format!("{}/v1/keys/verify", api.base)),
        ),
        (
            "authenticate",
            415,
            api.post("/v1/apps/authenticate").body("{}"),
        ),
        ("other", 404, api.post("/v1/keys/nope").json(&json!({}))),
        (
            "verify",
            401,
            guarded.post("/v1/keys/verify").json(&json!({ "key": "x" })),
        ),
    ];
    let mut expected: Vec<(&str, u16)> = Vec::new();
    for (endpoint, status, request) in sent {
        assert_eq!(request.send().await.unwrap().status().as_u16(), status);
        expected.push((endpoint, status));
    }
    // A verification answered 200 is no error, whatever its code.
    let (_, key) = active_app(db, "Fine").await;
    assert_eq!(api.code(json!({ "key": key.expose() })).await, "VALID");
    db.store.close().await;
    let failed = api.verify_unknown_key().await;
    assert_eq!(failed.status(), StatusCode::INTERNAL_SERVER_ERROR);
    expected.push(("verify", 500));

    let after = api.get("/metrics").await.text().await.unwrap();
    for (endpoint, status) in expected {
        let grown = count(&after, endpoint, status) - count(&before, endpoint, status);
        assert_eq!(
            grown,
            1.0,
            "{} grew by {grown}:\n{after}",
            series(endpoint, status)
        );
    }
    for line in after
        .lines()
        .filter(|l| l.starts_with("keygate_http_errors_total{"))
    {
        assert!(!line.contains(r#"status="200""#), "{line}");
        assert!(
            ["verify", "authenticate", "other"]
                .iter()
                .any(|e| line.contains(&format!(r#"endpoint="{e}""#))),
            "{line}"
        );
    }
    api.stop().await;
    guarded.stop().await;
}
