//! Avro encode + decode per message against JSON for the real commands, and against the 1 µs
//! goal per round trip.

use super::{Figure, Scale, median};
use schemas::Message;
use schemas::commands::{AssignCommission, RecordTrackingEvent, ReserveBudget};
use schemas::values::{CommissionRule, Money, Order, TrackingKind};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::hint::black_box;
use std::time::Instant;
use uuid::Uuid;

/// Nanoseconds per encode + decode of `message`, Avro then JSON, and per Avro encode alone, over
/// `iterations`.
fn round_trips<M: Message + Serialize + DeserializeOwned>(
    message: &M,
    iterations: u32,
) -> (f64, f64, f64) {
    let encode = Instant::now();
    for _ in 0..iterations {
        black_box(black_box(message).encode().expect("encode"));
    }
    let encode = encode.elapsed().as_nanos() as f64 / f64::from(iterations);
    let avro = Instant::now();
    for _ in 0..iterations {
        let bytes = black_box(message).encode().expect("encode");
        black_box(M::decode(&bytes).expect("decode"));
    }
    let avro = avro.elapsed().as_nanos() as f64 / f64::from(iterations);
    let json = Instant::now();
    for _ in 0..iterations {
        let bytes = serde_json::to_vec(black_box(message)).expect("json");
        black_box(serde_json::from_slice::<M>(&bytes).expect("json"));
    }
    let json = json.elapsed().as_nanos() as f64 / f64::from(iterations);
    (avro, json, encode)
}

fn measure_one<M: Message + Serialize + DeserializeOwned>(
    name: &str,
    message: &M,
    rounds: usize,
    iterations: u32,
) -> Vec<Figure> {
    let (mut avro, mut json, mut encode) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let (a, j, e) = round_trips(message, iterations);
        avro.push(a);
        json.push(j);
        encode.push(e);
    }
    let (avro, json, encode) = (median(&mut avro), median(&mut json), median(&mut encode));
    vec![
        Figure::info(format!("Avro round trip, {name}"), avro, "ns").against(
            "1 µs goal",
            1000.0,
            "≤ 1",
            |r| r <= 1.0,
        ),
        Figure::info(format!("Avro encode alone, {name}"), encode, "ns").beside("Avro", avro),
        Figure::info(format!("JSON round trip, {name}"), json, "ns").beside("Avro", avro),
    ]
}

pub fn measure(scale: Scale) -> Vec<Figure> {
    let (rounds, iterations) = scale.pick((1, 100), (3, 20_000), (7, 100_000));
    let eur = |amount| Money {
        amount,
        currency: "EUR".into(),
    };
    let mut figures = measure_one(
        "RecordTrackingEvent",
        &RecordTrackingEvent {
            tracking_id: Uuid::new_v4(),
            campaign_id: Uuid::new_v4(),
            partner_id: Uuid::new_v4(),
            kind: TrackingKind::Conversion,
            order: Some(Order {
                order_id: "order-1001".into(),
                amount: eur(12_000),
            }),
            occurred_at: 1_790_000_000_000_000,
        },
        rounds,
        iterations,
    );
    figures.extend(measure_one(
        "ReserveBudget",
        &ReserveBudget {
            reservation_id: Uuid::new_v4(),
            campaign_id: Uuid::new_v4(),
            partner_id: Uuid::new_v4(),
            tracking_id: Uuid::new_v4(),
            kind: TrackingKind::Conversion,
            order_amount: Some(eur(12_000)),
            occurred_at: 1_790_000_000_000_000,
        },
        rounds,
        iterations,
    ));
    figures.extend(measure_one(
        "AssignCommission",
        &AssignCommission {
            commission_id: Uuid::new_v4(),
            campaign_id: Uuid::new_v4(),
            partner_id: Uuid::new_v4(),
            tracking_id: Uuid::new_v4(),
            rule: CommissionRule::Percent {
                basis_points: 1_000,
            },
            order_amount: Some(eur(12_000)),
            currency: "EUR".into(),
        },
        rounds,
        iterations,
    ));
    figures
}
