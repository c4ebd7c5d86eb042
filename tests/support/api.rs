//! The verify API on an ephemeral port, for the HTTP suites.

use super::{TestDb, captured_logs};
use keygate::domain::credentials::ApiKey;
use keygate::http::HttpHandle;
use keygate::service::Service;
use reqwest::StatusCode;
use secrecy::SecretString;
use serde_json::{Value, json};

/// The API on an ephemeral port over the test database's service.
pub struct Api {
    pub base: String,
    pub client: reqwest::Client,
    handle: HttpHandle,
}

impl Api {
    pub async fn start(db: &TestDb, tokens: &[&str]) -> Self {
        Self::over(db.service.clone(), tokens).await
    }

    pub async fn over(service: Service, tokens: &[&str]) -> Self {
        captured_logs("trace");
        let tokens: Vec<SecretString> = tokens.iter().map(|t| SecretString::from(*t)).collect();
        let handle = keygate::http::start("127.0.0.1:0".parse().unwrap(), &tokens, service)
            .await
            .expect("start the API");
        Self {
            base: format!("http://{}", handle.addr()),
            client: reqwest::Client::new(),
            handle,
        }
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.post(format!("{}{path}", self.base))
    }

    pub async fn verify(&self, body: Value) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let r = self
            .post("/v1/keys/verify")
            .json(&body)
            .send()
            .await
            .unwrap();
        let (status, headers) = (r.status(), r.headers().clone());
        (status, headers, r.json().await.unwrap())
    }

    pub async fn code(&self, body: Value) -> String {
        let (status, _, answer) = self.verify(body).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        answer["code"].as_str().unwrap().to_owned()
    }

    /// A well-formed key nobody issued: a cache miss, so a database read.
    pub async fn verify_unknown_key(&self) -> reqwest::Response {
        self.post("/v1/keys/verify")
            .json(&json!({ "key": ApiKey::generate().expose() }))
            .send()
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
    }

    pub async fn stop(self) {
        self.handle.shutdown().await;
    }
}

/// A sample's value in a `/metrics` text, if the line is there.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}
