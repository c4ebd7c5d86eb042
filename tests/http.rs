//! The verify API over a real socket, on SQLite and PostgreSQL: codes, bad input, tokens, health, metrics.

mod support;

use keygate::domain::catalog::ScopeCatalog;
use keygate::domain::credentials::{ApiKey, ApplicationId};
use keygate::service::{Actor, Service};
use keygate::store::Store;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::api::{Api, sample};
use support::*;

on_both_stores!(
    a_valid_key_answers_with_its_app_scopes_and_expiry,
    each_code_over_http_says_nothing_about_other_apps,
    authenticate_takes_json_or_basic,
    bad_input_gets_a_json_error,
    bearer_tokens_guard_v1_only,
    readiness_follows_the_database,
    metrics_count_verifications_and_rows,
    gauges_are_counted_at_most_every_few_seconds,
    a_rotated_key_and_secret_answer_with_their_grace,
);

const TOKENS: [&str; 2] = ["first-token-0123456789", "second-token-0123456789"];

/// No clear key or Secret in any log line of this binary, at any level.
fn assert_not_logged(secrets: &[&str]) {
    let logs = captured_logs("trace");
    let text = logs.text();
    for s in secrets {
        assert!(!text.contains(s), "a presented credential reached the logs");
    }
}

async fn a_valid_key_answers_with_its_app_scopes_and_expiry(db: &TestDb) {
    let (app, key) = active_app(db, "Front desk").await;
    let api = Api::start(db, &[]).await;
    let (status, headers, answer) = api.verify(json!({ "key": key.expose() })).await;
    assert_eq!(status, StatusCode::OK);
    let expires = (db.clock.now() + chrono::TimeDelta::days(365))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let key_id = answer["key"]["id"].as_str().unwrap().to_owned();
    assert!(key_id.starts_with("key_"), "{answer}");
    assert_eq!(
        answer,
        json!({
            "valid": true,
            "code": "VALID",
            "app": {
                "id": app.as_str(),
                "name": "Front desk",
                "guild_id": GUILD.0.to_string(),
                "login_user_type": "guest",
                "source_app": "external_cma",
                "booking_marker": "Mobile Booking",
            },
            "scopes": ["appointments", "guests"],
            "key": {
                "id": key_id,
                "start": &key.expose()[..7],
                "created_at": db.clock.now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                "expires_at": expires,
                "grace": null,
            },
        })
    );
    assert_eq!(headers["keygate-key-expiration"], expires.as_str());
    api.stop().await;
    assert_not_logged(&[key.expose()]);
}

fn one_typo(key: &str) -> String {
    let mut chars: Vec<char> = key.chars().collect();
    chars[10] = if chars[10] == 'x' { 'y' } else { 'x' };
    chars.into_iter().collect()
}

async fn each_code_over_http_says_nothing_about_other_apps(db: &TestDb) {
    let (app, key) = active_app(db, "Good").await;
    let (other_app, other) = active_app(db, "Other").await;
    support::revoke(&db.service, GUILD, &other_app, Actor::approver(BOB))
        .await
        .unwrap();
    let api = Api::start(db, &[]).await;
    let k = key.expose();
    let cases = [
        (json!({ "key": one_typo(k) }), "MALFORMED"),
        (
            json!({ "key": format!("kg_{}", "A".repeat(600)) }),
            "MALFORMED",
        ),
        (json!({ "key": ApiKey::generate().expose() }), "NOT_FOUND"),
        (json!({ "key": k, "guild_id": "42" }), "NOT_FOUND"),
        (
            json!({ "key": k, "app_id": other_app.as_str() }),
            "WRONG_APP",
        ),
        (
            json!({ "key": other.expose(), "app_id": other_app.as_str() }),
            "REVOKED",
        ),
        (
            json!({ "key": k, "app_id": app.as_str(), "guild_id": GUILD.0.to_string(), "scopes": ["guests", "payroll"] }),
            "INSUFFICIENT_SCOPE",
        ),
    ];
    for (body, code) in cases {
        let (status, headers, answer) = api.verify(body.clone()).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(answer["code"], code, "{body}");
        assert_eq!(answer["valid"], false);
        for field in ["app", "scopes", "key"] {
            assert_eq!(
                answer[field],
                Value::Null,
                "{code}: {field} must say nothing"
            );
        }
        assert!(headers.get("keygate-key-expiration").is_none());
        if code == "INSUFFICIENT_SCOPE" {
            assert_eq!(answer["missing_scopes"], json!(["payroll"]));
        } else {
            assert!(answer.get("missing_scopes").is_none(), "{answer}");
        }
    }
    // A guild id as a number is accepted too.
    assert_eq!(
        api.code(json!({ "key": k, "guild_id": GUILD.0 })).await,
        "VALID"
    );
    db.clock.advance(chrono::TimeDelta::days(366));
    assert_eq!(api.code(json!({ "key": k })).await, "EXPIRED");
    api.stop().await;
    // Nor the near-copies presented: a mistyped key, an over-long one, or a
    // long piece of the real one.
    let typo = one_typo(k);
    let long = format!("kg_{}", "A".repeat(600));
    assert_not_logged(&[k, other.expose(), &typo, &long, &k[3..30], &typo[3..30]]);
}

async fn authenticate_takes_json_or_basic(db: &TestDb) {
    let submitted = submit(&db.service, ALICE, "Webstore").await;
    let app = submitted.app.id;
    let secret = submitted.credentials.unwrap().secret.expose().to_owned();
    let api = Api::start(db, &[]).await;

    let r = api
        .post("/v1/apps/authenticate")
        .json(&json!({ "app_id": app.as_str(), "secret": secret }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["code"], "VALID");
    assert_eq!(answer["app"]["id"], app.as_str());
    assert!(answer["key"]["id"].as_str().unwrap().starts_with("sec_"));
    assert_eq!(answer["key"]["start"], &secret[..8]);

    // HTTP Basic, no body at all.
    let r = api
        .post("/v1/apps/authenticate")
        .basic_auth(app.as_str(), Some(&secret))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "VALID");

    let wrong = api
        .post("/v1/apps/authenticate")
        .basic_auth(app.as_str(), Some("kgs_".to_owned() + &"x".repeat(44)))
        .send()
        .await
        .unwrap();
    let wrong: Value = wrong.json().await.unwrap();
    assert_eq!(wrong["code"], "NOT_FOUND");
    assert_eq!(wrong["app"], Value::Null);
    api.stop().await;

    // With tokens, Authorization carries the token: Basic is refused, the body works.
    let guarded = Api::start(db, &TOKENS).await;
    let r = guarded
        .post("/v1/apps/authenticate")
        .basic_auth(app.as_str(), Some(&secret))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = guarded
        .post("/v1/apps/authenticate")
        .bearer_auth(TOKENS[0])
        .json(&json!({ "app_id": app.as_str(), "secret": secret }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "VALID");
    guarded.stop().await;
    assert_not_logged(&[&secret]);
}

async fn bad_input_gets_a_json_error(db: &TestDb) {
    let (_, key) = active_app(db, "Good").await;
    let api = Api::start(db, &[]).await;
    let before = db.row_counts().await;
    let raw = |body: &'static str, content_type: Option<&'static str>| {
        let mut r = api.post("/v1/keys/verify").body(body);
        if let Some(t) = content_type {
            r = r.header("content-type", t);
        }
        r
    };
    let huge = json!({ "key": key.expose(), "scopes": vec!["x".repeat(100); 50] });
    let cases: Vec<(&str, reqwest::RequestBuilder, StatusCode)> = vec![
        (
            "over 4 KiB",
            api.post("/v1/keys/verify").json(&huge),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            "not JSON",
            raw("key=kg_x", Some("application/json")),
            StatusCode::BAD_REQUEST,
        ),
        (
            "no key",
            raw(r#"{"app_id": null}"#, Some("application/json")),
            StatusCode::BAD_REQUEST,
        ),
        (
            "key not a string",
            raw(r#"{"key": 5}"#, Some("application/json")),
            StatusCode::BAD_REQUEST,
        ),
        (
            "bad app_id",
            raw(
                r#"{"key": "kg_x", "app_id": "nope"}"#,
                Some("application/json"),
            ),
            StatusCode::BAD_REQUEST,
        ),
        (
            "bad guild_id",
            raw(
                r#"{"key": "kg_x", "guild_id": "abc"}"#,
                Some("application/json"),
            ),
            StatusCode::BAD_REQUEST,
        ),
        (
            "text/plain",
            raw(r#"{"key": "kg_x"}"#, Some("text/plain")),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "no content type",
            raw(r#"{"key": "kg_x"}"#, None),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "unknown route",
            api.post("/v1/keys/nope").json(&json!({})),
            StatusCode::NOT_FOUND,
        ),
        (
            "unknown top route",
            api.client.get(format!("{}/admin", api.base)),
            StatusCode::NOT_FOUND,
        ),
        (
            "wrong method",
            api.client.get(format!("{}/v1/keys/verify", api.base)),
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            "authenticate without anything",
            api.post("/v1/apps/authenticate"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
    ];
    for (case, request, status) in cases {
        let r = request.send().await.unwrap();
        assert_eq!(r.status(), status, "{case}");
        let body: Value = r
            .json()
            .await
            .unwrap_or_else(|e| panic!("{case}: not JSON: {e}"));
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{case}: {body}"
        );
    }
    assert_eq!(db.row_counts().await, before, "bad input writes nothing");
    // An error never quotes what was sent, which may be a credential.
    let r = api
        .post("/v1/keys/verify")
        .json(&json!({ "key": key.expose(), "scopes": key.expose() }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let error = r.text().await.unwrap();
    assert!(!error.contains(&key.expose()[3..]), "{error}");
    let r = raw(r#"{"app_id": "app_x"}"#, Some("application/json"))
        .send()
        .await
        .unwrap();
    assert!(r.text().await.unwrap().contains("missing field `key`"));
    api.stop().await;
    assert_not_logged(&[key.expose()]);
}

async fn bearer_tokens_guard_v1_only(db: &TestDb) {
    let (_, key) = active_app(db, "Guarded").await;
    let api = Api::start(db, &TOKENS).await;
    let body = json!({ "key": key.expose() });
    for token in TOKENS {
        let r = api
            .post("/v1/keys/verify")
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "either token works");
        assert_eq!(r.json::<Value>().await.unwrap()["code"], "VALID");
    }
    let refused = [
        ("no token", api.post("/v1/keys/verify").json(&body)),
        (
            "wrong token",
            api.post("/v1/keys/verify")
                .bearer_auth("first-token-012345678X")
                .json(&body),
        ),
        (
            "a prefix of a token",
            api.post("/v1/keys/verify")
                .bearer_auth("first-token")
                .json(&body),
        ),
        (
            "wrong scheme",
            api.post("/v1/keys/verify")
                .basic_auth(TOKENS[0], None::<&str>)
                .json(&body),
        ),
        (
            "unknown route still needs it",
            api.post("/v1/keys/nope").json(&body),
        ),
    ];
    for (case, request) in refused {
        let r = request.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{case}");
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
        let answer: Value = r.json().await.unwrap();
        assert!(answer["error"].is_string(), "{case}");
        assert!(
            answer.get("code").is_none(),
            "{case}: no verdict without a token"
        );
    }
    for open in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(api.get(open).await.status(), StatusCode::OK, "{open}");
    }
    api.stop().await;
    assert_not_logged(&[key.expose(), TOKENS[0], TOKENS[1]]);
}

async fn readiness_follows_the_database(db: &TestDb) {
    let api = Api::start(db, &[]).await;
    assert_eq!(api.get("/healthz").await.status(), StatusCode::OK);
    assert_eq!(api.get("/readyz").await.status(), StatusCode::OK);
    db.store.close().await;
    let r = api.get("/readyz").await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.json::<Value>().await.unwrap()["error"].is_string());
    assert_eq!(
        api.get("/healthz").await.status(),
        StatusCode::OK,
        "alive all the same"
    );
    // A verification that needs the database is our failure, said without detail.
    let r = api.verify_unknown_key().await;
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let error = r.json::<Value>().await.unwrap()["error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(error.contains("reference"), "{error}");
    assert!(!error.contains("pool"), "no internals: {error}");
    api.stop().await;
}

async fn metrics_count_verifications_and_rows(db: &TestDb) {
    let (_, key) = active_app(db, "Counted").await;
    let api = Api::start(db, &[]).await;
    api.code(json!({ "key": key.expose() })).await;
    api.code(json!({ "key": key.expose(), "app_id": ApplicationId::generate().as_str() }))
        .await;
    let r = api.get("/metrics").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = r.text().await.unwrap();
    for line in [
        r#"keygate_verifications_total{endpoint="verify",code="VALID"}"#,
        r#"keygate_verifications_total{endpoint="verify",code="WRONG_APP"}"#,
        r#"keygate_verify_duration_seconds_bucket{endpoint="verify",le="0.001"}"#,
        r#"keygate_verify_cache_total{result="hit"}"#,
        r#"keygate_applications{status="key_issued"}"#,
        "keygate_pending_approval_requests ",
        "keygate_audit_outbox_backlog ",
        "# HELP keygate_verifications_total",
    ] {
        assert!(text.contains(line), "{line} missing from:\n{text}");
    }
    api.stop().await;
}

/// `/metrics` needs no token, so a flood of scrapes must not become a flood
/// of COUNT queries: the row counts are read again only once they are
/// `GAUGES_MAX_AGE` old. An app made right after a scrape shows only then.
async fn gauges_are_counted_at_most_every_few_seconds(db: &TestDb) {
    const SERIES: &str = r#"keygate_applications{status="key_issued"}"#;
    let api = Api::start(db, &[]).await;
    let scrape = || async { api.get("/metrics").await.text().await.unwrap() };
    let first_at = Instant::now();
    let first = scrape().await;
    assert!(
        first.contains("# TYPE keygate_applications gauge"),
        "{first}"
    );
    assert_eq!(sample(&first, SERIES), Some(0.0), "{first}");
    active_app(db, "Counted later").await;
    let second = sample(&scrape().await, SERIES);
    // Only a machine too slow to scrape twice in the window may see a new count.
    if first_at.elapsed() < keygate::http::GAUGES_MAX_AGE {
        assert_eq!(second, Some(0.0), "counted again within the window");
    }
    let started = Instant::now();
    while sample(&scrape().await, SERIES) != Some(1.0) {
        assert!(
            started.elapsed() < keygate::http::GAUGES_MAX_AGE + Duration::from_secs(10),
            "the count never caught up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    api.stop().await;
}

/// Readiness answers within its bound whether the database refuses
/// connections or accepts them and never speaks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_answers_in_time_when_the_database_is_unreachable() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let refused = {
        let vacated = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        vacated.local_addr().unwrap().port()
    };
    for (case, port) in [
        ("refused", refused),
        ("silent", silent.local_addr().unwrap().port()),
    ] {
        let options = sqlx::postgres::PgConnectOptions::new()
            .host("127.0.0.1")
            .port(port)
            .username("postgres")
            .database("test");
        // Far longer than the probe's own bound, so that bound is what answers.
        let pool = sqlx::postgres::PgPoolOptions::new()
            .acquire_timeout(Duration::from_secs(60))
            .connect_lazy_with(options);
        let service = Service::new(
            Store::Postgres(pool),
            std::sync::Arc::new(ScopeCatalog::builtin()),
        );
        let api = Api::over(service, &[]).await;
        for path in ["/readyz", "/metrics"] {
            let started = Instant::now();
            let status = api.get(path).await.status();
            let expected = if path == "/readyz" {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::OK
            };
            assert_eq!(status, expected, "{case} {path}");
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{case} {path}: {:?}, over its 2 s bound",
                started.elapsed()
            );
        }
        assert_eq!(api.get("/healthz").await.status(), StatusCode::OK);
        api.stop().await;
    }
}

/// A request the database keeps waiting is cut off with a JSON 408, like
/// every other refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_takes_too_long_gets_a_json_408() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let options = sqlx::postgres::PgConnectOptions::new()
        .host("127.0.0.1")
        .port(silent.local_addr().unwrap().port())
        .username("postgres")
        .database("test");
    let pool = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(Duration::from_secs(60))
        .connect_lazy_with(options);
    let service = Service::new(
        Store::Postgres(pool),
        std::sync::Arc::new(ScopeCatalog::builtin()),
    );
    let api = Api::over(service, &[]).await;
    let r = api.verify_unknown_key().await;
    assert_eq!(r.status(), StatusCode::REQUEST_TIMEOUT);
    assert_eq!(
        r.headers()[reqwest::header::CONTENT_TYPE],
        "application/json"
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body, json!({ "error": "the request took too long" }));
    api.stop().await;
}

async fn a_rotated_key_and_secret_answer_with_their_grace(db: &TestDb) {
    use keygate::domain::lifecycle::{CredentialKind, Grace};
    let submitted = submit(&db.service, ALICE, "Graceful").await;
    let app = submitted.app.id.clone();
    let secret = submitted.credentials.unwrap().secret.expose().to_owned();
    let key = db
        .service
        .generate_api_key(GUILD, &app, Actor::member(ALICE))
        .await
        .unwrap()
        .key;
    let current = |kind| {
        let store = db.store.clone();
        let app = app.clone();
        async move {
            let mut tx = store.read().await.unwrap();
            let c = tx.current_credential(&app, kind).await.unwrap().unwrap();
            tx.rollback().await.unwrap();
            c
        }
    };
    let mut ends = Vec::new();
    let mut new_ids = Vec::new();
    for kind in [CredentialKind::Key, CredentialKind::Secret] {
        let old = current(kind).await;
        let r = db
            .service
            .rotate(Some(GUILD), &old.id, Grace::Hour, Actor::manager(BOB))
            .await
            .unwrap();
        ends.push(
            r.grace_ends_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        );
        new_ids.push(r.new_id);
    }
    let api = Api::start(db, &[]).await;
    let (status, headers, answer) = api.verify(json!({ "key": key.expose() })).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["code"], "VALID", "{answer}");
    assert_eq!(
        answer["key"]["grace"],
        json!({ "replaced_by": new_ids[0], "ends_at": ends[0] })
    );
    assert_eq!(
        headers[keygate::http::KEY_EXPIRATION.as_str()]
            .to_str()
            .unwrap(),
        ends[0],
        "it stops working at its grace's end"
    );
    let r = api
        .post("/v1/apps/authenticate")
        .json(&json!({ "app_id": app.as_str(), "secret": secret }))
        .send()
        .await
        .unwrap();
    let header = r
        .headers()
        .get(keygate::http::KEY_EXPIRATION.as_str())
        .cloned();
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["code"], "VALID", "{answer}");
    assert_eq!(
        answer["key"]["grace"],
        json!({ "replaced_by": new_ids[1], "ends_at": ends[1] })
    );
    assert_eq!(header.unwrap().to_str().unwrap(), ends[1]);
    db.clock.advance(chrono::TimeDelta::hours(1));
    assert_eq!(api.code(json!({ "key": key.expose() })).await, "EXPIRED");
    api.stop().await;
}
