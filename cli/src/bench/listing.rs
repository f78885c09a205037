//! The console's saga list, timed once the loads have filled the coordinator.

use super::bounds::median_of;
use crate::client::ApiClient;
use std::time::{Duration, Instant};

/// How fast the saga list answers once the loads have filled the coordinator: what the console
/// asks for when it opens the list, pages on, searches and filters.
pub(super) struct Listing {
    pub(super) sagas: u64,
    pub(super) times: Vec<(&'static str, Duration)>,
}

/// How long the list waits for the sagas the loads started to end before it is timed.
const QUIET_WITHIN: Duration = Duration::from_secs(180);

/// Times each of the console's saga-list requests `probes` times (the median), as an admin.
pub(super) async fn saga_list(
    client: &ApiClient,
    admin: &str,
    probes: usize,
) -> anyhow::Result<Listing> {
    let get = |path: String| async move {
        let started = Instant::now();
        let (status, body) = client
            .send(reqwest::Method::GET, &path, admin, None)
            .await?;
        anyhow::ensure!(status.is_success(), "GET {path}: {status} {body}");
        Ok::<_, anyhow::Error>((started.elapsed(), body))
    };
    // Timed once the sagas the loads started have ended: while they run, the list's answer times
    // say how busy the platform is, not how fast the list is.
    let deadline = Instant::now() + QUIET_WITHIN;
    let first = loop {
        let (_, first) = get("/v1/sagas?limit=50".into()).await?;
        let busy = ["running", "compensating"]
            .iter()
            .filter_map(|status| first["counts"][status].as_u64())
            .sum::<u64>();
        if busy == 0 || Instant::now() > deadline {
            break first;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let sagas = first["counts"].as_object().map_or(0, |counts| {
        counts.values().filter_map(serde_json::Value::as_u64).sum()
    });
    let next = first["next"].as_str().unwrap_or_default().to_owned();
    let order = first["sagas"][0]["order_id"]
        .as_str()
        .unwrap_or("none")
        .to_owned();
    let requests = [
        (
            "first page of 50 with counts",
            "/v1/sagas?limit=50".to_owned(),
        ),
        (
            "next page of 50",
            format!("/v1/sagas?limit=50&cursor={next}"),
        ),
        (
            "search by order id",
            format!("/v1/sagas?limit=50&key={order}"),
        ),
        (
            "completed sagas",
            "/v1/sagas?limit=50&status=completed".to_owned(),
        ),
        (
            "stalled for more than a minute",
            "/v1/sagas?limit=50&stalled_for=60".to_owned(),
        ),
    ];
    let mut times = Vec::new();
    for (what, path) in requests {
        let mut samples = Vec::with_capacity(probes);
        for _ in 0..probes {
            samples.push(get(path.clone()).await?.0);
        }
        times.push((what, median_of(samples)));
    }
    Ok(Listing { sagas, times })
}
