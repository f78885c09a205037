//! The console: `bff/ui/` embedded in the binary and served under `/ui` as written (ADR 5), with
//! a Content-Security-Policy that lets the page load only itself and call only this API.

use axum::Router;
use axum::http::header;
use axum::response::{IntoResponse, Redirect};
use axum::routing::get;

const INDEX: &str = include_str!("../ui/index.html");

/// The files under `/ui/`: the style sheet and the script's modules, by name.
const FILES: [(&str, &str, &str); 5] = [
    ("console.css", CSS, include_str!("../ui/console.css")),
    ("console.js", SCRIPT, include_str!("../ui/console.js")),
    ("core.js", SCRIPT, include_str!("../ui/core.js")),
    ("sagas.js", SCRIPT, include_str!("../ui/sagas.js")),
    ("records.js", SCRIPT, include_str!("../ui/records.js")),
];
const SCRIPT: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// Nothing from elsewhere, no inline script; styles set from the script go through the CSSOM.
const POLICY: &str = "default-src 'self'; img-src 'self' data:; object-src 'none'; \
                      base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

/// `/ui` (to `/ui/`), `/ui/`, and its style sheet and script modules.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let index = get(|| async { asset("text/html; charset=utf-8", INDEX) });
    FILES.into_iter().fold(
        Router::new()
            .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
            .route("/ui/", index),
        |router, (name, content_type, body)| {
            router.route(
                &format!("/ui/{name}"),
                get(move || async move { asset(content_type, body) }),
            )
        },
    )
}
