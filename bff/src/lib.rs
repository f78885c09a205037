//! The HTTP API of SPEC §6 (backend for frontend): writes become Avro commands on their topics,
//! reads call the services' query APIs over HTTP, both behind JWT authentication, roles and
//! tenancy. The BFF reads no database. OpenAPI 3 at `/openapi.json`, Swagger UI at `/docs`
//! (assets inside the binary), errors as `application/problem+json`, request counts and
//! latencies at `/metrics`.

pub mod auth;
mod console;
mod dead_letters;
mod metrics;
mod reads;
pub mod services;
mod writes;

use crate::auth::{Caller, Verifier};
use crate::services::{Service, Services};
use axum::extract::{DefaultBodyLimit, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use messaging::Client;
use messaging::admission::Admission;
use messaging::http::Problem;
use serde_json::json;
use std::num::NonZeroU32;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

/// How long a request beyond `Settings::max_in_flight` waits for its turn.
const ADMISSION_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// The largest request body accepted.
pub const BODY_LIMIT: usize = 64 * 1024;

/// What the API needs to run.
#[derive(Debug, Clone)]
pub struct Settings {
    pub services: services::ServiceUrls,
    /// Presented to the services' query APIs.
    pub service_token: messaging::ServiceToken,
    pub verifier: Verifier,
    /// Requests per second each caller (token subject) may make, in bursts of twice that.
    pub rate_per_second: NonZeroU32,
    /// How many requests are handled at once; more wait a second for their turn, then are
    /// answered 503 with `Retry-After`.
    pub max_in_flight: usize,
    /// How often this process was restarted by its supervisor (`pulsaga up`).
    pub restarts: u32,
}

/// Shared by every request.
#[derive(Clone)]
pub struct AppState {
    client: Arc<Client>,
    services: Services,
    verifier: Arc<Verifier>,
    limiter: Arc<DefaultKeyedRateLimiter<String>>,
    http_metrics: metrics::HttpMetrics,
    restarts: u32,
    owners: writes::Owners,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("services", &self.services)
            .field("verifier", &self.verifier)
            .finish_non_exhaustive()
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = Problem;

    /// Authenticates the bearer token, then spends one of the caller's requests.
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| Problem::unauthorized("a bearer token is required"))?;
        let caller = state.verifier.verify(token.trim())?;
        if let Err(not_until) = state.limiter.check_key(&caller.subject) {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            return Err(Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too many requests; slow down",
            )
            .retry_after(wait.as_secs_f64().ceil() as u64));
        }
        Ok(caller)
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Pulsaga API", description = "Campaigns, tracking, commissions, payments and the sagas between them."),
    paths(
        writes::register_partner, writes::create_campaign, writes::associate_partner,
        writes::associate_content, writes::record_tracking_event,
        reads::me, reads::command, reads::campaigns, reads::campaign, reads::campaign_stats, reads::partner,
        reads::partner_commissions, reads::partner_payments, reads::tracking_event, reads::sagas,
        reads::saga, reads::saga_compensations, reads::saga_action, reads::audit_stream, reads::audit_state,
        reads::audit_events, reads::audit_correlation, dead_letters::list, dead_letters::show,
        dead_letters::redrive,
    ),
    modifiers(&BearerAuth, &ErrorResponses)
)]
struct ApiDoc;

/// Documents the errors every operation can answer, as the router answers them: a malformed path
/// or query (400), no valid token (401), a role that may not (403), nothing the caller may see
/// (404), its rate spent (429), a service or the broker failing (502); with a body, also too
/// large (413), not JSON (415) and invalid (422). All are `application/problem+json`.
struct ErrorResponses;

impl utoipa::Modify for ErrorResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let text = || ObjectBuilder::new().schema_type(Type::String);
        let problem = ObjectBuilder::new()
            .description(Some("An error (RFC 9457)."))
            .property("type", text())
            .property("title", text())
            .property("status", ObjectBuilder::new().schema_type(Type::Integer))
            .property("detail", text())
            .required("status")
            .required("detail");
        openapi
            .components
            .get_or_insert_with(Default::default)
            .schemas
            .insert("Problem".into(), problem.into());
        let response = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/problem+json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("Problem")))
                        .build(),
                )
                .build()
        };
        let always = [
            ("400", "a malformed id, query parameter or header"),
            ("401", "no valid bearer token"),
            ("403", "the caller's role may not do this"),
            ("404", "nothing of that id the caller may see"),
            (
                "429",
                "the caller's rate is spent; come back after Retry-After",
            ),
            ("502", "a service or the broker failed; try again"),
            ("503", "overloaded; come back after Retry-After"),
        ];
        let with_body = [
            ("413", "the body is over 64 KiB"),
            ("415", "the body is not application/json"),
            ("422", "the body is not a valid request"),
        ];
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                let has_body = operation.request_body.is_some();
                let statuses = always.iter().chain(with_body.iter().filter(|_| has_body));
                for (status, description) in statuses {
                    operation
                        .responses
                        .responses
                        .entry((*status).to_owned())
                        .or_insert_with(|| response(description).into());
                }
            }
        }
    }
}

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// The OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The whole API.
pub fn router(client: Arc<Client>, settings: Settings) -> Router {
    let quota = Quota::per_second(settings.rate_per_second).allow_burst(
        settings
            .rate_per_second
            .saturating_mul(NonZeroU32::new(2).unwrap_or(NonZeroU32::MIN)),
    );
    let state = AppState {
        client,
        services: Services::new(settings.services, settings.service_token),
        verifier: Arc::new(settings.verifier),
        limiter: Arc::new(RateLimiter::keyed(quota)),
        http_metrics: metrics::HttpMetrics::default(),
        restarts: settings.restarts,
        owners: writes::Owners::default(),
    };
    let registry = messaging::metrics::Metrics::default();
    registry.register(|r| state.http_metrics.register(r));
    let v1 = Router::<AppState>::new()
        .route("/me", get(reads::me))
        .route("/partners", post(writes::register_partner))
        .route(
            "/campaigns",
            post(writes::create_campaign).get(reads::campaigns),
        )
        .route("/campaigns/{id}", get(reads::campaign))
        .route("/campaigns/{id}/stats", get(reads::campaign_stats))
        .route("/campaigns/{id}/partners", post(writes::associate_partner))
        .route("/campaigns/{id}/content", post(writes::associate_content))
        .route("/tracking-events", post(writes::record_tracking_event))
        .route("/tracking-events/{id}", get(reads::tracking_event))
        .route("/commands/{id}", get(reads::command))
        .route("/partners/{id}", get(reads::partner))
        .route(
            "/partners/{id}/commissions",
            get(reads::partner_commissions),
        )
        .route("/partners/{id}/payments", get(reads::partner_payments))
        .route("/sagas", get(reads::sagas))
        .route("/sagas/{id}", get(reads::saga))
        .route("/sagas/{id}/compensations", get(reads::saga_compensations))
        .route("/sagas/{id}/{action}", post(reads::saga_action))
        .route("/audit/correlations/{id}", get(reads::audit_correlation))
        .route(
            "/audit/{service}/streams/{stream_id}",
            get(reads::audit_stream),
        )
        .route(
            "/audit/{service}/streams/{stream_id}/state",
            get(reads::audit_state),
        )
        .route("/audit/{service}/events", get(reads::audit_events))
        .route("/dead-letters", get(dead_letters::list))
        .route("/dead-letters/{id}", get(dead_letters::show))
        .route("/dead-letters/{id}/redrive", post(dead_letters::redrive));
    let admission = Admission::new(settings.max_in_flight, ADMISSION_WAIT);
    Router::new()
        .nest("/v1", admission.around(v1))
        .route(
            "/healthz",
            get(|| async { Json(json!({ "status": "ok" })) }),
        )
        .route("/readyz", get(readyz))
        .merge(console::routes())
        .merge(utoipa_swagger_ui::SwaggerUi::new("/docs").url("/openapi.json", openapi()))
        .merge(registry.route())
        .fallback(|| async { Problem::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            Problem::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "the route does not take this method",
            )
        })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn_with_state(
            state.http_metrics.clone(),
            metrics::record,
        ))
        .with_state(state)
}

/// 200 when the broker and every service (each with its database) answer, with how often each
/// process was restarted by its supervisor and how far each projection is behind its service's
/// log; else 503 naming what does not answer.
async fn readyz(axum::extract::State(state): axum::extract::State<AppState>) -> impl IntoResponse {
    let mut down: Vec<&str> = Vec::new();
    if !state.client.reachable().await {
        down.push("broker");
    }
    let (mut restarts, mut projections) = (serde_json::Map::new(), serde_json::Map::new());
    restarts.insert("bff".into(), json!(state.restarts));
    for service in Service::ALL {
        match state.services.ready(service).await {
            Some(ready) => {
                restarts.insert(service.name().into(), ready["restarts"].clone());
                projections.insert(service.name().into(), ready["projections"].clone());
            }
            None => down.push(service.name()),
        }
    }
    if down.is_empty() {
        let body = json!({ "status": "ready", "restarts": restarts, "projections": projections });
        (StatusCode::OK, Json(body)).into_response()
    } else {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not reachable: {}", down.join(", ")),
        )
        .into_response()
    }
}

/// Serves the API on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    client: Arc<Client>,
    settings: Settings,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(client, settings))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}
