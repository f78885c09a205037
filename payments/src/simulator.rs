//! The payout-provider simulator (`pulsaga serve payout-sim`): a real HTTP server speaking the
//! provider API of `provider.rs`, with deterministic failure rules a test or demo triggers by the
//! amount it pays. State lives in memory.
//!
//! `POST /payouts` is idempotent by `idempotency_key`: a key is executed at most once, and a
//! repeated key answers what was recorded for it (`200`; the first execution answers `201`); the
//! same key with other data is `409`. `GET /payouts/{key}` answers the record or `404`.
//! `GET /stats` counts requests, lookups, executions (payouts that moved money) and declines,
//! so that a test can prove nothing was paid twice.
//!
//! The rules, by `amount % 1000`, for the calls with one key:
//!
//! | amount % 1000 | first call | later calls |
//! |---|---|---|
//! | 555 | `503`, nothing recorded (a transient error) | paid |
//! | 666 | declined, reason "account closed" | the recorded decline |
//! | 777 | paid, but answered only after `slow_delay` (a timeout with the money moved) | the recorded payout |
//! | 999 | lost: nothing recorded, `503` after `slow_delay` (a timeout the provider never saw) | paid |
//! | anything else | paid | the recorded payout |
//!
//! `slow_delay` must be longer than the client's timeout for 777 and 999 to time out.

use crate::provider::{Payout, PayoutRequest, PayoutStatus};
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use eventstore::http::Problem;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What the simulator's rules can be tuned with.
#[derive(Debug, Clone)]
pub struct SimulatorRules {
    /// How long a slow (777) or lost (999) first call waits before answering.
    pub slow_delay: Duration,
}

impl Default for SimulatorRules {
    fn default() -> Self {
        // Longer than the payments service's default provider timeout (5 s).
        SimulatorRules {
            slow_delay: Duration::from_secs(8),
        }
    }
}

/// What the simulator does with a call for a key it has not recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    Pay,
    /// Pay, then answer after the slow delay.
    PaySlowly,
    Decline(&'static str),
    /// Answer 503 at once; record nothing.
    Unavailable,
    /// Record nothing, answer 503 after the slow delay.
    Lose,
}

/// The rule for the `call`-th call (1-based) with one key paying `amount`.
pub fn rule(amount: i64, call: u32) -> Rule {
    match (amount.rem_euclid(1000), call) {
        (555, 1) => Rule::Unavailable,
        (666, _) => Rule::Decline("account closed"),
        (777, 1) => Rule::PaySlowly,
        (999, 1) => Rule::Lose,
        _ => Rule::Pay,
    }
}

/// The simulator's counters, as `GET /stats` shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// `POST /payouts` calls.
    pub requests: u64,
    /// `GET /payouts/{key}` calls.
    pub lookups: u64,
    /// Payouts executed: money moved.
    pub executions: u64,
    pub declines: u64,
}

#[derive(Debug, Default)]
struct Ledger {
    recorded: HashMap<String, (PayoutRequest, Payout)>,
    calls: HashMap<String, u32>,
    stats: Stats,
}

#[derive(Debug, Clone)]
struct Simulator {
    rules: SimulatorRules,
    ledger: Arc<Mutex<Ledger>>,
}

impl Simulator {
    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        // The ledger is consistent after every statement, so a panic elsewhere leaves it usable.
        self.ledger.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The simulator's routes.
pub fn router(rules: SimulatorRules) -> axum::Router {
    axum::Router::new()
        .route("/payouts", post(create))
        .route("/payouts/{key}", get(lookup))
        .route("/stats", get(stats))
        .with_state(Simulator {
            rules,
            ledger: Arc::default(),
        })
}

/// Serves the simulator on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    rules: SimulatorRules,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(rules))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

/// What one `POST /payouts` is answered with, decided under the ledger's lock.
enum Answer {
    Recorded(Payout),
    Executed(Payout),
    Slow(Payout),
    Unavailable,
    Lost,
    Conflict,
}

fn validate(request: &PayoutRequest) -> Result<(), Problem> {
    let key = &request.idempotency_key;
    if key.is_empty() || key.len() > 255 || key.contains('/') {
        return Err(Problem::unprocessable(
            "idempotency_key must be 1 to 255 characters without '/'",
        ));
    }
    if request.amount <= 0 {
        return Err(Problem::unprocessable("amount must be positive"));
    }
    let currency = request.currency.as_bytes();
    if currency.len() != 3 || !currency.iter().all(u8::is_ascii_uppercase) {
        return Err(Problem::unprocessable("currency must be an ISO 4217 code"));
    }
    Ok(())
}

fn payout(request: &PayoutRequest, status: PayoutStatus, reason: Option<&str>) -> Payout {
    Payout {
        idempotency_key: request.idempotency_key.clone(),
        payment_id: request.payment_id,
        partner_id: request.partner_id,
        amount: request.amount,
        currency: request.currency.clone(),
        status,
        reference: format!("po_{}", uuid::Uuid::new_v4().simple()),
        reason: reason.map(str::to_owned),
    }
}

fn decide(simulator: &Simulator, request: &PayoutRequest) -> Answer {
    let mut ledger = simulator.ledger();
    ledger.stats.requests += 1;
    let key = &request.idempotency_key;
    let call = ledger.calls.entry(key.clone()).or_default();
    *call += 1;
    let call = *call;
    if let Some((recorded, payout)) = ledger.recorded.get(key) {
        return if recorded == request {
            Answer::Recorded(payout.clone())
        } else {
            Answer::Conflict
        };
    }
    let rule = rule(request.amount, call);
    let (answer, payout) = match rule {
        Rule::Unavailable => return Answer::Unavailable,
        Rule::Lose => return Answer::Lost,
        Rule::Decline(reason) => {
            ledger.stats.declines += 1;
            let payout = payout(request, PayoutStatus::Declined, Some(reason));
            (Answer::Executed(payout.clone()), payout)
        }
        Rule::Pay | Rule::PaySlowly => {
            ledger.stats.executions += 1;
            let payout = payout(request, PayoutStatus::Paid, None);
            let answer = if rule == Rule::PaySlowly {
                Answer::Slow(payout.clone())
            } else {
                Answer::Executed(payout.clone())
            };
            (answer, payout)
        }
    };
    ledger
        .recorded
        .insert(key.clone(), (request.clone(), payout));
    answer
}

fn unavailable() -> Response {
    Problem::unavailable("the payout provider is temporarily unavailable").into_response()
}

async fn create(
    State(simulator): State<Simulator>,
    body: Result<Json<PayoutRequest>, JsonRejection>,
) -> Response {
    let request = match body {
        Ok(Json(request)) => request,
        Err(rejection) => return Problem::unprocessable(rejection.body_text()).into_response(),
    };
    if let Err(problem) = validate(&request) {
        return problem.into_response();
    }
    // Everything is recorded before any wait, so a caller that gives up changes nothing.
    match decide(&simulator, &request) {
        Answer::Recorded(payout) => (StatusCode::OK, Json(payout)).into_response(),
        Answer::Executed(payout) => (StatusCode::CREATED, Json(payout)).into_response(),
        Answer::Slow(payout) => {
            tokio::time::sleep(simulator.rules.slow_delay).await;
            (StatusCode::CREATED, Json(payout)).into_response()
        }
        Answer::Unavailable => unavailable(),
        Answer::Lost => {
            tokio::time::sleep(simulator.rules.slow_delay).await;
            unavailable()
        }
        Answer::Conflict => Problem::conflict(format!(
            "idempotency key {:?} was used with other data",
            request.idempotency_key
        ))
        .into_response(),
    }
}

async fn lookup(
    State(simulator): State<Simulator>,
    Path(key): Path<String>,
) -> Result<Json<Payout>, Problem> {
    let mut ledger = simulator.ledger();
    ledger.stats.lookups += 1;
    ledger
        .recorded
        .get(&key)
        .map(|(_, payout)| Json(payout.clone()))
        .ok_or_else(|| Problem::not_found(format!("no payout with idempotency key {key:?}")))
}

async fn stats(State(simulator): State<Simulator>) -> Json<Stats> {
    Json(simulator.ledger().stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::{self, Provider};
    use uuid::Uuid;

    #[test]
    fn the_rules_go_by_the_amount_and_the_call() {
        let cases = [
            (1_000, 1, Rule::Pay),
            (1_555, 1, Rule::Unavailable),
            (1_555, 2, Rule::Pay),
            (666, 1, Rule::Decline("account closed")),
            (2_666, 3, Rule::Decline("account closed")),
            (777, 1, Rule::PaySlowly),
            (777, 2, Rule::Pay),
            (12_999, 1, Rule::Lose),
            (12_999, 2, Rule::Pay),
            (1_554, 1, Rule::Pay),
        ];
        for (amount, call, expected) in cases {
            assert_eq!(rule(amount, call), expected, "amount {amount}, call {call}");
        }
    }

    struct Running {
        provider: Provider,
        base: String,
        shutdown: CancellationToken,
    }

    impl Drop for Running {
        fn drop(&mut self) {
            self.shutdown.cancel();
        }
    }

    async fn start(slow_delay: Duration, timeout: Duration) -> Running {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("listen");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let shutdown = CancellationToken::new();
        tokio::spawn(serve(
            listener,
            SimulatorRules { slow_delay },
            shutdown.clone(),
        ));
        Running {
            provider: Provider::new(&base, timeout).expect("provider"),
            base,
            shutdown,
        }
    }

    impl Running {
        /// The payout the provider recorded under the request's key, if any.
        async fn recorded(&self, request: &PayoutRequest) -> Option<Payout> {
            self.provider
                .lookup(&request.idempotency_key)
                .await
                .expect("lookup")
        }

        /// Pays `request` again: paid, and the money moved once in all.
        async fn pays_again_once(&self, request: &PayoutRequest) {
            let again = self.provider.pay(request).await.expect("pay again");
            assert_eq!(again.status, PayoutStatus::Paid);
            assert_eq!(self.stats().await.executions, 1);
        }

        /// Pays `request`, and gets no answer in time.
        async fn times_out(&self, request: &PayoutRequest) {
            let first = self.provider.pay(request).await;
            assert!(
                matches!(first, Err(provider::Error::NoAnswer(_))),
                "{first:?}"
            );
        }

        async fn stats(&self) -> Stats {
            reqwest::get(format!("{}/stats", self.base))
                .await
                .expect("stats")
                .json()
                .await
                .expect("stats body")
        }
    }

    fn request(amount: i64) -> PayoutRequest {
        let payment_id = Uuid::new_v4();
        PayoutRequest {
            idempotency_key: payment_id.to_string(),
            payment_id,
            partner_id: Uuid::new_v4(),
            amount,
            currency: "EUR".into(),
        }
    }

    fn stats(requests: u64, lookups: u64, executions: u64, declines: u64) -> Stats {
        Stats {
            requests,
            lookups,
            executions,
            declines,
        }
    }

    #[tokio::test]
    async fn a_key_is_executed_once_and_answered_the_same_after() {
        let sim = start(Duration::from_secs(5), Duration::from_secs(5)).await;
        let request = request(1_000);
        assert_eq!(sim.recorded(&request).await, None);
        let first = sim.provider.pay(&request).await.expect("pay");
        assert_eq!(
            (first.status, first.amount, first.reason.as_deref()),
            (PayoutStatus::Paid, 1_000, None)
        );
        let again = sim.provider.pay(&request).await.expect("pay again");
        assert_eq!(again, first, "a repeated key answers the recorded payout");
        assert_eq!(sim.recorded(&request).await, Some(first.clone()));
        assert_eq!(sim.stats().await, stats(2, 2, 1, 0));

        // Negative control: another key is another payout, and the counter shows it.
        let other = PayoutRequest {
            idempotency_key: Uuid::new_v4().to_string(),
            ..request.clone()
        };
        let other = sim.provider.pay(&other).await.expect("pay");
        assert_ne!(other.reference, first.reference);
        assert_eq!(sim.stats().await.executions, 2);

        // The same key with other data is refused, and changes nothing.
        let changed = PayoutRequest {
            amount: 2_000,
            ..request
        };
        let conflict = sim.provider.pay(&changed).await;
        assert!(
            matches!(conflict, Err(provider::Error::KeyConflict { .. })),
            "{conflict:?}"
        );
        assert_eq!(sim.stats().await.executions, 2);
    }

    #[tokio::test]
    async fn a_declined_payout_stays_declined() {
        let sim = start(Duration::from_secs(5), Duration::from_secs(5)).await;
        let request = request(3_666);
        for _ in 0..2 {
            let payout = sim.provider.pay(&request).await.expect("pay");
            assert_eq!(
                (payout.status, payout.reason.as_deref()),
                (PayoutStatus::Declined, Some("account closed"))
            );
        }
        assert_eq!(sim.stats().await, stats(2, 0, 0, 1));
    }

    #[tokio::test]
    async fn a_transient_error_comes_once_and_executes_nothing() {
        let sim = start(Duration::from_secs(5), Duration::from_secs(5)).await;
        let request = request(555);
        let first = sim.provider.pay(&request).await;
        assert!(
            matches!(&first, Err(provider::Error::Unavailable { status, .. }) if status.as_u16() == 503),
            "{first:?}"
        );
        assert_eq!(sim.recorded(&request).await, None);
        let second = sim.provider.pay(&request).await.expect("retry");
        assert_eq!(second.status, PayoutStatus::Paid);
        assert_eq!(sim.stats().await, stats(2, 1, 1, 0));
    }

    #[tokio::test]
    async fn a_slow_payout_times_out_with_the_money_moved() {
        let sim = start(Duration::from_secs(3), Duration::from_secs(1)).await;
        let request = request(777);
        sim.times_out(&request).await;
        let recorded = sim.recorded(&request).await;
        assert_eq!(recorded.map(|p| p.status), Some(PayoutStatus::Paid));
        sim.pays_again_once(&request).await;
    }

    #[tokio::test]
    async fn a_lost_call_times_out_and_the_provider_never_saw_it() {
        let sim = start(Duration::from_secs(3), Duration::from_secs(1)).await;
        let request = request(999);
        sim.times_out(&request).await;
        assert_eq!(sim.recorded(&request).await, None);
        sim.pays_again_once(&request).await;
    }

    #[tokio::test]
    async fn invalid_requests_are_refused() {
        let sim = start(Duration::from_secs(5), Duration::from_secs(5)).await;
        for invalid in [
            PayoutRequest {
                amount: 0,
                ..request(1)
            },
            PayoutRequest {
                currency: "eur".into(),
                ..request(1)
            },
            PayoutRequest {
                idempotency_key: String::new(),
                ..request(1)
            },
        ] {
            let refused = sim.provider.pay(&invalid).await;
            assert!(
                matches!(&refused, Err(provider::Error::Refused { status, .. }) if status.as_u16() == 422),
                "{refused:?}"
            );
        }
        let response = reqwest::Client::new()
            .post(format!("{}/payouts", sim.base))
            .header("content-type", "application/json")
            .body(r#"{"idempotency_key": "k", "surprise": 1}"#)
            .send()
            .await
            .expect("post");
        assert_eq!(response.status().as_u16(), 422);
        assert_eq!(sim.stats().await.executions, 0);
    }

    #[test]
    fn an_https_provider_is_refused_at_setup() {
        let https = Provider::new("https://payouts.example", Duration::from_secs(1));
        assert!(
            matches!(https, Err(provider::SetupError::Url { .. })),
            "{https:?}"
        );
    }
}
