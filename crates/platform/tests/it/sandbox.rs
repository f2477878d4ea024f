//! The sandbox under speculation, on the real platform: unmodified Python and Node.js code that opens sockets and
//! writes files. A speculative run's connection waits until the run is non-speculative; a squashed run's never
//! happens; no run writes outside its scratch space. Safe HTTP requests made through the SDK run speculatively and
//! are not repeated when the run is redone; unsafe ones wait.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use engine::oracle::Memo;
use model::{Application, Kind, Limits};
use serde_json::{Value, json};
use storage::MemoryStore;

use crate::{NS, fate, fixture_allowing, native, source};

/// A loopback listener that counts the connections it accepts, and records the method of each HTTP request.
struct Listener {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    methods: Arc<Mutex<Vec<String>>>,
}

fn listener() -> Listener {
    let socket = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let methods = Arc::new(Mutex::new(Vec::new()));
    let (count, seen) = (accepted.clone(), methods.clone());
    std::thread::spawn(move || {
        for conn in socket.incoming() {
            let Ok(mut conn) = conn else { continue };
            count.fetch_add(1, Ordering::SeqCst);
            let seen = seen.clone();
            std::thread::spawn(move || {
                conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let mut buf = [0u8; 4096];
                let n = conn.read(&mut buf).unwrap_or(0);
                let text = String::from_utf8_lossy(&buf[..n]).to_string();
                if let Some(method) = text.split(' ').next().filter(|m| text.contains("HTTP/1.1") && !m.is_empty()) {
                    seen.lock().unwrap().push(method.to_string());
                    let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
                }
            });
        }
    });
    Listener { addr, accepted, methods }
}

/// No memoized outputs: the `Choice` after `gate` goes to the branch predictor.
struct NoMemo;

impl Memo for NoMemo {
    fn lookup(&self, _: &str, _: &str, _: &Value) -> Option<Value> {
        None
    }
    fn train(&self, _: &str, _: &str, _: &Value, _: &Value) {}
}

/// The learning predictor, or the liar's branch predictor ([`crate::wasm::Liar`]: always the target other than the
/// learned one), both without memoized outputs.
fn oracle(lying: bool) -> engine::Oracle {
    let mut oracle =
        if lying { crate::wasm::Liar::oracle() } else { engine::tables::learning(engine::tables::Sizes::default()) };
    oracle.memo = Arc::new(NoMemo);
    oracle
}

const DIAL_PY: &str = "import errno, socket
def main(args):
    s = socket.create_connection(('127.0.0.1', args['port']), timeout=5)
    s.sendall(b'hello')
    s.close()
    try:
        with open('/action/leak-py', 'w') as f:
            f.write('escaped')
        outside = 'written'
    except OSError as e:
        outside = errno.errorcode[e.errno]
    with open('/tmp/scratch', 'w') as f:
        f.write('fine')
    return {'dialed': True, 'outside': outside}
";

/// The same with a blocking socket (no timeout): its held connect is performed on the supervisor's thread, where
/// waiting for the handshake blocks no one else.
const DIAL_PY_BLOCKING: &str = "import errno, socket
def main(args):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.connect(('127.0.0.1', args['port']))
    s.sendall(b'hello')
    s.close()
    try:
        with open('/action/leak-pyb', 'w') as f:
            f.write('escaped')
        outside = 'written'
    except OSError as e:
        outside = errno.errorcode[e.errno]
    return {'dialed': True, 'outside': outside}
";

const DIAL_JS: &str = "const net = require('net');
const fs = require('fs');
function main(args) {
  return new Promise((resolve, reject) => {
    const s = net.connect(args.port, '127.0.0.1', () => {
      s.end('hello');
      let outside;
      try { fs.writeFileSync('/action/leak-js', 'escaped'); outside = 'written'; } catch (e) { outside = e.code; }
      fs.writeFileSync('/tmp/scratch', 'fine');
      resolve({ dialed: true, outside });
    });
    s.on('error', reject);
  });
}";

/// Files named `leak-*` anywhere under `dir`.
fn leaks(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return found };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_symlink() {
            continue;
        }
        if path.is_dir() {
            found.extend(leaks(&path));
        } else if e.file_name().to_string_lossy().starts_with("leak-") {
            found.push(path);
        }
    }
    found
}

/// Forced mispredictions with a lying branch predictor, and right ones with the learning predictor: Python (with a
/// non-blocking and a blocking socket) and Node.js functions connect straight to a loopback listener that the sandbox allows, on one branch of a `Choice`
/// whose input is still being computed. The listener gets exactly as many connections as those functions have
/// committed runs; a squashed run's connection is dropped while held, a correctly predicted one is released when
/// the run becomes non-speculative; and no run's write outside its scratch space lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_speculative_runs_connections_wait_and_a_squashed_runs_never_happen() {
    for (kind, code) in [(Kind::Python, DIAL_PY), (Kind::Node, DIAL_JS), (Kind::Python, DIAL_PY_BLOCKING)] {
        let target = listener();
        let f = fixture_allowing(Arc::new(MemoryStore::new()), &[target.addr]);
        let p = &f.platform;
        p.native().register("gate", |_, input| async move {
            // Long enough for the predicted branch to reach its connect while this still runs.
            tokio::time::sleep(Duration::from_millis(400)).await;
            Ok(json!({"dial": input["dial"]}))
        });
        p.deploy_function(NS, native("gate")).await.unwrap();
        p.native().register("quiet", |_, input| async move { Ok(input) });
        p.deploy_function(NS, native("quiet")).await.unwrap();
        let mut dialer = source("dialer", kind, code, Limits::default());
        dialer.parameters.insert("port".into(), json!(target.addr.port()));
        p.deploy_function(NS, dialer).await.unwrap();
        let asl = json!({"StartAt": "G", "States": {
            "G": {"Type": "Task", "Resource": "gate", "ResultPath": "$.r", "Next": "C"},
            "C": {"Type": "Choice", "Choices": [{"Variable": "$.r.dial", "BooleanEquals": true, "Next": "D"}],
                  "Default": "Q"},
            "D": {"Type": "Task", "Resource": "dialer", "Parameters": {"k.$": "$.k"}, "End": true},
            "Q": {"Type": "Task", "Resource": "quiet", "Parameters": {"k.$": "$.k"}, "End": true}}});
        let graph = model::asl::parse("dial.asl.json", &asl.to_string(), &|f| p.has_function(NS, f)).unwrap();
        p.deploy_app(NS, Application::workflow("dial", graph).unwrap());
        let (mut committed, mut dropped, mut released) = (0, 0, 0);
        for lying in [true, false] {
            p.set_oracle(NS, oracle(lying));
            // Runs of one branch, then the other, so both predictors meet both.
            for i in 0..8 {
                let dial = (i / 2) % 2 == 0;
                let inv = p.invoke(NS, "dial", json!({"k": i, "dial": dial})).await.unwrap();
                assert_eq!(inv.status, platform::Status::Success, "{kind:?} {}", inv.result);
                if dial {
                    assert_eq!(inv.result["outside"], json!("EROFS"), "{kind:?}: a write outside /tmp");
                }
                for run in inv.runs.iter().filter(|r| r.name == "dialer") {
                    let held = run.annotations.iter().find(|a| a.key == "held").map(|a| a.value.clone());
                    let fates: Vec<Value> =
                        held.iter().flat_map(|h| h.as_array().cloned().unwrap_or_default()).collect();
                    match fate(run).as_str() {
                        "committed" => committed += 1,
                        "squashed" => {}
                        other => panic!("{kind:?}: a dialer run ended {other}"),
                    }
                    dropped += fates.iter().filter(|h| h["fate"] == "dropped").count();
                    released += fates.iter().filter(|h| h["fate"] == "released").count();
                    for h in &fates {
                        assert!(h["call"].as_str().unwrap().starts_with("connect tcp 127.0.0.1:"), "{h}");
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await; // the listener counts what it accepted
        assert_eq!(target.accepted.load(Ordering::SeqCst), committed, "{kind:?}: one connection per committed run");
        assert!(committed >= 8, "{kind:?}: the dialing branch ran {committed} times");
        assert!(dropped > 0, "{kind:?}: the liar made a dialer run on a wrong branch, whose connect was dropped");
        assert!(released > 0, "{kind:?}: a correctly predicted dialer's connect waited and was released");
        let work = f._work.path();
        assert_eq!(leaks(work), Vec::<std::path::PathBuf>::new(), "{kind:?}: writes outside scratch");
    }
}

/// `specfaas.http`: a GET runs while its run is speculative, and a redone run replays its response instead of
/// asking again; a POST waits until the run is non-speculative, and is sent once. A lying memo gives `fetch` a
/// wrong input every time, so every speculative run of it is squashed and redone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn safe_http_runs_speculatively_once_and_unsafe_http_waits() {
    let target = listener();
    let f = fixture_allowing(Arc::new(MemoryStore::new()), &[target.addr]);
    let p = &f.platform;
    p.native().register("prep", |_, input| async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        Ok(json!({"n": input["n"]}))
    });
    p.deploy_function(NS, native("prep")).await.unwrap();
    let fetch = "import specfaas
def main(args):
    got = specfaas.http(args['url'], method='GET')
    sent = specfaas.http(args['url'], method='POST', body='{}')
    return {'got': got['status'], 'sent': sent['status'], 'n': args.get('n')}
";
    let mut spec = source("fetch", Kind::Python, fetch, Limits::default());
    spec.parameters.insert("url".into(), json!(format!("http://{}/x", target.addr)));
    p.deploy_function(NS, spec).await.unwrap();
    crate::sequence(p, "pipe", &["prep", "fetch"]).await;
    p.set_oracle(NS, crate::wasm::Liar::oracle());
    let rounds = 4;
    for n in 0..rounds {
        let inv = p.invoke(NS, "pipe", json!({"n": n})).await.unwrap();
        assert_eq!(inv.result, json!({"got": 200, "sent": 200, "n": n}), "{}", inv.result);
        let squashed = inv.runs.iter().filter(|r| r.name == "fetch" && fate(r) == "squashed").count();
        assert!(squashed > 0 || n == 0, "round {n}: fetch ran on a lie and was redone: {:?}", inv.runs);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let methods = target.methods.lock().unwrap().clone();
    let count = |m: &str| methods.iter().filter(|x| *x == m).count();
    assert_eq!(count("POST"), rounds, "one POST per invocation, never a speculative one: {methods:?}");
    assert_eq!(count("GET"), rounds, "one GET per invocation: a redone run replays it: {methods:?}");
    let m = p.metrics();
    assert!(m.effects_replayed > 0, "redone runs replayed their GET: {m:?}");
}
