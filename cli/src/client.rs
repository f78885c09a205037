//! The HTTP API as its clients call it, for `pulsaga demo` and `pulsaga bench`: requests with a
//! bearer token, waiting for a read to get somewhere and for a command's outcome.

use anyhow::Context;
use serde_json::Value;
use std::time::{Duration, Instant};

/// The API's base URL and an HTTP client.
pub struct ApiClient {
    pub base: String,
    pub http: reqwest::Client,
}

impl ApiClient {
    pub fn new(base: &str) -> ApiClient {
        ApiClient {
            base: base.to_owned(),
            http: reqwest::Client::new(),
        }
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(reqwest::StatusCode, Value)> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("calling {path}"))?;
        let status = response.status();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    /// POSTs `body`; anything but 2xx is an error.
    pub async fn post(&self, path: &str, token: &str, body: Value) -> anyhow::Result<Value> {
        let (status, answer) = self
            .send(reqwest::Method::POST, path, token, Some(body))
            .await?;
        anyhow::ensure!(status.is_success(), "POST {path}: {status} {answer}");
        Ok(answer)
    }

    /// Polls `path` until it answers 200 with a body `done` accepts (at most a minute).
    pub async fn wait_for(
        &self,
        path: &str,
        token: &str,
        done: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (status, body) = self.send(reqwest::Method::GET, path, token, None).await?;
            if status.is_success() && done(&body) {
                return Ok(body);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "GET {path} did not get there within a minute: {status} {body}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for a command's outcome; anything but succeeded is an error.
    pub async fn succeeded(&self, accepted: &Value, token: &str) -> anyhow::Result<()> {
        let id = accepted["command_id"].as_str().context("a command id")?;
        let outcome = self
            .wait_for(&format!("/v1/commands/{id}"), token, |b| {
                b["status"] != "pending"
            })
            .await?;
        anyhow::ensure!(outcome["status"] == "succeeded", "command {id}: {outcome}");
        Ok(())
    }
}
