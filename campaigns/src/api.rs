//! The campaigns internal query API: campaigns (now, or as of a time), a campaign's budget
//! reservations, partners, and the event store's routes (streams, the global log, command
//! outcomes). Every error, bad input included, is problem+json.

use crate::domain::{Campaign, CommissionRule};
use crate::projections::content_kind_name;
use crate::wire::{self, Stored};
use axum::Json;
use axum::extract::State;
use axum::routing::get;
use eventstore::Aggregate;
use eventstore::http::{AsOf, NoQuery, Path, Problem, Query};
use messaging::stored;
use schemas::events;
use serde::{Deserialize, Serialize};
use sqlx::{Acquire, PgConnection, PgPool};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

pub fn router(pool: PgPool) -> axum::Router {
    axum::Router::new()
        .route("/campaigns", get(campaigns))
        .route("/campaigns/{id}", get(campaign))
        .route("/campaigns/{id}/reservations", get(reservations))
        .route("/partners/{id}", get(partner))
        .with_state(pool.clone())
        .merge(eventstore::api::routes(
            pool,
            stored::json::<events::CampaignsEvent>,
            wire::fold,
        ))
}

/// How a campaign pays its partners, tagged by `type`.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum RuleView {
    Fixed { amount: i64 },
    Percent { basis_points: i32 },
}

#[derive(Debug, Serialize)]
struct ContentView {
    content_id: Uuid,
    kind: String,
    url: String,
    title: String,
    tags: Vec<String>,
}

/// A campaign as the API shows it, live or as of a time. The list leaves out `partners` and
/// `content`; `as_of` is there only when asked for.
#[derive(Debug, Serialize)]
struct CampaignView {
    campaign_id: Uuid,
    advertiser_id: Uuid,
    name: String,
    budget: i64,
    currency: String,
    commission_rule: RuleView,
    valid_from: String,
    valid_until: String,
    /// The sum of held reservations.
    reserved: i64,
    /// `budget - reserved`.
    available: i64,
    /// The version of the campaign's stream the view reflects.
    version: i64,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    updated_at: OffsetDateTime,
    #[serde(skip_serializing_if = "Option::is_none")]
    partners: Option<Vec<Uuid>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<Vec<ContentView>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    as_of: Option<String>,
}

#[derive(Debug, sqlx::FromRow)]
struct CampaignRow {
    campaign_id: Uuid,
    advertiser_id: Uuid,
    name: String,
    budget: i64,
    currency: String,
    commission_type: String,
    commission_amount: Option<i64>,
    commission_basis_points: Option<i32>,
    valid_from: i64,
    valid_until: i64,
    reserved: i64,
    available: i64,
    version: i64,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
}

impl From<CampaignRow> for CampaignView {
    fn from(row: CampaignRow) -> Self {
        let commission_rule = match row.commission_type.as_str() {
            "percent" => RuleView::Percent {
                basis_points: row.commission_basis_points.unwrap_or_default(),
            },
            _ => RuleView::Fixed {
                amount: row.commission_amount.unwrap_or_default(),
            },
        };
        CampaignView {
            campaign_id: row.campaign_id,
            advertiser_id: row.advertiser_id,
            name: row.name,
            budget: row.budget,
            currency: row.currency,
            commission_rule,
            valid_from: rfc3339_micros(row.valid_from),
            valid_until: rfc3339_micros(row.valid_until),
            reserved: row.reserved,
            available: row.available,
            version: row.version,
            created_at: row.created_at,
            updated_at: row.updated_at,
            partners: None,
            content: None,
            as_of: None,
        }
    }
}

#[derive(Debug, Serialize, sqlx::FromRow)]
struct ReservationView {
    reservation_id: Uuid,
    campaign_id: Uuid,
    partner_id: Uuid,
    tracking_id: Uuid,
    amount: i64,
    currency: String,
    /// `held` or `released`.
    status: String,
    release_reason: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    reserved_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    released_at: Option<OffsetDateTime>,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
struct PartnerView {
    partner_id: Uuid,
    name: String,
    email: String,
    payout_account: String,
    #[serde(with = "time::serde::rfc3339")]
    registered_at: OffsetDateTime,
    /// The campaigns the partner is associated with.
    campaigns: Vec<Uuid>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    advertiser_id: Option<Uuid>,
}

/// A wire time (microseconds since the Unix epoch) in RFC 3339. RFC 3339 has only the years
/// 0000 to 9999; a time beyond them (a command may carry any i64) shows as the nearest of those.
fn rfc3339_micros(micros: i64) -> String {
    const EARLIEST: i128 = -62_167_219_200_000_000; // 0000-01-01T00:00:00Z
    const LATEST: i128 = 253_402_300_799_999_999; // 9999-12-31T23:59:59.999999Z
    let micros = i128::from(micros).clamp(EARLIEST, LATEST);
    OffsetDateTime::from_unix_timestamp_nanos(micros * 1000)
        .ok()
        .and_then(|at| at.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// `select <every campaigns column the view needs> from campaigns <rest>`, as a static string.
macro_rules! select_campaigns {
    ($rest:literal) => {
        concat!(
            "select campaign_id, advertiser_id, name, budget, currency, commission_type, ",
            "commission_amount, commission_basis_points, valid_from, valid_until, reserved, ",
            "available, version, created_at, updated_at from campaigns ",
            $rest
        )
    };
}

async fn campaigns(
    State(pool): State<PgPool>,
    Query(query): Query<ListQuery>,
) -> Result<Json<Vec<CampaignView>>, Problem> {
    let rows: Vec<CampaignRow> = sqlx::query_as(select_campaigns!(
        "where $1::uuid is null or advertiser_id = $1 order by created_at, campaign_id"
    ))
    .bind(query.advertiser_id)
    .fetch_all(&pool)
    .await?;
    Ok(Json(rows.into_iter().map(CampaignView::from).collect()))
}

async fn campaign(
    State(pool): State<PgPool>,
    Path(id): Path<Uuid>,
    Query(query): Query<AsOf>,
) -> Result<Json<CampaignView>, Problem> {
    let mut conn = pool.acquire().await?;
    if let Some(at) = query.time()? {
        return as_of_time(&mut conn, id, at).await.map(Json);
    }
    // One snapshot for the row, its partners and its content, so that they show one version.
    let mut tx = conn.begin().await?;
    sqlx::query("set transaction isolation level repeatable read, read only")
        .execute(&mut *tx)
        .await?;
    let row: Option<CampaignRow> = sqlx::query_as(select_campaigns!("where campaign_id = $1"))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
    let mut view =
        CampaignView::from(row.ok_or_else(|| Problem::not_found(format!("no campaign {id}")))?);
    let partners: Vec<Uuid> = sqlx::query_scalar(
        "select partner_id from campaign_partners where campaign_id = $1 order by partner_id",
    )
    .bind(id)
    .fetch_all(&mut *tx)
    .await?;
    let content: Vec<(Uuid, String, String, String, Vec<String>)> = sqlx::query_as(
        "select content_id, kind, url, title, tags from campaign_content
          where campaign_id = $1 order by content_id",
    )
    .bind(id)
    .fetch_all(&mut *tx)
    .await?;
    view.partners = Some(partners);
    view.content = Some(
        content
            .into_iter()
            .map(|(content_id, kind, url, title, tags)| ContentView {
                content_id,
                kind,
                url,
                title,
                tags,
            })
            .collect(),
    );
    Ok(Json(view))
}

/// The campaign as it stood at `at`, folded from the events recorded until then.
async fn as_of_time(
    conn: &mut PgConnection,
    id: Uuid,
    at: OffsetDateTime,
) -> Result<CampaignView, Problem> {
    let events = eventstore::read_stream_as_of(conn, &wire::campaign_stream(id), at).await?;
    let mut state = Campaign::default();
    for event in &events {
        if let Ok(Some(Stored::Campaign(change))) = wire::stored(event) {
            state.apply(&change);
        }
    }
    let (Some(details), Some(first), Some(last)) = (state.details(), events.first(), events.last())
    else {
        return Err(Problem::not_found(format!("no campaign {id} at {at}")));
    };
    let commission_rule = match details.commission_rule {
        CommissionRule::Fixed { amount } => RuleView::Fixed { amount },
        CommissionRule::Percent { basis_points } => RuleView::Percent { basis_points },
    };
    Ok(CampaignView {
        campaign_id: details.campaign_id,
        advertiser_id: details.advertiser_id,
        name: details.name.clone(),
        budget: details.budget.amount,
        currency: details.budget.currency.clone(),
        commission_rule,
        valid_from: rfc3339_micros(details.valid_from),
        valid_until: rfc3339_micros(details.valid_until),
        reserved: state.spent(),
        available: details.budget.amount - state.spent(),
        version: last.version,
        created_at: first.recorded_at,
        updated_at: last.recorded_at,
        partners: Some(state.partners().collect()),
        content: Some(
            state
                .content()
                .map(|c| ContentView {
                    content_id: c.content_id,
                    kind: content_kind_name(c.kind).to_owned(),
                    url: c.url.clone(),
                    title: c.title.clone(),
                    tags: c.tags.clone(),
                })
                .collect(),
        ),
        as_of: Some(at.format(&Rfc3339).unwrap_or_default()),
    })
}

async fn reservations(
    State(pool): State<PgPool>,
    Path(id): Path<Uuid>,
    Query(_): Query<NoQuery>,
) -> Result<Json<Vec<ReservationView>>, Problem> {
    let mut conn = pool.acquire().await?;
    let exists: bool =
        sqlx::query_scalar("select exists (select 1 from campaigns where campaign_id = $1)")
            .bind(id)
            .fetch_one(&mut *conn)
            .await?;
    if !exists {
        return Err(Problem::not_found(format!("no campaign {id}")));
    }
    let rows: Vec<ReservationView> = sqlx::query_as(
        "select reservation_id, campaign_id, partner_id, tracking_id, amount, currency, status,
                release_reason, reserved_at, released_at
           from budget_reservations where campaign_id = $1
          order by reserved_at, reservation_id",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(Json(rows))
}

async fn partner(
    State(pool): State<PgPool>,
    Path(id): Path<Uuid>,
    Query(_): Query<NoQuery>,
) -> Result<Json<PartnerView>, Problem> {
    let row: Option<PartnerView> = sqlx::query_as(
        "select p.partner_id, p.name, p.email, p.payout_account, p.registered_at,
                array(select c.campaign_id from campaign_partners c
                       where c.partner_id = p.partner_id order by c.campaign_id) as campaigns
           from partners p where p.partner_id = $1",
    )
    .bind(id)
    .fetch_optional(&pool)
    .await?;
    row.map(Json)
        .ok_or_else(|| Problem::not_found(format!("no partner {id}")))
}
