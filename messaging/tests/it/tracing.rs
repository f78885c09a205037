//! W3C trace context: a consumer handles a message in a span that continues the trace the message
//! carries, so what the handler causes stays in the same trace.

use super::{Fixture, Recorder, message, settings};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use sqlx::PgPool;
use std::time::Duration;
use tracing_subscriber::layer::SubscriberExt;

/// (trace id, parent span id) of a `traceparent`.
fn parts(traceparent: &str) -> (&str, &str) {
    let fields: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(fields.len(), 4, "{traceparent}");
    (fields[1], fields[2])
}

#[sqlx::test(migrations = false)]
async fn the_handler_runs_in_the_trace_the_message_carries(db: PgPool) {
    let provider = SdkTracerProvider::builder().build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    // Process-wide, not `set_default`: tracing-core caches each callsite's interest for the whole
    // process, and with a single thread-local subscriber it asks only the subscriber of the thread
    // that reaches a callsite first, which may be another test's.
    tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber");

    let fixture = Fixture::start(db).await;
    let recorder = Recorder::named("r");
    let consumer = fixture.consumer(settings("effects"), recorder.clone());

    let remote = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut traced = message("k", "traced");
    traced
        .properties
        .insert("traceparent".into(), remote.into());
    fixture.client.publish(&traced).await.expect("publish");
    fixture
        .client
        .publish(&message("k", "untraced"))
        .await
        .expect("publish");
    fixture.wait_for_effects(2, Duration::from_secs(30)).await;

    let seen = recorder.traceparents.lock().expect("lock").clone();
    let inside = seen["traced"]
        .clone()
        .expect("the handler ran inside a trace");
    let (trace, parent) = parts(&inside);
    assert_eq!(
        trace, "4bf92f3577b34da6a3ce929d0e0e4736",
        "the trace continues"
    );
    assert_ne!(
        parent, "00f067aa0ba902b7",
        "in a span of its own, a child of the producer's"
    );

    // Without a traceparent the handler starts a trace of its own: the check above can fail.
    let fresh = seen["untraced"].clone().expect("a new trace");
    assert_ne!(parts(&fresh).0, trace);

    fixture.shutdown.cancel();
    consumer.await.expect("consumer");
}
