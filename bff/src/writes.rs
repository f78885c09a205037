//! The write routes: each validates its body, publishes one Avro command to its topic (the
//! broker's receipt makes it durable) and answers `202 Accepted` with the command id and the ids
//! it created. Server-owned fields (ids, the owning advertiser) come from the server, never from
//! the body. With an `Idempotency-Key` header the command id and the created ids derive from the
//! caller, the route and the key, so a retried write is the same command, which the service
//! applies once, and answers the same. The key's first use is claimed in the database of the
//! service the command goes to, with a fingerprint of the body: the same key with another body
//! is refused with 422, as Stripe does, instead of being dropped as a duplicate.

mod bodies;

use crate::AppState;
use crate::auth::{Caller, Role};
use crate::services::Service;
use axum::Json;
use axum::extract::State;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode, Uri};
use messaging::effects;
use messaging::http::{Body, Path, Problem};
use schemas::Message;
use schemas::commands::{
    AssociateContent, AssociatePartner, CreateCampaign, RecordTrackingEvent, RegisterPartner,
};
use schemas::values::{CommissionRule, ContentKind, Money, Order, TrackingKind};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use bodies::{
    Accepted, ContentKindBody, KindBody, MoneyBody, NewAssociation, NewCampaign, NewContent,
    NewPartner, NewTrackingEvent, OrderBody, RuleBody,
};

/// Names the space of command ids derived from idempotency keys.
const IDEMPOTENCY: Uuid = Uuid::from_u128(0x6f1c_3c55_9a0e_4b7e_8f7b_2d1c_0a9e_5b31);
/// Names the space of request body fingerprints.
const FINGERPRINTS: Uuid = Uuid::from_u128(0x2b8e_61d0_47c3_4f5a_9d0e_7c4b_1a36_e952);
const MAX_IDEMPOTENCY_KEY: usize = 255;

/// A text field, trimmed: 1 to `max` characters, none of them a control character (U+0000 to
/// U+001F, U+007F to U+009F), which no name, id or URL needs and PostgreSQL cannot always store.
fn text(name: &str, value: &str, max: usize) -> Result<String, Problem> {
    let value = value.trim();
    if value.is_empty() || value.chars().count() > max {
        return Err(Problem::unprocessable(format!(
            "{name} must have 1 to {max} characters"
        )));
    }
    if let Some(control) = value.chars().find(|c| c.is_control()) {
        return Err(Problem::unprocessable(format!(
            "{name} must not contain control characters (found U+{:04X})",
            u32::from(control)
        )));
    }
    Ok(value.to_owned())
}

const MAX_TAGS: usize = 20;

fn money(name: &str, body: &MoneyBody) -> Result<Money, Problem> {
    let currency_ok =
        body.currency.len() == 3 && body.currency.bytes().all(|b| b.is_ascii_uppercase());
    if body.amount <= 0 || !currency_ok {
        return Err(Problem::unprocessable(format!(
            "{name} needs a positive amount in minor units and an ISO 4217 currency such as EUR"
        )));
    }
    Ok(Money {
        amount: body.amount,
        currency: body.currency.clone(),
    })
}

fn micros(name: &str, value: Option<&str>) -> Result<i64, Problem> {
    let at = match value {
        None => OffsetDateTime::now_utc(),
        Some(text) => OffsetDateTime::parse(text, &Rfc3339).map_err(|_| {
            Problem::unprocessable(format!("{name} must be an RFC 3339 time, got {text:?}"))
        })?,
    };
    i64::try_from(at.unix_timestamp_nanos() / 1000)
        .map_err(|_| Problem::unprocessable(format!("{name} is out of range")))
}

/// A write's JSON body and its fingerprint: a hash of the body as parsed, so that whitespace
/// and the order of fields do not count.
pub struct WriteBody<T> {
    body: T,
    fingerprint: Uuid,
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for WriteBody<T> {
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Problem> {
        let Body(value) = Body::<Value>::from_request(request, state).await?;
        // serde_json's maps are ordered by key: one text per parsed body.
        let fingerprint = Uuid::new_v5(&FINGERPRINTS, value.to_string().as_bytes());
        let body =
            serde_json::from_value(value).map_err(|e| Problem::unprocessable(e.to_string()))?;
        Ok(WriteBody { body, fingerprint })
    }
}

/// Where a write's command goes, and so where its Idempotency-Key is claimed.
struct Route<'a> {
    uri: &'a Uri,
    service: Service,
}

/// The command id: new, or with an `Idempotency-Key` derived from the caller, the route and the
/// key, once the key's claim for this body's fingerprint holds.
async fn command_id(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    route: Route<'_>,
    fingerprint: Uuid,
) -> Result<Uuid, Problem> {
    let Some(key) = headers.get("idempotency-key") else {
        return Ok(Uuid::now_v7());
    };
    let key = key
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY)
        .ok_or_else(|| {
            Problem::bad_request(format!(
                "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"
            ))
        })?;
    let command_id = Uuid::new_v5(
        &IDEMPOTENCY,
        format!("{}\nPOST {}\n{key}", caller.subject, route.uri.path()).as_bytes(),
    );
    let claim = json!({ "fingerprint": fingerprint });
    let held = state
        .services
        .write(
            reqwest::Method::PUT,
            route.service,
            &format!("/idempotency-keys/{command_id}"),
            &claim,
            caller,
        )
        .await?
        .and_then(|held| {
            held["fingerprint"]
                .as_str()
                .and_then(|f| f.parse::<Uuid>().ok())
        });
    match held {
        Some(held) if held == fingerprint => Ok(command_id),
        Some(_) => Err(Problem::unprocessable(format!(
            "Idempotency-Key {key:?} was used on this route with another request body; \
             send the same body to retry, or use a new key for a new request"
        ))),
        None => Err(Problem::upstream(
            "claiming the Idempotency-Key",
            "no fingerprint in the answer",
        )),
    }
}

/// An id the command creates, derived from the command id (so a retry creates the same one).
fn created(command_id: Uuid, what: &str) -> Uuid {
    Uuid::new_v5(&command_id, what.as_bytes())
}

async fn publish<M: Message>(
    state: &AppState,
    caller: &Caller,
    key: Uuid,
    command_id: Uuid,
    command: &M,
) -> Result<(), Problem> {
    let properties = effects::first_of_flow(
        command_id,
        command,
        caller.tenant.clone(),
        Some(caller.subject.clone()),
    );
    let message = effects::outgoing(command, &key.to_string(), &properties)
        .map_err(|e| Problem::unprocessable(format!("the command cannot be encoded: {e}")))?;
    state
        .client
        .publish(&message)
        .await
        .map_err(|e| Problem::upstream("publishing the command", e))?;
    Ok(())
}

fn accepted(command_id: Uuid, created: &[(&str, Uuid)]) -> (StatusCode, Json<Accepted>) {
    (
        StatusCode::ACCEPTED,
        Json(Accepted {
            command_id,
            created: created
                .iter()
                .map(|(name, id)| ((*name).to_owned(), Value::String(id.to_string())))
                .collect(),
        }),
    )
}

/// Answers 404 unless the caller may act on the campaign: admins on any, an advertiser on its
/// own. The campaign must be in the read model already.
pub async fn owned_campaign(
    state: &AppState,
    caller: &Caller,
    campaign_id: Uuid,
) -> Result<Value, Problem> {
    let campaign = state
        .services
        .get(
            Service::Campaigns,
            &format!("/campaigns/{campaign_id}"),
            caller,
        )
        .await?;
    let not_found = || Problem::not_found(format!("no campaign {campaign_id}"));
    let campaign = campaign.ok_or_else(not_found)?;
    let owner = campaign["advertiser_id"].as_str();
    if let Some(owner) = owner {
        state.owners.learn(campaign_id, owner);
    }
    if caller.sees_all() || owner.is_some_and(|owner| caller.is_tenant(owner)) {
        Ok(campaign)
    } else {
        Err(not_found())
    }
}

/// [`owned_campaign`] for a write, which needs only the answer: a campaign whose advertiser the
/// API has learnt is not fetched again.
async fn writable_campaign(
    state: &AppState,
    caller: &Caller,
    campaign_id: Uuid,
) -> Result<(), Problem> {
    match state.owners.get(campaign_id) {
        Some(owner) if caller.sees_all() || caller.is_tenant(&owner) => Ok(()),
        Some(_) => Err(Problem::not_found(format!("no campaign {campaign_id}"))),
        None => owned_campaign(state, caller, campaign_id).await.map(drop),
    }
}

/// The advertiser of each campaign the API has fetched. A campaign's advertiser is set when it is
/// created and never changes, so a write under a campaign whose advertiser the API knows is
/// authorised without asking the campaigns service again: a request there, and five statements
/// on its database, for every tracking event. At most [`OWNERS`] are kept; past that they are
/// forgotten and learnt again.
#[derive(Debug, Clone, Default)]
pub struct Owners(Arc<Mutex<HashMap<Uuid, String>>>);

/// Campaigns whose advertiser the API keeps at most.
const OWNERS: usize = 100_000;

impl Owners {
    fn get(&self, campaign_id: Uuid) -> Option<String> {
        self.0.lock().ok()?.get(&campaign_id).cloned()
    }

    fn learn(&self, campaign_id: Uuid, advertiser: &str) {
        if let Ok(mut owners) = self.0.lock() {
            if owners.len() >= OWNERS {
                owners.clear();
            }
            owners.insert(campaign_id, advertiser.to_owned());
        }
    }
}

#[utoipa::path(post, path = "/v1/partners", tag = "writes", request_body = NewPartner,
    params(("Idempotency-Key" = Option<String>, Header, description = "makes a retry the same command")),
    responses((status = 202, body = Accepted), (status = 422, description = "invalid body")),
    security(("bearer" = [])))]
pub async fn register_partner(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    uri: Uri,
    WriteBody { body, fingerprint }: WriteBody<NewPartner>,
) -> Result<(StatusCode, Json<Accepted>), Problem> {
    caller.require(&[Role::Admin, Role::Advertiser])?;
    let email = text("email", &body.email, 254)?;
    if !email.contains('@') {
        return Err(Problem::unprocessable("email must be an e-mail address"));
    }
    let name = text("name", &body.name, 200)?;
    let payout_account = text("payout_account", &body.payout_account, 64)?;
    let route = Route {
        uri: &uri,
        service: Service::Campaigns,
    };
    let command_id = command_id(&state, &caller, &headers, route, fingerprint).await?;
    let partner_id = created(command_id, "partner");
    let command = RegisterPartner {
        partner_id,
        name,
        email,
        payout_account,
    };
    publish(&state, &caller, partner_id, command_id, &command).await?;
    Ok(accepted(command_id, &[("partner_id", partner_id)]))
}

#[utoipa::path(post, path = "/v1/campaigns", tag = "writes", request_body = NewCampaign,
    params(("Idempotency-Key" = Option<String>, Header, description = "makes a retry the same command")),
    responses((status = 202, body = Accepted), (status = 422, description = "invalid body")),
    security(("bearer" = [])))]
pub async fn create_campaign(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    uri: Uri,
    WriteBody { body, fingerprint }: WriteBody<NewCampaign>,
) -> Result<(StatusCode, Json<Accepted>), Problem> {
    caller.require(&[Role::Admin, Role::Advertiser])?;
    let advertiser_id = match (caller.role, body.advertiser_id) {
        (Role::Admin, Some(id)) => id,
        (Role::Admin, None) => {
            return Err(Problem::unprocessable("an admin names the advertiser_id"));
        }
        (_, Some(_)) => {
            return Err(Problem::unprocessable(
                "advertiser_id is set by the server: a campaign belongs to its creator",
            ));
        }
        (_, None) => caller
            .tenant
            .as_deref()
            .and_then(|t| Uuid::parse_str(t).ok())
            .ok_or_else(|| Problem::forbidden("the token names no advertiser tenant"))?,
    };
    let commission_rule = match body.commission_rule {
        RuleBody::Fixed { amount } if amount > 0 => CommissionRule::Fixed { amount },
        RuleBody::Percent { basis_points } if (1..=10_000).contains(&basis_points) => {
            CommissionRule::Percent { basis_points }
        }
        _ => {
            return Err(Problem::unprocessable(
                "commission_rule needs a positive fixed amount or 1 to 10000 basis points",
            ));
        }
    };
    let valid_from = micros("valid_from", body.valid_from.as_deref())?;
    let valid_until = micros("valid_until", Some(&body.valid_until))?;
    if valid_until <= valid_from {
        return Err(Problem::unprocessable(
            "valid_until must be after valid_from",
        ));
    }
    let name = text("name", &body.name, 200)?;
    let budget = money("budget", &body.budget)?;
    let route = Route {
        uri: &uri,
        service: Service::Campaigns,
    };
    let command_id = command_id(&state, &caller, &headers, route, fingerprint).await?;
    let campaign_id = created(command_id, "campaign");
    let command = CreateCampaign {
        campaign_id,
        advertiser_id,
        name,
        budget,
        commission_rule,
        valid_from,
        valid_until,
    };
    publish(&state, &caller, campaign_id, command_id, &command).await?;
    Ok(accepted(command_id, &[("campaign_id", campaign_id)]))
}

#[utoipa::path(post, path = "/v1/campaigns/{id}/partners", tag = "writes", request_body = NewAssociation,
    params(("id" = Uuid, Path), ("Idempotency-Key" = Option<String>, Header, description = "makes a retry the same command")),
    responses((status = 202, body = Accepted), (status = 404, description = "no such campaign for the caller")),
    security(("bearer" = [])))]
pub async fn associate_partner(
    State(state): State<AppState>,
    caller: Caller,
    Path(campaign_id): Path<Uuid>,
    headers: HeaderMap,
    uri: Uri,
    WriteBody { body, fingerprint }: WriteBody<NewAssociation>,
) -> Result<(StatusCode, Json<Accepted>), Problem> {
    caller.require(&[Role::Admin, Role::Advertiser])?;
    writable_campaign(&state, &caller, campaign_id).await?;
    let route = Route {
        uri: &uri,
        service: Service::Campaigns,
    };
    let command_id = command_id(&state, &caller, &headers, route, fingerprint).await?;
    let command = AssociatePartner {
        campaign_id,
        partner_id: body.partner_id,
    };
    publish(&state, &caller, campaign_id, command_id, &command).await?;
    Ok(accepted(command_id, &[]))
}

#[utoipa::path(post, path = "/v1/campaigns/{id}/content", tag = "writes", request_body = NewContent,
    params(("id" = Uuid, Path), ("Idempotency-Key" = Option<String>, Header, description = "makes a retry the same command")),
    responses((status = 202, body = Accepted), (status = 404, description = "no such campaign for the caller")),
    security(("bearer" = [])))]
pub async fn associate_content(
    State(state): State<AppState>,
    caller: Caller,
    Path(campaign_id): Path<Uuid>,
    headers: HeaderMap,
    uri: Uri,
    WriteBody { body, fingerprint }: WriteBody<NewContent>,
) -> Result<(StatusCode, Json<Accepted>), Problem> {
    caller.require(&[Role::Admin, Role::Advertiser])?;
    writable_campaign(&state, &caller, campaign_id).await?;
    let url = text("url", &body.url, 2048)?;
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return Err(Problem::unprocessable("url must be an http(s) URL"));
    }
    if body.tags.len() > MAX_TAGS {
        return Err(Problem::unprocessable(format!("at most {MAX_TAGS} tags")));
    }
    let tags = body
        .tags
        .iter()
        .map(|tag| text("tags[]", tag, 50))
        .collect::<Result<Vec<_>, _>>()?;
    let title = text("title", &body.title, 200)?;
    let route = Route {
        uri: &uri,
        service: Service::Campaigns,
    };
    let command_id = command_id(&state, &caller, &headers, route, fingerprint).await?;
    let content_id = created(command_id, "content");
    let command = AssociateContent {
        campaign_id,
        content_id,
        kind: match body.kind {
            ContentKindBody::Banner => ContentKind::Banner,
            ContentKindBody::Link => ContentKind::Link,
            ContentKindBody::Text => ContentKind::Text,
            ContentKindBody::Video => ContentKind::Video,
        },
        url,
        title,
        tags,
    };
    publish(&state, &caller, campaign_id, command_id, &command).await?;
    Ok(accepted(command_id, &[("content_id", content_id)]))
}

#[utoipa::path(post, path = "/v1/tracking-events", tag = "writes", request_body = NewTrackingEvent,
    params(("Idempotency-Key" = Option<String>, Header, description = "makes a retry the same command")),
    responses((status = 202, body = Accepted), (status = 404, description = "no such campaign for the caller"),
        (status = 422, description = "invalid body")),
    security(("bearer" = [])))]
pub async fn record_tracking_event(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    uri: Uri,
    WriteBody { body, fingerprint }: WriteBody<NewTrackingEvent>,
) -> Result<(StatusCode, Json<Accepted>), Problem> {
    caller.require(&[Role::Admin, Role::Advertiser])?;
    let order = |order: &OrderBody| -> Result<Option<Order>, Problem> {
        Ok(Some(Order {
            order_id: text("order.order_id", &order.order_id, 200)?,
            amount: money("order.amount", &order.amount)?,
        }))
    };
    let (kind, order) = match (body.kind, &body.order) {
        (KindBody::Conversion, Some(o)) => (TrackingKind::Conversion, order(o)?),
        (KindBody::Refund, Some(o)) => (TrackingKind::Refund, order(o)?),
        (KindBody::Conversion | KindBody::Refund, None) => {
            return Err(Problem::unprocessable(
                "a conversion or refund carries its order",
            ));
        }
        (KindBody::Click | KindBody::Lead, Some(_)) => {
            return Err(Problem::unprocessable(
                "only a conversion or refund carries an order",
            ));
        }
        (KindBody::Click, None) => (TrackingKind::Click, None),
        (KindBody::Lead, None) => (TrackingKind::Lead, None),
    };
    writable_campaign(&state, &caller, body.campaign_id).await?;
    let occurred_at = micros("occurred_at", body.occurred_at.as_deref())?;
    let route = Route {
        uri: &uri,
        service: Service::Tracking,
    };
    let command_id = command_id(&state, &caller, &headers, route, fingerprint).await?;
    let tracking_id = created(command_id, "tracking-event");
    let command = RecordTrackingEvent {
        tracking_id,
        campaign_id: body.campaign_id,
        partner_id: body.partner_id,
        kind,
        order,
        occurred_at,
    };
    publish(&state, &caller, tracking_id, command_id, &command).await?;
    let saga_id = schemas::ids::saga_id_for(tracking_id);
    Ok(accepted(
        command_id,
        &[("tracking_id", tracking_id), ("saga_id", saga_id)],
    ))
}
