//! `GET /metrics`: Prometheus text format (0.0.4), encoded by `prometheus-client`.
//!
//! - HTTP requests by method, route and status: a counter and a latency histogram, recorded by a middleware with
//!   the matched route pattern, so paths with ids do not explode the label space.
//! - The platform's counters, read from [`platform::metrics::Snapshot`] at each scrape by a collector: invocations
//!   by status, squashes by cause, and every counter of [`platform::metrics::Snapshot::COUNTERS`], so a counter
//!   declared there is exported with no change here.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// What an HTTP request is counted by.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

/// Latency buckets: 1 ms to about 16 s, by factors of 4.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 4.0, 8))
}

/// The registry `/metrics` encodes, and the request metrics the middleware updates.
pub(crate) struct Exporter {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    seconds: Family<RequestLabels, Histogram, fn() -> Histogram>,
}

impl Exporter {
    pub(crate) fn new(platform: platform::Platform) -> Exporter {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let seconds = Family::<RequestLabels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        registry.register("specfaas_http_requests", "HTTP requests served.", requests.clone());
        registry.register("specfaas_http_request_seconds", "Time spent serving HTTP requests.", seconds.clone());
        registry.register_collector(Box::new(PlatformCounters(platform)));
        Exporter { registry, requests, seconds }
    }

    /// The registry in Prometheus text format.
    pub(crate) fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
            .expect("writing to a String does not fail");
        out
    }
}

/// Reads the platform's counters at each scrape.
struct PlatformCounters(platform::Platform);

impl std::fmt::Debug for PlatformCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PlatformCounters")
    }
}

impl Collector for PlatformCounters {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let m = self.0.metrics();
        let counter = |n: u64| ConstCounter::new(n);
        {
            let help = "Invocations by final status.";
            let mut family = encoder.encode_descriptor("specfaas_invocations", help, None, counter(0).metric_type())?;
            for (status, n) in &m.invocations {
                counter(*n).encode(family.encode_family(&[("status", status.as_str())])?)?;
            }
        }
        {
            let help = "Squashed runs by cause.";
            let mut family = encoder.encode_descriptor("specfaas_squashes", help, None, counter(0).metric_type())?;
            for (cause, n) in &m.squashes {
                let cause = serde_json::to_value(cause).ok().and_then(|v| v.as_str().map(str::to_string));
                counter(*n).encode(family.encode_family(&[("cause", cause.unwrap_or_default())])?)?;
            }
        }
        for (c, n) in m.counters() {
            let name = format!("specfaas_{}", c.name);
            counter(n).encode(encoder.encode_descriptor(&name, c.help, None, counter(n).metric_type())?)?;
        }
        Ok(())
    }
}

pub(crate) async fn record(State(app): State<crate::App>, request: Request, next: Next) -> Response {
    let method = request.method().to_string();
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched".to_string(), |p| p.as_str().to_string());
    let started = Instant::now();
    let response = next.run(request).await;
    let labels = RequestLabels { method, route, status: response.status().as_u16() };
    app.metrics.requests.get_or_create(&labels).inc();
    app.metrics.seconds.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
    response
}

pub(crate) async fn render(State(app): State<crate::App>) -> impl IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], app.metrics.encode())
}
