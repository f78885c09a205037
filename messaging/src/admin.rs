//! The Pulsar side of `pulsaga migrate`, provisioned as code through the broker's admin REST API
//! and idempotent: the tenant and namespace; the namespace's schema policy (BACKWARD_TRANSITIVE,
//! the project's own evolution rule, and no producer or consumer without a schema); every topic
//! with its Avro schema registered, its consuming subscription created (so that what is
//! published before the consumer first subscribes waits for it) and, for event topics, a
//! retention window; and every dead-letter topic, kept until someone deletes it.

use crate::PulsarSettings;
use futures_util::future::try_join_all;
use reqwest::{Method, StatusCode};
use schemas::{TOPICS, Topic, TopicKind};
use serde_json::{Value, json};
use std::time::Duration;

/// The dead-letter topic of a subscription, by Pulsar's convention.
pub fn dead_letter_topic(topic: &str, subscription: &str) -> String {
    format!("{topic}-{subscription}-DLQ")
}

/// How long an event topic's acknowledged messages are kept, for audits from the broker.
pub const EVENT_RETENTION_MINUTES: i64 = 7 * 24 * 60;

/// Why provisioning failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("the Pulsar admin API at {url} is unreachable")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{method} {path} answered {status}: {body}")]
    Refused {
        method: Method,
        path: String,
        status: StatusCode,
        body: String,
    },
}

/// A schema as the broker's registry holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredSchema {
    pub version: i64,
    /// `AVRO` for every topic of Pulsaga.
    pub kind: String,
    /// The Avro schema's JSON text.
    pub definition: String,
}

impl RegisteredSchema {
    /// From the admin API's answer for one schema version.
    fn from_json(schema: &Value) -> Self {
        RegisteredSchema {
            version: schema["version"].as_i64().unwrap_or_default(),
            kind: schema["type"].as_str().unwrap_or_default().to_owned(),
            definition: schema["data"].as_str().unwrap_or_default().to_owned(),
        }
    }
}

/// A client of one broker's admin REST API (`http://host:8080` on a standalone broker).
#[derive(Debug, Clone)]
pub struct Admin {
    http: reqwest::Client,
    url: String,
}

impl Admin {
    pub fn new(url: impl Into<String>) -> Self {
        Admin {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("a client without TLS settings builds"),
            url: url.into().trim_end_matches('/').to_owned(),
        }
    }

    /// Creates or brings up to date everything the services rely on in `settings`'s namespace.
    pub async fn provision(&self, settings: &PulsarSettings) -> Result<(), AdminError> {
        let (tenant, namespace) = (&settings.tenant, &settings.namespace);
        if self
            .call(Method::GET, &format!("/admin/v2/tenants/{tenant}"), None)
            .await?
            .is_none()
        {
            let clusters = self
                .call(Method::GET, "/admin/v2/clusters", None)
                .await?
                .unwrap_or_else(|| json!([]));
            self.call(
                Method::PUT,
                &format!("/admin/v2/tenants/{tenant}"),
                Some(json!({ "allowedClusters": clusters })),
            )
            .await?;
        }
        let ns = format!("/admin/v2/namespaces/{tenant}/{namespace}");
        self.call(Method::PUT, &ns, Some(json!({}))).await?;
        self.call(
            Method::PUT,
            &format!("{ns}/schemaCompatibilityStrategy"),
            Some(json!("BACKWARD_TRANSITIVE")),
        )
        .await?;
        self.call(
            Method::POST,
            &format!("{ns}/schemaValidationEnforced"),
            Some(json!(true)),
        )
        .await?;
        try_join_all(TOPICS.iter().map(|topic| self.topic(settings, topic))).await?;
        Ok(())
    }

    async fn topic(&self, settings: &PulsarSettings, topic: &Topic) -> Result<(), AdminError> {
        let dead_letters = dead_letter_topic(topic.name, topic.subscription);
        self.create_with_schema(settings, topic.name, topic).await?;
        self.create_with_schema(settings, &dead_letters, topic)
            .await?;
        let path = self.topic_path(settings, topic.name);
        self.call(
            Method::PUT,
            &format!("{path}/subscription/{}", topic.subscription),
            None,
        )
        .await?;
        if topic.kind == TopicKind::Event {
            self.retain(&path, EVENT_RETENTION_MINUTES).await?;
        }
        self.retain(&self.topic_path(settings, &dead_letters), -1)
            .await
    }

    async fn create_with_schema(
        &self,
        settings: &PulsarSettings,
        name: &str,
        topic: &Topic,
    ) -> Result<(), AdminError> {
        self.call(Method::PUT, &self.topic_path(settings, name), None)
            .await?;
        // Every committed version, oldest first: the registry then holds the project's history,
        // a replica still on an earlier version may produce and consume during a rolling
        // upgrade, and BACKWARD_TRANSITIVE holds each version against all before it. A version
        // the registry already has is not added again.
        for definition in topic.history {
            let schema = json!({ "type": "AVRO", "schema": definition, "properties": {} });
            self.call(
                Method::POST,
                &self.schema_path(settings, name),
                Some(schema),
            )
            .await?;
        }
        Ok(())
    }

    /// Keeps acknowledged messages for `minutes` (-1: until deleted), whatever their size.
    async fn retain(&self, topic_path: &str, minutes: i64) -> Result<(), AdminError> {
        self.call(
            Method::POST,
            &format!("{topic_path}/retention"),
            Some(json!({ "retentionTimeInMinutes": minutes, "retentionSizeInMB": -1 })),
        )
        .await?;
        Ok(())
    }

    /// The schema the broker's registry holds for `topic` now, if any.
    pub async fn schema(
        &self,
        settings: &PulsarSettings,
        topic: &str,
    ) -> Result<Option<RegisteredSchema>, AdminError> {
        let body = self
            .call(Method::GET, &self.schema_path(settings, topic), None)
            .await?;
        Ok(body.as_ref().map(RegisteredSchema::from_json))
    }

    /// Every schema version the registry holds for `topic`, oldest first.
    pub async fn schema_versions(
        &self,
        settings: &PulsarSettings,
        topic: &str,
    ) -> Result<Vec<RegisteredSchema>, AdminError> {
        let body = self
            .call(
                Method::GET,
                &format!("{}s", self.schema_path(settings, topic)),
                None,
            )
            .await?
            .unwrap_or(Value::Null);
        Ok(body["getSchemaResponses"]
            .as_array()
            .into_iter()
            .flatten()
            .map(RegisteredSchema::from_json)
            .collect())
    }

    /// The topic's counters as the broker reports them (`GET .../stats`).
    pub async fn topic_stats(
        &self,
        settings: &PulsarSettings,
        topic: &str,
    ) -> Result<Option<Value>, AdminError> {
        self.call(
            Method::GET,
            &format!("{}/stats", self.topic_path(settings, topic)),
            None,
        )
        .await
    }

    fn topic_path(&self, settings: &PulsarSettings, topic: &str) -> String {
        format!(
            "/admin/v2/persistent/{}/{}/{topic}",
            settings.tenant, settings.namespace
        )
    }

    fn schema_path(&self, settings: &PulsarSettings, topic: &str) -> String {
        format!(
            "/admin/v2/schemas/{}/{}/{topic}/schema",
            settings.tenant, settings.namespace
        )
    }

    /// One request. A 404 is `None` (nothing there); a 409 (already there) is success, which
    /// makes every creation idempotent; any other failure is [`AdminError::Refused`].
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Option<Value>, AdminError> {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.url));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .map_err(|source| AdminError::Unreachable {
                url: self.url.clone(),
                source,
            })?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        match status {
            StatusCode::NOT_FOUND if method == Method::GET => Ok(None),
            StatusCode::CONFLICT => Ok(Some(Value::Null)),
            status if status.is_success() => {
                Ok(Some(serde_json::from_str(&text).unwrap_or(Value::Null)))
            }
            status => Err(AdminError::Refused {
                method,
                path: path.to_owned(),
                status,
                body: text,
            }),
        }
    }
}
