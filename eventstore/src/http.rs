//! The HTTP vocabulary every API shares, the services' query APIs and the BFF's: errors as
//! `application/problem+json`, the extractors that turn every way a request can be wrong into
//! one (a body too large 413, not JSON 400, with unknown or missing fields 422; a malformed id in
//! the path or a bad query parameter 400), times, the operator who acts (and why), and paging.

use crate::Error;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

/// The longest page a list answers.
pub const MAX_PAGE: i64 = 1000;

/// The seconds an overloaded API asks its callers to wait (`Retry-After`).
pub const RETRY_AFTER_SECONDS: u16 = 1;

/// An error answer, rendered as `application/problem+json` (RFC 9457): its status, a sentence
/// for the caller and, when it may come back later, in how many seconds (`Retry-After`). The BFF
/// answers with it too.
#[derive(Debug, Clone)]
pub struct Problem {
    pub status: StatusCode,
    pub detail: String,
    pub retry_after: Option<u64>,
}

impl Problem {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Problem {
            status,
            detail: detail.into(),
            retry_after: None,
        }
    }

    /// The caller should come back in `seconds` (at least one).
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds.max(1));
        self
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::BAD_REQUEST, detail)
    }

    /// Answered with `WWW-Authenticate: Bearer`.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::UNAUTHORIZED, detail)
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::FORBIDDEN, detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::NOT_FOUND, detail)
    }

    pub fn conflict(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::CONFLICT, detail)
    }

    pub fn unprocessable(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::UNPROCESSABLE_ENTITY, detail)
    }

    /// Overloaded for now: answered with `Retry-After`, so the caller comes back.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::SERVICE_UNAVAILABLE, detail)
            .retry_after(RETRY_AFTER_SECONDS.into())
    }

    /// A dependency (a service, the broker) failed; the detail is logged, not shown.
    pub fn upstream(what: &str, error: impl std::fmt::Display) -> Self {
        tracing::warn!(%error, "{what} failed");
        Problem::new(StatusCode::BAD_GATEWAY, format!("{what} failed; try again"))
    }
}

impl From<Error> for Problem {
    fn from(error: Error) -> Self {
        match error {
            Error::UnknownPosition(_) => Problem::bad_request(error.to_string()),
            Error::Database(sqlx::Error::PoolTimedOut) => {
                Problem::unavailable("the database is busy; try again")
            }
            Error::Database(sqlx::Error::Io(_) | sqlx::Error::PoolClosed) => {
                Problem::unavailable("the database is out of reach; try again")
            }
            other => {
                let id = Uuid::new_v4();
                tracing::error!(error_id = %id, error = %crate::error_chain(&other), "query failed");
                Problem::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("internal error {id}"),
                )
            }
        }
    }
}

impl From<sqlx::Error> for Problem {
    fn from(error: sqlx::Error) -> Self {
        Problem::from(Error::from(error))
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = json!({
            "type": "about:blank",
            "title": self.status.canonical_reason().unwrap_or("error"),
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            body.to_string(),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, seconds.into());
        }
        response
    }
}

/// A JSON request body whose every rejection is a [`Problem`].
#[derive(Debug)]
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(Body(value)),
            Err(rejection) => Err(match rejection {
                JsonRejection::JsonDataError(error) => Problem::unprocessable(error.body_text()),
                JsonRejection::JsonSyntaxError(error) => Problem::bad_request(error.body_text()),
                JsonRejection::MissingJsonContentType(error) => {
                    Problem::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, error.body_text())
                }
                other => Problem::new(other.status(), other.body_text()),
            }),
        }
    }
}

/// A JSON request body that may be left out altogether; one that is sent is taken as [`Body`]
/// takes it.
#[derive(Debug)]
pub struct OptionalBody<T>(pub Option<T>);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for OptionalBody<T> {
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        use axum::body::HttpBody;
        if request.body().is_end_stream() {
            return Ok(OptionalBody(None));
        }
        let Body(value) = Body::from_request(request, state).await?;
        Ok(OptionalBody(Some(value)))
    }
}

/// Path parameters whose every rejection (a malformed id) is a [`Problem`].
#[derive(Debug)]
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| Path(value))
            .map_err(|rejection| Problem::new(rejection.status(), rejection.body_text()))
    }
}

/// Query parameters whose every rejection is a [`Problem`].
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| Query(value))
            .map_err(|rejection| Problem::new(rejection.status(), rejection.body_text()))
    }
}

/// The query of a route that takes none: it still refuses unknown parameters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoQuery {}

/// The query of a read that may ask for the past: `?as_of=<RFC 3339 time>`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AsOf {
    pub as_of: Option<String>,
}

impl AsOf {
    /// The time asked for, if any.
    pub fn time(&self) -> Result<Option<OffsetDateTime>, Problem> {
        self.as_of.as_deref().map(|v| time("as_of", v)).transpose()
    }
}

/// The query parameter `name`'s `value` as an RFC 3339 time.
pub fn time(name: &str, value: &str) -> Result<OffsetDateTime, Problem> {
    OffsetDateTime::parse(value, &Rfc3339).map_err(|_| {
        Problem::bad_request(format!("{name} must be an RFC 3339 time, got {value:?}"))
    })
}

/// Who acts: the subject of the verified token of the admin who called the BFF, which the BFF
/// passes in this header. Only the holder of the service token reaches a service's routes, so the
/// header is the BFF's word; a request body never names the actor.
pub const ACTOR_HEADER: &str = "x-pulsaga-actor";

/// The longest reason an operator can give for an action, in characters.
pub const MAX_REASON: usize = 2000;

/// An operator's action as a service receives it: who acts (from [`ACTOR_HEADER`]) and why (the
/// optional body `{"reason": "…"}`, recorded with the action).
#[derive(Debug)]
pub struct Acting {
    pub actor: String,
    pub reason: Option<String>,
}

impl Acting {
    pub fn read(headers: &HeaderMap, body: &[u8]) -> Result<Acting, Problem> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Body {
            reason: Option<String>,
        }
        let reason = if body.is_empty() {
            None
        } else {
            serde_json::from_slice::<Body>(body)
                .map_err(|e| {
                    Problem::bad_request(format!(
                        "the body is {{\"reason\": \"…\"}} or nothing: {e}"
                    ))
                })?
                .reason
        };
        let reason = reason
            .map(|r| r.trim().to_owned())
            .filter(|r| !r.is_empty());
        if reason
            .as_ref()
            .is_some_and(|r| r.chars().count() > MAX_REASON)
        {
            return Err(Problem::bad_request(format!(
                "a reason is at most {MAX_REASON} characters"
            )));
        }
        let actor = headers
            .get(ACTOR_HEADER)
            .and_then(|value| value.to_str().ok())
            .map(str::trim)
            .filter(|actor| !actor.is_empty())
            .ok_or_else(|| {
                Problem::bad_request(format!("the {ACTOR_HEADER} header names who acts"))
            })?;
        Ok(Acting {
            actor: actor.to_owned(),
            reason,
        })
    }
}

/// A page's size: `limit`, 100 when not given, at most `MAX_PAGE`.
pub fn page_limit(limit: Option<i64>) -> Result<i64, Problem> {
    let limit = limit.unwrap_or(100);
    if (1..=MAX_PAGE).contains(&limit) {
        Ok(limit)
    } else {
        Err(Problem::bad_request(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )))
    }
}

/// A page of a newest-first list ends at an item: its time in microseconds since the Unix epoch
/// and its id, which orders items of the same microsecond. The `next` a page answers is
/// `<micros>.<id>`.
pub fn cursor(value: Option<&str>) -> Result<Option<(i64, Uuid)>, Problem> {
    let Some(value) = value else {
        return Ok(None);
    };
    value
        .split_once('.')
        .and_then(|(micros, id)| Some((micros.parse().ok()?, Uuid::parse_str(id).ok()?)))
        .map(Some)
        .ok_or_else(|| {
            Problem::bad_request(format!(
                "cursor must be the `next` of a previous page, got {value:?}"
            ))
        })
}
