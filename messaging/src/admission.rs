//! Backpressure for an HTTP API: at most so many requests are handled at once, and one more waits
//! a moment for its turn, then is answered 503 with `Retry-After`. Under overload callers are told
//! to come back before the process's database pool or broker connection is starved and every
//! request fails.

use axum::Router;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use eventstore::http::Problem;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// How many requests are handled at once, and how long one more waits for its turn.
#[derive(Debug, Clone)]
pub struct Admission {
    permits: Arc<Semaphore>,
    wait: Duration,
}

impl Admission {
    pub fn new(at_once: usize, wait: Duration) -> Self {
        Admission {
            permits: Arc::new(Semaphore::new(at_once.max(1))),
            wait,
        }
    }

    /// `router` with every request passing through this admission.
    pub fn around<S: Clone + Send + Sync + 'static>(self, router: Router<S>) -> Router<S> {
        router.layer(axum::middleware::from_fn(move |request, next| {
            self.clone().admit(request, next)
        }))
    }

    async fn admit(self, request: Request, next: Next) -> Response {
        match tokio::time::timeout(self.wait, self.permits.acquire_owned()).await {
            Ok(Ok(_permit)) => next.run(request).await,
            _ => Problem::unavailable("too many requests at once; try again").into_response(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{StatusCode, header};
    use axum::routing::get;
    use tower::ServiceExt;

    /// A route that answers once the test lets it, behind an admission of one at a time.
    fn gated() -> (Router, Arc<tokio::sync::Notify>) {
        let gate = Arc::new(tokio::sync::Notify::new());
        let held = gate.clone();
        let router = Router::new().route(
            "/",
            get(move || {
                let held = held.clone();
                async move { held.notified().await }
            }),
        );
        let admission = Admission::new(1, Duration::from_millis(100));
        (admission.around(router), gate)
    }

    fn get_root() -> Request {
        Request::get("/").body(Body::empty()).expect("request")
    }

    #[tokio::test]
    async fn a_request_beyond_the_limit_is_told_when_to_come_back() {
        let (router, gate) = gated();
        let first = tokio::spawn(router.clone().oneshot(get_root()));
        tokio::task::yield_now().await;

        let refused = router.clone().oneshot(get_root()).await.expect("answer");
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(refused.headers()[header::RETRY_AFTER], "1");
        assert_eq!(
            refused.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );

        gate.notify_one();
        let first = first.await.expect("task").expect("answer");
        assert_eq!(first.status(), StatusCode::OK);
        let next = tokio::spawn(router.oneshot(get_root()));
        tokio::task::yield_now().await;
        gate.notify_one();
        assert_eq!(
            next.await.expect("task").expect("answer").status(),
            StatusCode::OK
        );
    }
}
