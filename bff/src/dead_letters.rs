//! Dead letters across the services (admin only): each service keeps the messages its consumers
//! gave up on (`eventstore::dead_letter`); the API lists them newest first across all services, a
//! page at a time, shows one with its body decoded, and re-drives one to its topic. A service
//! that does not answer (hung, restarting) leaves the others' dead letters listed, and is named
//! in `unavailable`: an operator in an incident sees what can be seen.

use crate::AppState;
use crate::auth::{Caller, Role};
use crate::reads::{Acting, encode};
use crate::services::Service;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use futures_util::future::join_all;
use messaging::http::{OptionalBody, Path, Problem, Query};
use serde::Deserialize;
use serde_json::{Value, json};
use std::cmp::Ordering;
use utoipa::IntoParams;
use uuid::Uuid;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterFilter {
    /// Only this service's: campaigns, tracking, commissions, payments or sagas.
    service: Option<String>,
    /// Only those of this topic (its short name, e.g. `campaigns-budget-reservation`).
    topic: Option<String>,
    /// `pending` (not re-driven yet), `redriven`, or `all` (the default).
    status: Option<String>,
    /// The `next` of the previous page.
    cursor: Option<String>,
    /// 100 by default, at most 1000.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

/// Orders dead letters newest first, by the `<micros>.<id>` cursor each one carries.
fn newest_first(a: &Value, b: &Value) -> Ordering {
    let key = |letter: &Value| {
        letter["cursor"].as_str().and_then(|c| {
            let (micros, id) = c.split_once('.')?;
            Some((micros.parse::<i64>().ok()?, Uuid::parse_str(id).ok()?))
        })
    };
    key(b).cmp(&key(a))
}

#[utoipa::path(get, path = "/v1/dead-letters", tag = "operations", params(DeadLetterFilter),
    responses((status = 200, description = "a page of dead letters of every service, newest first, with `next` (null on the last page), `topics` (each dead-letter topic's pending and re-driven counts) and `unavailable` (the services that did not answer; their dead letters are missing)")),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(filter): Query<DeadLetterFilter>,
) -> Result<Json<Value>, Problem> {
    caller.require(&[Role::Admin])?;
    let services: Vec<Service> = match filter.service.as_deref() {
        None => Service::ALL.to_vec(),
        Some(name) => vec![Service::from_name(name).ok_or_else(|| {
            Problem::bad_request(format!(
                "service is campaigns, tracking, commissions, payments or sagas, got {name:?}"
            ))
        })?],
    };
    let limit = filter.limit.unwrap_or(100);
    let query: Vec<String> = [
        ("topic", filter.topic.as_deref()),
        ("status", filter.status.as_deref()),
        ("cursor", filter.cursor.as_deref()),
    ]
    .into_iter()
    .filter_map(|(name, value)| Some(format!("{name}={}", encode(value?))))
    .chain([format!("limit={limit}")])
    .collect();
    let path = format!("/dead-letters?{}", query.join("&"));
    let answers = join_all(
        services
            .iter()
            .map(|service| state.services.get(*service, &path, &caller)),
    )
    .await;
    let (mut letters, mut topics, mut more) = (Vec::new(), Vec::new(), false);
    let mut unavailable = Vec::new();
    for (service, answer) in services.iter().zip(answers) {
        let page = match answer {
            Ok(page) => page.unwrap_or(Value::Null),
            Err(problem) if out_of_reach(&problem) => {
                unavailable.push(service.name());
                continue;
            }
            Err(problem) => return Err(problem),
        };
        more |= !page["next"].is_null();
        let tagged = |list: &Value| -> Vec<Value> {
            let mut items = list.as_array().cloned().unwrap_or_default();
            for item in &mut items {
                item["service"] = json!(service.name());
            }
            items
        };
        letters.extend(tagged(&page["dead_letters"]));
        topics.extend(tagged(&page["topics"]));
    }
    letters.sort_by(newest_first);
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    more |= letters.len() > limit;
    letters.truncate(limit);
    let next = match letters.last() {
        Some(last) if more => last["cursor"].clone(),
        _ => Value::Null,
    };
    if unavailable.len() == services.len() {
        return Err(Problem::new(
            StatusCode::BAD_GATEWAY,
            format!("no service answered: {}", unavailable.join(", ")),
        ));
    }
    Ok(Json(json!({
        "dead_letters": letters, "next": next, "topics": topics, "unavailable": unavailable,
    })))
}

/// Whether a service's answer says it could not be reached or is overloaded, rather than
/// anything about the request.
fn out_of_reach(problem: &Problem) -> bool {
    matches!(
        problem.status,
        StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE
    )
}

/// The service that holds dead letter `id`, and the dead letter as it shows it.
async fn find(state: &AppState, caller: &Caller, id: Uuid) -> Result<(Service, Value), Problem> {
    let path = format!("/dead-letters/{id}");
    let answers = join_all(
        Service::ALL
            .iter()
            .map(|service| state.services.get(*service, &path, caller)),
    )
    .await;
    let mut unanswered = None;
    for (service, answer) in Service::ALL.into_iter().zip(answers) {
        match answer {
            Ok(Some(mut letter)) => {
                letter["service"] = json!(service.name());
                return Ok((service, letter));
            }
            Ok(None) => {}
            // It may hold the dead letter: say so, unless another service has it.
            Err(problem) if out_of_reach(&problem) => unanswered = Some(problem),
            Err(problem) => return Err(problem),
        }
    }
    Err(unanswered.unwrap_or_else(|| Problem::not_found(format!("no dead letter {id}"))))
}

#[utoipa::path(get, path = "/v1/dead-letters/{id}", tag = "operations", params(("id" = Uuid, Path)),
    responses((status = 200, description = "the dead letter: why it failed, its original properties, its body decoded (null if it could not be) and its payload in base64")),
    security(("bearer" = [])))]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<Value>, Problem> {
    caller.require(&[Role::Admin])?;
    Ok(Json(find(&state, &caller, id).await?.1))
}

#[utoipa::path(post, path = "/v1/dead-letters/{id}/redrive", tag = "operations",
    params(("id" = Uuid, Path)),
    request_body(content = Option<Acting>, description = "optional: why"),
    responses((status = 200, description = "the dead letter, re-driven: its message is queued on its topic again, recorded with the caller and the reason"),
        (status = 409, description = "it was re-driven before")),
    security(("bearer" = [])))]
pub async fn redrive(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    OptionalBody(acting): OptionalBody<Acting>,
) -> Result<Json<Value>, Problem> {
    caller.require(&[Role::Admin])?;
    let (service, _) = find(&state, &caller, id).await?;
    let acting = acting.unwrap_or_default();
    let mut letter = state
        .services
        .write(
            reqwest::Method::POST,
            service,
            &format!("/dead-letters/{id}/redrive"),
            &json!({ "reason": acting.reason }),
            &caller,
        )
        .await?
        .ok_or_else(|| Problem::not_found(format!("no dead letter {id}")))?;
    letter["service"] = json!(service.name());
    Ok(Json(letter))
}
