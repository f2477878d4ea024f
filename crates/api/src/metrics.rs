//! `GET /metrics`: Prometheus text format. Request counts and latency sums by route and status (recorded by a
//! middleware, with the matched route pattern so paths with ids do not explode the label space), invocations by
//! status, and the platform's speculation counters.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// (method, route, status): what a request counter is labelled with.
type Labels = (String, String, u16);

/// Labels → (count, total seconds).
#[derive(Default)]
pub(crate) struct Requests(Mutex<BTreeMap<Labels, (u64, f64)>>);

pub(crate) async fn record(State(app): State<crate::App>, request: Request, next: Next) -> Response {
    let method = request.method().to_string();
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched".to_string(), |p| p.as_str().to_string());
    let started = Instant::now();
    let response = next.run(request).await;
    let seconds = started.elapsed().as_secs_f64();
    let mut all = app.requests.0.lock().unwrap_or_else(|e| e.into_inner());
    let entry = all.entry((method, route, response.status().as_u16())).or_default();
    entry.0 += 1;
    entry.1 += seconds;
    response
}

fn escape(label: &str) -> String {
    label.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

pub(crate) async fn render(State(app): State<crate::App>) -> impl IntoResponse {
    let mut out = String::new();
    out.push_str(
        "# HELP specfaas_http_requests_total HTTP requests served.\n# TYPE specfaas_http_requests_total counter\n",
    );
    let requests = app.requests.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for ((method, route, status), (count, _)) in &requests {
        let _ = writeln!(
            out,
            "specfaas_http_requests_total{{method=\"{method}\",route=\"{}\",status=\"{status}\"}} {count}",
            escape(route)
        );
    }
    out.push_str("# HELP specfaas_http_request_seconds_sum Time spent serving HTTP requests.\n# TYPE specfaas_http_request_seconds_sum counter\n");
    for ((method, route, status), (_, seconds)) in &requests {
        let _ = writeln!(
            out,
            "specfaas_http_request_seconds_sum{{method=\"{method}\",route=\"{}\",status=\"{status}\"}} {seconds}",
            escape(route)
        );
    }
    let m = app.platform.metrics();
    out.push_str(
        "# HELP specfaas_invocations_total Invocations by final status.\n# TYPE specfaas_invocations_total counter\n",
    );
    for (status, n) in &m.invocations {
        let _ = writeln!(out, "specfaas_invocations_total{{status=\"{}\"}} {n}", escape(status));
    }
    out.push_str("# HELP specfaas_squashes_total Squashed runs by cause.\n# TYPE specfaas_squashes_total counter\n");
    for (cause, n) in &m.squashes {
        let cause = serde_json::to_value(cause).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        let _ = writeln!(out, "specfaas_squashes_total{{cause=\"{cause}\"}} {n}");
    }
    for (name, help, value) in [
        ("speculative_launches_total", "Functions launched speculatively.", m.speculative_launches),
        ("memo_hits_total", "Memo table hits.", m.memo_hits),
        ("memo_misses_total", "Memo table misses.", m.memo_misses),
        ("pure_skipped_total", "Pure functions not run on a memo hit.", m.skipped),
        ("branch_predictions_total", "Branch targets followed on a prediction.", m.branch_predictions),
        ("branch_hits_total", "Branch predictions the real data confirmed.", m.branch_hits),
        ("callees_predicted_total", "Callees launched early on a prediction.", m.callees_predicted),
        ("callees_used_total", "Predicted callees a real call used.", m.callees_used),
        ("effects_total", "External effects performed.", m.effects),
        ("squashed_wall_microseconds_total", "Wall-clock time squashed runs had run.", m.squashed_us),
        ("squashed_cpu_microseconds_total", "CPU time squashed runs used (where measured).", m.squashed_cpu_us),
    ] {
        let _ = writeln!(out, "# HELP specfaas_{name} {help}\n# TYPE specfaas_{name} counter\nspecfaas_{name} {value}");
    }
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}
