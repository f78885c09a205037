//! The read routes: the services' query APIs seen through the caller's role and tenant. An
//! object of another tenant answers 404, exactly as one that does not exist.

use crate::AppState;
use crate::auth::{Caller, Role};
use crate::services::Service;
use crate::writes::owned_campaign;
use axum::Json;
use axum::extract::{RawQuery, State};
use futures_util::future::join_all;
use messaging::http::{OptionalBody, Path, Problem, Query};
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::IntoParams;
use uuid::Uuid;

const READERS: &[Role] = &[Role::Admin, Role::Advertiser, Role::Auditor];
const OVERSEERS: &[Role] = &[Role::Admin, Role::Auditor];

/// Appends the caller's query string, as given, to a service path.
fn with_query(path: String, query: Option<&str>) -> String {
    match query {
        Some(q) if !q.is_empty() => format!("{path}?{q}"),
        _ => path,
    }
}

/// A service's list; none (a 404 from the service) is an empty one.
fn listed(value: Option<Value>) -> Json<Value> {
    Json(value.unwrap_or_else(|| json!([])))
}

fn found(value: Option<Value>, what: String) -> Result<Json<Value>, Problem> {
    value
        .map(Json)
        .ok_or_else(|| Problem::not_found(format!("no {what}")))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AsOf {
    /// RFC 3339: the state at that time.
    pub as_of: Option<String>,
}

#[utoipa::path(get, path = "/v1/me", tag = "reads",
    responses((status = 200, description = "who the token says the caller is: subject, role, tenant")),
    security(("bearer" = [])))]
pub async fn me(caller: Caller) -> Json<Value> {
    Json(json!({
        "subject": caller.subject,
        "role": caller.role.name(),
        "tenant": caller.tenant,
    }))
}

#[utoipa::path(get, path = "/v1/campaigns", tag = "reads",
    responses((status = 200, description = "campaigns the caller may see")), security(("bearer" = [])))]
pub async fn campaigns(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, Problem> {
    caller.require(READERS)?;
    let path = if caller.sees_all() {
        "/campaigns".to_owned()
    } else {
        let tenant = caller
            .tenant
            .as_deref()
            .and_then(|t| Uuid::parse_str(t).ok())
            .ok_or_else(|| Problem::forbidden("the token names no advertiser tenant"))?;
        format!("/campaigns?advertiser_id={tenant}")
    };
    let list = state
        .services
        .get(Service::Campaigns, &path, &caller)
        .await?;
    Ok(listed(list))
}

#[utoipa::path(get, path = "/v1/campaigns/{id}", tag = "reads", params(("id" = Uuid, Path), AsOf),
    responses((status = 200, description = "the campaign, now or as of a time"), (status = 404, description = "not found")),
    security(("bearer" = [])))]
pub async fn campaign(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    Query(query): Query<AsOf>,
) -> Result<Json<Value>, Problem> {
    caller.require(READERS)?;
    let live = owned_campaign(&state, &caller, id).await?;
    let Some(as_of) = query.as_of else {
        return Ok(Json(live));
    };
    let path = format!("/campaigns/{id}?as_of={}", encode(&as_of));
    found(
        state
            .services
            .get(Service::Campaigns, &path, &caller)
            .await?,
        format!("campaign {id} at {as_of}"),
    )
}

/// Percent-encodes a query value.
pub(crate) fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

#[utoipa::path(get, path = "/v1/campaigns/{id}/stats", tag = "reads", params(("id" = Uuid, Path)),
    responses((status = 200, description = "clicks, leads, conversions, refunds, commissions, spend")),
    security(("bearer" = [])))]
pub async fn campaign_stats(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<Value>, Problem> {
    caller.require(READERS)?;
    let campaign = owned_campaign(&state, &caller, id).await?;
    let (stats, summary) = (
        format!("/campaigns/{id}/stats"),
        format!("/campaigns/{id}/commissions/summary"),
    );
    let (tracking, commissions) = tokio::join!(
        state.services.get(Service::Tracking, &stats, &caller),
        state.services.get(Service::Commissions, &summary, &caller),
    );
    let tracking = tracking?.unwrap_or_else(|| json!({}));
    Ok(Json(json!({
        "campaign_id": id,
        "clicks": tracking["clicks"].as_i64().unwrap_or(0),
        "leads": tracking["leads"].as_i64().unwrap_or(0),
        "conversions": tracking["conversions"].as_i64().unwrap_or(0),
        "refunds": tracking["refunds"].as_i64().unwrap_or(0),
        "tracking": tracking,
        "commissions": commissions?.unwrap_or_else(|| json!({})),
        "spend": {
            "reserved": campaign["reserved"],
            "available": campaign["available"],
            "currency": campaign["currency"],
        },
    })))
}

/// 404 unless the caller may see partner `id`: admins and auditors, or that partner.
fn partner_visible(caller: &Caller, id: Uuid) -> Result<(), Problem> {
    caller.require(&[Role::Admin, Role::Auditor, Role::Partner])?;
    if caller.sees_all() || caller.is_tenant(&id.to_string()) {
        Ok(())
    } else {
        Err(Problem::not_found(format!("no partner {id}")))
    }
}

#[utoipa::path(get, path = "/v1/partners/{id}", tag = "reads", params(("id" = Uuid, Path)),
    responses((status = 200, description = "the partner")), security(("bearer" = [])))]
pub async fn partner(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<Value>, Problem> {
    partner_visible(&caller, id)?;
    found(
        state
            .services
            .get(Service::Campaigns, &format!("/partners/{id}"), &caller)
            .await?,
        format!("partner {id}"),
    )
}

#[utoipa::path(get, path = "/v1/partners/{id}/commissions", tag = "reads",
    params(("id" = Uuid, Path),
        ("status" = Option<String>, Query, description = "assigned or reversed"),
        ("after" = Option<i64>, Query, description = "the `next` of the previous page"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000, description = "100 by default")),
    responses((status = 200, description = "a page of the partner's commissions, in the order they were assigned, and the cursor of the next")),
    security(("bearer" = [])))]
pub async fn partner_commissions(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, Problem> {
    let list = (Service::Commissions, "commissions");
    partner_list(&state, &caller, id, list, query.as_deref()).await
}

/// One of a partner's lists, from the service that keeps it, with the caller's paging.
async fn partner_list(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
    (service, what): (Service, &str),
    query: Option<&str>,
) -> Result<Json<Value>, Problem> {
    partner_visible(caller, id)?;
    let path = with_query(format!("/partners/{id}/{what}"), query);
    Ok(listed(state.services.get(service, &path, caller).await?))
}

#[utoipa::path(get, path = "/v1/partners/{id}/payments", tag = "reads",
    params(("id" = Uuid, Path),
        ("offset" = Option<i64>, Query, minimum = 0, description = "payments to skip"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000, description = "100 by default")),
    responses((status = 200, description = "a page of the partner's payments, newest first, and the totals paid and clawed back per currency")),
    security(("bearer" = [])))]
pub async fn partner_payments(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, Problem> {
    let list = (Service::Payments, "payments");
    partner_list(&state, &caller, id, list, query.as_deref()).await
}

#[utoipa::path(get, path = "/v1/tracking-events/{id}", tag = "reads", params(("id" = Uuid, Path)),
    responses((status = 200, description = "the tracking event and its state")), security(("bearer" = [])))]
pub async fn tracking_event(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<Value>, Problem> {
    caller.require(READERS)?;
    let event = state
        .services
        .get(
            Service::Tracking,
            &format!("/tracking-events/{id}"),
            &caller,
        )
        .await?
        .ok_or_else(|| Problem::not_found(format!("no tracking event {id}")))?;
    if !caller.sees_all() {
        let campaign = event["campaign_id"]
            .as_str()
            .and_then(|c| Uuid::parse_str(c).ok())
            .ok_or_else(|| Problem::not_found(format!("no tracking event {id}")))?;
        owned_campaign(&state, &caller, campaign)
            .await
            .map_err(|_| Problem::not_found(format!("no tracking event {id}")))?;
    }
    Ok(Json(event))
}

/// The services that handle commands, asked in turn for a command's outcome.
const COMMAND_SERVICES: [Service; 4] = [
    Service::Campaigns,
    Service::Tracking,
    Service::Commissions,
    Service::Payments,
];

#[utoipa::path(get, path = "/v1/commands/{id}", tag = "reads", params(("id" = Uuid, Path)),
    responses((status = 200, description = "pending, succeeded, or rejected with the reason")),
    security(("bearer" = [])))]
pub async fn command(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<Value>, Problem> {
    let path = format!("/commands/{id}");
    let answers = join_all(
        COMMAND_SERVICES
            .iter()
            .map(|service| state.services.get(*service, &path, &caller)),
    )
    .await;
    for answer in answers {
        if let Some(outcome) = answer?
            && outcome["status"] != "pending"
        {
            // Only its issuer and admins see what became of a command.
            if caller.role != Role::Admin && outcome["actor"].as_str() != Some(&caller.subject) {
                return Err(Problem::not_found(format!("no command {id}")));
            }
            return Ok(Json(outcome));
        }
    }
    Ok(Json(json!({ "command_id": id, "status": "pending" })))
}

#[utoipa::path(get, path = "/v1/sagas", tag = "sagas",
    params(("type" = Option<String>, Query),
        ("version" = Option<i32>, Query, description = "the version of its type's definition a saga started with"),
        ("status" = Option<String>, Query), ("campaign_id" = Option<Uuid>, Query),
        ("partner_id" = Option<Uuid>, Query), ("from" = Option<String>, Query), ("to" = Option<String>, Query),
        ("stalled_for" = Option<String>, Query, description = "seconds since the last change of a saga that has not ended"),
        ("key" = Option<String>, Query, description = "a saga, tracking event or correlation id, or an order id"),
        ("cursor" = Option<String>, Query, description = "the `next` of the previous page"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000, description = "100 by default")),
    responses((status = 200, description = "a page of the matching sagas, newest first, with `next` (null on the last page) and `counts` by status (the status filter aside)")),
    security(("bearer" = [])))]
pub async fn sagas(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, Problem> {
    caller.require(OVERSEERS)?;
    let path = with_query("/sagas".to_owned(), query.as_deref());
    let list = state.services.get(Service::Sagas, &path, &caller).await?;
    Ok(listed(list))
}

#[utoipa::path(get, path = "/v1/sagas/{id}", tag = "sagas", params(("id" = Uuid, Path)),
    responses((status = 200, description = "state, steps and timeline")), security(("bearer" = [])))]
pub async fn saga(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<Value>, Problem> {
    caller.require(OVERSEERS)?;
    found(
        state
            .services
            .get(Service::Sagas, &format!("/sagas/{id}"), &caller)
            .await?,
        format!("saga {id}"),
    )
}

#[utoipa::path(get, path = "/v1/sagas/{id}/compensations", tag = "sagas", params(("id" = Uuid, Path)),
    responses((status = 200, description = "the saga's compensation log")), security(("bearer" = [])))]
pub async fn saga_compensations(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<Value>, Problem> {
    caller.require(OVERSEERS)?;
    found(
        state
            .services
            .get(
                Service::Sagas,
                &format!("/sagas/{id}/compensations"),
                &caller,
            )
            .await?,
        format!("saga {id}"),
    )
}

/// Why an operator acts on a saga.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Acting {
    /// Recorded in the saga's log with the action and the caller (at most 2000 characters).
    pub reason: Option<String>,
}

#[utoipa::path(post, path = "/v1/sagas/{id}/{action}", tag = "sagas",
    params(("id" = Uuid, Path), ("action" = String, Path, description = "retry, resume or compensate")),
    request_body(content = Option<Acting>, description = "optional: why"),
    responses((status = 200, description = "the entries the action logged; the caller is the actor")),
    security(("bearer" = [])))]
pub async fn saga_action(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, action)): Path<(Uuid, String)>,
    OptionalBody(acting): OptionalBody<Acting>,
) -> Result<Json<Value>, Problem> {
    caller.require(&[Role::Admin])?;
    if !matches!(action.as_str(), "retry" | "resume" | "compensate") {
        return Err(Problem::not_found(format!("no action {action}")));
    }
    let acting = acting.unwrap_or_default();
    found(
        state
            .services
            .write(
                reqwest::Method::POST,
                Service::Sagas,
                &format!("/sagas/{id}/{action}"),
                &json!({ "reason": acting.reason }),
                &caller,
            )
            .await?,
        format!("saga {id}"),
    )
}

fn service(name: &str) -> Result<Service, Problem> {
    Service::from_name(name).ok_or_else(|| Problem::not_found(format!("no service {name}")))
}

#[utoipa::path(get, path = "/v1/audit/{service}/streams/{stream_id}", tag = "audit",
    params(("service" = String, Path), ("stream_id" = String, Path),
        ("from_version" = Option<i64>, Query), ("to_version" = Option<i64>, Query)),
    responses((status = 200, description = "the stream's events, decoded")), security(("bearer" = [])))]
pub async fn audit_stream(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, stream_id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, Problem> {
    caller.require(OVERSEERS)?;
    let path = with_query(format!("/streams/{}", encode(&stream_id)), query.as_deref());
    found(
        state.services.get(service(&name)?, &path, &caller).await?,
        format!("stream {stream_id}"),
    )
}

#[utoipa::path(get, path = "/v1/audit/{service}/streams/{stream_id}/state", tag = "audit",
    params(("service" = String, Path), ("stream_id" = String, Path), AsOf),
    responses((status = 200, description = "the entity's state as its service folds it from the stream's events recorded until `as_of` (now by default), with its version then; `state` is null for a stream the service keeps no state of")),
    security(("bearer" = [])))]
pub async fn audit_state(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, stream_id)): Path<(String, String)>,
    Query(as_of): Query<AsOf>,
) -> Result<Json<Value>, Problem> {
    caller.require(OVERSEERS)?;
    let mut path = format!("/streams/{}/state", encode(&stream_id));
    if let Some(at) = &as_of.as_of {
        path = format!("{path}?as_of={}", encode(at));
    }
    found(
        state.services.get(service(&name)?, &path, &caller).await?,
        format!("stream {stream_id}"),
    )
}

#[utoipa::path(get, path = "/v1/audit/{service}/events", tag = "audit",
    params(("service" = String, Path), ("after" = Option<i64>, Query), ("limit" = Option<i64>, Query),
        ("from" = Option<String>, Query), ("to" = Option<String>, Query)),
    responses((status = 200, description = "a page of the service's global log")), security(("bearer" = [])))]
pub async fn audit_events(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, Problem> {
    caller.require(OVERSEERS)?;
    let path = with_query("/events".to_owned(), query.as_deref());
    found(
        state.services.get(service(&name)?, &path, &caller).await?,
        format!("log of {name}"),
    )
}

#[utoipa::path(get, path = "/v1/audit/correlations/{correlation_id}", tag = "audit",
    params(("correlation_id" = Uuid, Path)),
    responses((status = 200, description = "the flow's events across all services, in causal order")),
    security(("bearer" = [])))]
pub async fn audit_correlation(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<Value>, Problem> {
    caller.require(OVERSEERS)?;
    let path = format!("/correlations/{id}");
    let answers = join_all(
        Service::ALL
            .iter()
            .map(|service| state.services.get(*service, &path, &caller)),
    )
    .await;
    let mut events = Vec::new();
    for (service, answer) in Service::ALL.iter().zip(answers) {
        for mut event in answer?
            .and_then(|list| list.as_array().cloned())
            .unwrap_or_default()
        {
            event["service"] = json!(service.name());
            events.push(event);
        }
    }
    // Every service records on the same PostgreSQL clock, inside the transaction that a cause's
    // commit led to: recording time is a causal order across services.
    let at = |event: &Value| {
        event["recorded_at"]
            .as_str()
            .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
    };
    events.sort_by(|a, b| {
        at(a)
            .cmp(&at(b))
            .then_with(|| a["position"].as_i64().cmp(&b["position"].as_i64()))
    });
    if events.is_empty() {
        return Err(Problem::not_found(format!("no flow {id}")));
    }
    Ok(Json(json!({ "correlation_id": id, "events": events })))
}
