//! External effects the engine asks for ([`engine::Action::Effect`]), performed here, off the invocation's path.
//! The engine only ever asks for a non-speculative run's effects, and journals the results so a re-run of the
//! same function does not repeat them.
//!
//! One kind today: outbound HTTP ([`engine::Call::Http`]), `{"method", "url", "headers", "body"}`, answered with
//! `{"status", "headers", "body"}`. Requests time out after [`HTTP_TIMEOUT`]; response bodies are read up to the
//! payload limit.

use std::time::Duration;

use serde_json::{Map, Value, json};

/// Longest an outbound HTTP request may take, connection included.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

const METHODS: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

/// A checked outbound HTTP request.
struct HttpRequest {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Option<String>,
}

/// Checks an HTTP effect's request; the error names what is wrong.
fn parse(request: &Value) -> Result<HttpRequest, String> {
    let method = request["method"].as_str().unwrap_or("GET").to_ascii_uppercase();
    if !METHODS.contains(&method.as_str()) {
        return Err(format!("http: method \"{method}\" is not one of {}", METHODS.join(", ")));
    }
    let url = request["url"].as_str().ok_or("http: the request needs a \"url\" string")?.to_string();
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(format!("http: url \"{url}\" must start with http:// or https://"));
    }
    let mut headers = Vec::new();
    match &request["headers"] {
        Value::Null => {}
        Value::Object(map) => {
            for (k, v) in map {
                let v = v.as_str().ok_or_else(|| format!("http: header \"{k}\" must be a string"))?;
                headers.push((k.clone(), v.to_string()));
            }
        }
        _ => return Err("http: \"headers\" must be an object of strings".into()),
    }
    let body = match &request["body"] {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    };
    Ok(HttpRequest { method, url, headers, body })
}

/// Refuses a URL whose host resolves to an address the sandbox's network rules deny functions (the store, Redis,
/// the platform's own services): the platform performs the request, but for a function.
fn check_reachable(url: &str, policy: &runtime::sandbox::Policy) -> Result<(), String> {
    use std::net::ToSocketAddrs;
    let uri: ureq::http::Uri = url.parse().map_err(|e| format!("http: url \"{url}\": {e}"))?;
    let host = uri.host().ok_or_else(|| format!("http: url \"{url}\" has no host"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(if uri.scheme_str() == Some("https") { 443 } else { 80 });
    let addrs = (host, port).to_socket_addrs().map_err(|e| format!("http: cannot resolve \"{host}\": {e}"))?;
    for addr in addrs {
        if let runtime::sandbox::net::Verdict::Denied(why) = policy.judge(addr) {
            return Err(format!("http: {url} is not reachable from functions ({addr}: {why})"));
        }
    }
    Ok(())
}

/// Performs an HTTP effect (blocking: call it from `spawn_blocking`), if the sandbox's network rules allow it.
pub(crate) fn http(
    request: &Value,
    body_bytes_max: u64,
    policy: Option<&runtime::sandbox::Policy>,
) -> Result<Value, String> {
    let HttpRequest { method, url, headers, body } = parse(request)?;
    if let Some(policy) = policy {
        check_reachable(&url, policy)?;
    }
    let agent: ureq::Agent =
        ureq::Agent::config_builder().timeout_global(Some(HTTP_TIMEOUT)).http_status_as_error(false).build().into();
    let mut builder = ureq::http::Request::builder().method(method.as_str()).uri(&url);
    for (k, v) in &headers {
        builder = builder.header(k, v);
    }
    let request = builder.body(body.unwrap_or_default().into_bytes()).map_err(|e| format!("http: {e}"))?;
    let mut response = agent.run(request).map_err(|e| format!("http: {method} {url} failed: {e}"))?;
    let status = response.status().as_u16();
    let mut out_headers = Map::new();
    for (k, v) in response.headers() {
        out_headers.insert(k.to_string(), json!(v.to_str().unwrap_or_default()));
    }
    let text = response
        .body_mut()
        .with_config()
        .limit(body_bytes_max)
        .read_to_string()
        .map_err(|e| format!("http: reading the response of {method} {url} failed: {e}"))?;
    Ok(json!({"status": status, "headers": out_headers, "body": text}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_requests_say_what_is_wrong() {
        for (request, needle) in [
            (json!({"method": "BREW", "url": "http://x"}), "method \"BREW\""),
            (json!({"method": "GET"}), "needs a \"url\""),
            (json!({"url": "ftp://x"}), "must start with http://"),
            (json!({"url": "http://x", "headers": {"a": 1}}), "header \"a\" must be a string"),
        ] {
            let err = http(&request, 1024, None).unwrap_err();
            assert!(err.contains(needle), "{request}: {err}");
        }
    }
}
