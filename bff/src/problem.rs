//! Errors as `application/problem+json` (RFC 9457, the [`Problem`] the services answer with
//! too), and the extractors that turn every way a request can be wrong into one: a body too
//! large 413, not JSON 400, with unknown or missing fields 422; a malformed id in the path or a
//! bad query parameter 400.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

pub use messaging::Problem;

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
