//! The payout provider's HTTP client: `POST /payouts` pays (idempotent by key) and
//! `GET /payouts/{idempotency_key}` asks what became of a key. Its errors say what a failed call
//! means for the money: never sent, maybe executed, or refused.

use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use uuid::Uuid;

/// What `POST /payouts` carries. The provider executes a key at most once and answers a repeated
/// key with what it recorded the first time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayoutRequest {
    pub idempotency_key: String,
    pub payment_id: Uuid,
    pub partner_id: Uuid,
    /// Integer minor units of `currency`.
    pub amount: i64,
    pub currency: String,
}

/// How the provider settled a payout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayoutStatus {
    /// The money moved.
    Paid,
    /// The provider refused to pay; nothing moved.
    Declined,
}

/// The provider's record of one payout, as both endpoints answer it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payout {
    pub idempotency_key: String,
    pub payment_id: Uuid,
    pub partner_id: Uuid,
    pub amount: i64,
    pub currency: String,
    pub status: PayoutStatus,
    /// The provider's id of the payout.
    pub reference: String,
    /// Why it was declined.
    pub reason: Option<String>,
}

/// Why a provider call gave no payout record, by what it means for the money.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request never reached the provider (no connection): nothing was executed.
    #[error("the payout provider could not be reached")]
    Unreachable(#[source] reqwest::Error),
    /// The request was sent but no usable answer came back (a timeout, a broken connection, an
    /// unreadable body): the provider may have executed it.
    #[error("the payout provider's answer did not arrive")]
    NoAnswer(#[source] reqwest::Error),
    /// The provider is unavailable or overloaded (5xx, 408, 429, or an answer this client does not
    /// expect): it did not execute the request, and a later call with the same key is safe.
    #[error("the payout provider answered {status}: {body}")]
    Unavailable { status: StatusCode, body: String },
    /// The provider refused the request as invalid (400, 422): it will never be executed.
    #[error("the payout provider refused the request with {status}: {body}")]
    Refused { status: StatusCode, body: String },
    /// The key is known to the provider with other data (409): only a lookup tells what happened.
    #[error("the payout provider knows the key with other data: {body}")]
    KeyConflict { body: String },
}

/// Why the client cannot be built from its settings.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("the payout provider URL {url:?} is not a plain http URL: {reason}")]
    Url { url: String, reason: String },
    #[error("building the payout provider's HTTP client failed")]
    Client(#[source] reqwest::Error),
}

/// A client of one payout provider; cheap to clone.
#[derive(Debug, Clone)]
pub struct Provider {
    http: reqwest::Client,
    base: String,
}

impl Provider {
    /// A client of the provider at `base_url` whose every call gives up after `timeout`.
    pub fn new(base_url: &str, timeout: Duration) -> Result<Self, SetupError> {
        let url = reqwest::Url::parse(base_url).map_err(|e| SetupError::Url {
            url: base_url.to_owned(),
            reason: e.to_string(),
        })?;
        // This build carries no TLS: an https provider would fail on every call, so refuse it here.
        if url.scheme() != "http" || url.cannot_be_a_base() {
            return Err(SetupError::Url {
                url: base_url.to_owned(),
                reason: "only http:// URLs are supported".into(),
            });
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(SetupError::Client)?;
        Ok(Provider {
            http,
            base: url.as_str().trim_end_matches('/').to_owned(),
        })
    }

    /// Pays `request` out, or answers what the provider recorded for its key.
    pub async fn pay(&self, request: &PayoutRequest) -> Result<Payout, Error> {
        let response = self
            .http
            .post(format!("{}/payouts", self.base))
            .json(request)
            .send()
            .await
            .map_err(sent)?;
        let status = response.status();
        if status.is_success() {
            return response.json().await.map_err(Error::NoAnswer);
        }
        let body = response.text().await.unwrap_or_default();
        Err(match status {
            StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => {
                Error::Refused { status, body }
            }
            StatusCode::CONFLICT => Error::KeyConflict { body },
            _ => Error::Unavailable { status, body },
        })
    }

    /// What the provider recorded for `idempotency_key`; `None` if it never saw the key.
    pub async fn lookup(&self, idempotency_key: &str) -> Result<Option<Payout>, Error> {
        let response = self
            .http
            .get(format!("{}/payouts/{idempotency_key}", self.base))
            .send()
            .await
            .map_err(sent)?;
        match response.status() {
            status if status.is_success() => {
                response.json().await.map(Some).map_err(Error::NoAnswer)
            }
            StatusCode::NOT_FOUND => Ok(None),
            status => Err(Error::Unavailable {
                status,
                body: response.text().await.unwrap_or_default(),
            }),
        }
    }
}

/// Classifies a failed send: only a failed connection proves the provider never saw the request.
fn sent(error: reqwest::Error) -> Error {
    if error.is_connect() || error.is_builder() {
        Error::Unreachable(error)
    } else {
        Error::NoAnswer(error)
    }
}
