//! The credential of the services' internal query APIs: a shared secret that the BFF and the CLI
//! present as a bearer token, configured like the JWT settings (`SERVICE_TOKEN`). A service
//! answers nothing but `/metrics` without it, so that a port reached by mistake gives away no
//! tenant's data and takes no operator action.

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::fmt;
use std::sync::Arc;
use tokio::net::TcpListener;

/// The shared secret. Never printed; compared in constant time.
#[derive(Clone, PartialEq, Eq)]
pub struct ServiceToken(Arc<str>);

/// Why a token was refused as a setting.
#[derive(Debug, thiserror::Error)]
#[error(
    "SERVICE_TOKEN must be {min} to {max} visible ASCII characters (for example two UUIDs); \
     it has {length}",
    min = ServiceToken::MIN_LENGTH,
    max = ServiceToken::MAX_LENGTH
)]
pub struct InvalidToken {
    length: usize,
}

impl ServiceToken {
    pub const MIN_LENGTH: usize = 32;
    pub const MAX_LENGTH: usize = 512;

    pub fn new(token: &str) -> Result<Self, InvalidToken> {
        let valid = (Self::MIN_LENGTH..=Self::MAX_LENGTH).contains(&token.len())
            && token.bytes().all(|b| b.is_ascii_graphic());
        if valid {
            Ok(ServiceToken(token.into()))
        } else {
            Err(InvalidToken {
                length: token.len(),
            })
        }
    }

    /// A fresh random token, for a platform that starts its own processes (`pulsaga up`).
    pub fn random() -> Self {
        let token = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        ServiceToken(token.into())
    }

    /// The secret itself, to hand to a child process.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The headers that present it: an HTTP client of the services sends them by default.
    pub fn headers(&self) -> HeaderMap {
        let mut value = HeaderValue::from_str(&format!("Bearer {}", self.0))
            .expect("a token of visible ASCII is a header value");
        value.set_sensitive(true);
        HeaderMap::from_iter([(header::AUTHORIZATION, value)])
    }

    /// Whether `authorization` presents this token. The time taken does not depend on where a
    /// wrong token first differs.
    pub fn admits(&self, authorization: Option<&HeaderValue>) -> bool {
        let Some(presented) = authorization
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
        else {
            return false;
        };
        let (ours, theirs) = (self.0.as_bytes(), presented.as_bytes());
        ours.len() == theirs.len()
            && ours
                .iter()
                .zip(theirs)
                .fold(0u8, |differs, (a, b)| differs | (a ^ b))
                == 0
    }

    /// Middleware that answers 401 to a request without the token.
    pub async fn require(self, request: Request, next: Next) -> Response {
        if self.admits(request.headers().get(header::AUTHORIZATION)) {
            return next.run(request).await;
        }
        let body = serde_json::json!({
            "type": "about:blank",
            "title": "Unauthorized",
            "status": 401,
            "detail": "the service token is required (SERVICE_TOKEN, as a bearer token)",
        });
        (
            StatusCode::UNAUTHORIZED,
            [
                (header::CONTENT_TYPE, "application/problem+json"),
                (header::WWW_AUTHENTICATE, "Bearer"),
            ],
            body.to_string(),
        )
            .into_response()
    }
}

impl fmt::Debug for ServiceToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServiceToken(..)")
    }
}

/// A service's query API: where it listens and the token it requires, and how often its process
/// was restarted by its supervisor (`pulsaga up`), which `/readyz` shows.
#[derive(Debug)]
pub struct QueryApi {
    pub listener: TcpListener,
    pub token: ServiceToken,
    pub restarts: u32,
}
