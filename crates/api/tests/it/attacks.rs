//! Two tenants on one server, and an attacker's actions in one of them (`guest`) against the other (`other`), the
//! server, and the machine: each test judges the effect, not the error message. Was a secret obtained? Did the
//! victim's result or storage change? Is the server alive? Do children outlive their activation? How many bytes
//! were written, how much memory was reached? (The sandbox is on: its default, enforce.)

use std::time::Duration;

use serde_json::{Value, json};

use crate::{Server, start_on};

/// What the victim holds: a secret in its code, one in its storage.
const CODE_SECRET: &str = "code-secret-5d1e0c7a";
const KV_SECRET: &str = "kv-secret-93b2f4e1";

/// A server with two tenants: `guest` (the attacker, `s.auth`) and `other` (the victim), whose `keeper` action
/// has stored its secret.
async fn two_tenants() -> (Server, String) {
    let data = tempfile::tempdir().unwrap();
    {
        let store = storage::RedbStore::open(data.path().join("store.redb")).unwrap();
        let other = api::keys::create(&store, "other").await.unwrap();
        std::fs::write(data.path().join("other.auth"), other.auth()).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let s = start_on(data, api::BLOCKING_WAIT).await;
    let other = std::fs::read_to_string(s.data.path().join("other.auth")).unwrap();
    let keeper = format!(
        "import specfaas, time
SECRET = '{CODE_SECRET}'
def main(a):
    if a.get('store'):
        specfaas.kv.put('vault', {{'secret': '{KV_SECRET}'}})
    held = SECRET + '/' + str(specfaas.kv.get('vault'))
    time.sleep(a.get('hold', 0))
    return {{'vault': specfaas.kv.get('vault'), 'code': len(held)}}
"
    );
    put(&s, &other, "keeper", "python:3", &keeper, json!({})).await;
    let first = invoke(&s, &other, "keeper", json!({"store": true})).await;
    assert_eq!(first.0, 200, "{}", first.1);
    (s, other)
}

async fn put(s: &Server, auth: &str, name: &str, kind: &str, code: &str, limits: Value) {
    let body = json!({"exec": {"kind": kind, "code": code}, "limits": limits});
    let path = format!("/api/v1/namespaces/_/actions/{name}?overwrite=true");
    let (status, body) = s.call("PUT", &path, Some(auth), Some(body)).await;
    assert_eq!(status, 200, "{name}: {body}");
}

async fn invoke(s: &Server, auth: &str, name: &str, args: Value) -> (u16, Value) {
    let path = format!("/api/v1/namespaces/_/actions/{name}?blocking=true&result=true");
    s.call("POST", &path, Some(auth), Some(args)).await
}

/// The victim still answers as before, and its storage holds its own value.
async fn victim_unharmed(s: &Server, other: &str) {
    let (status, result) = invoke(s, other, "keeper", json!({})).await;
    assert_eq!(status, 200, "{result}");
    let held = format!("{CODE_SECRET}/{{'secret': '{KV_SECRET}'}}");
    assert_eq!(result, json!({"vault": {"secret": KV_SECRET}, "code": held.len()}));
    let (status, _) = s.call("GET", "/health", None, None).await;
    assert_eq!(status, 200, "the server is alive");
}

const SNOOP: &str = r#"import os
def main(a):
    found, tried = [], {}
    def grab(path, limit=1 << 20):
        try:
            with open(path, 'rb') as f:
                found.append(f.read(limit).decode('latin-1'))
            tried[path] = 'read'
        except OSError as e:
            tried[path] = type(e).__name__
    for name in ['auth', 'other.auth', 'store.redb']:
        grab(os.path.join(a['data_dir'], name), 16 << 20)
    for root, dirs, files in os.walk(a['data_dir']):
        for f in files:
            grab(os.path.join(root, f))
    tried['walked'] = os.path.isdir(a['data_dir'])
    pids = [p for p in os.listdir('/proc') if p.isdigit()]
    for pid in pids:
        for what in ['cmdline', 'environ']:
            grab('/proc/%s/%s' % (pid, what))
        if int(pid) == os.getpid():
            continue  # its own memory holds the needles it was given
        try:
            maps = open('/proc/%s/maps' % pid).read().splitlines()
            with open('/proc/%s/mem' % pid, 'rb') as mem:
                for line in maps:
                    lo, hi = [int(x, 16) for x in line.split()[0].split('-')]
                    if 'r' in line.split()[1] and hi - lo < (8 << 20):
                        try:
                            mem.seek(lo)
                            found.append(mem.read(hi - lo).decode('latin-1'))
                        except (OSError, ValueError, OverflowError):
                            pass
        except OSError:
            pass
    # The test gives the strings to look for (the secrets), so the answer stays small; reading is the attack.
    text = '\n'.join(found)
    hits = [n for n in a['needles'] if n in text]
    return {'hits': hits, 'bytes': len(text), 'tried': tried, 'env': dict(os.environ), 'pids': pids}
"#;

/// Reading secrets: the attacker knows where the data directory is and reads it, every process it can see
/// (command lines, environments, memory) and its own environment, while the victim runs with its secrets loaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_cannot_read_another_tenants_secrets_or_the_servers() {
    let (s, other) = two_tenants().await;
    put(&s, &s.auth, "snoop", "python:3", SNOOP, json!({"timeout": 60_000, "memory": 1024})).await;
    // The victim runs, with its secrets in memory, while the attacker looks.
    let data_dir = s.data.path().display().to_string();
    let test_binary = std::env::current_exe().unwrap().display().to_string();
    let needles = [CODE_SECRET, KV_SECRET, other.as_str(), s.auth.as_str(), test_binary.as_str(), "CARGO_MANIFEST_DIR"];
    let victim = invoke(&s, &other, "keeper", json!({"hold": 3}));
    let attack = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        invoke(&s, &s.auth, "snoop", json!({"data_dir": data_dir, "needles": needles})).await
    };
    let (victim, (status, result)) = tokio::join!(victim, attack);
    assert_eq!(status, 200, "{result}");
    assert_eq!(victim.0, 200, "{}", victim.1);
    // Secrets, the server's command line or environment: none of it was in anything the attacker could read.
    assert_eq!(result["hits"], json!([]), "the attacker obtained these; it tried {}", result["tried"]);
    assert!(result["bytes"].as_u64().unwrap() > 0, "it did read its own processes: {result}");
    assert_eq!(result["tried"]["walked"], json!(false), "the data directory is not in the function's view");
    // Its own environment: the __OW_* variables and the runtime's own, nothing of the server's.
    let env = result["env"].as_object().unwrap();
    let allowed = ["PATH", "HOME", "TMPDIR", "LANG", "PYTHONPATH", "PYTHONDONTWRITEBYTECODE", "PWD", "LC_CTYPE"];
    for key in env.keys() {
        assert!(key.starts_with("__OW_") || allowed.contains(&key.as_str()), "the server's {key} leaked: {env:?}");
    }
    // It sees only its own processes: the sandbox's shell and the runner.
    assert!(result["pids"].as_array().unwrap().len() <= 3, "{}", result["pids"]);
    victim_unharmed(&s, &other).await;
    s.stop().await;
}

const TAKEOVER: &str = r#"import ctypes, os, signal, socket
def main(a):
    wrote, killed, errors = [], 0, set()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.ptrace(16, 1, 0, 0) != 0:  # PTRACE_ATTACH to the sandbox's first process
        errors.add('ptrace: errno %d' % ctypes.get_errno())
    try:
        open('/etc/shadow').read()
        errors.add('shadow read')
    except OSError as e:
        errors.add('shadow: ' + type(e).__name__)
    targets = ['/opt/specfaas/py/specfaas/__init__.py', '/opt/specfaas/py/runner.py', '/action/action.py']
    for root, dirs, files in os.walk(a['work_dir']):
        targets += [os.path.join(root, f) for f in files]
    for t in targets:
        try:
            with open(t, 'w') as f:
                f.write("def main(a):\n    return {'pwned': True}\n")
            wrote.append(t)
        except OSError as e:
            errors.add(type(e).__name__)
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        errors.add('unix socket made')
    except OSError as e:
        errors.add('unix: ' + type(e).__name__)
    own = {int(t) for t in os.listdir('/proc/self/task')}  # its own threads: a kill of one is suicide
    for sig_target in [-1] + list(range(1, 4096)):
        if sig_target in own:
            continue
        try:
            os.kill(sig_target, signal.SIGKILL)
            killed += 1
        except OSError:
            pass
    return {'wrote': wrote, 'killed': killed, 'errors': sorted(errors), 'walked': os.path.isdir(a['work_dir'])}
"#;

/// Taking over another tenant: the attacker writes over every file of the work directory it can find (other
/// functions' code, the SDK), makes a Unix socket to pose as a handler, and signals every process it can. The
/// victim's next result and storage are its own, and the server and its warm pool carry on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_cannot_take_over_another_tenant_or_the_server() {
    let (s, other) = two_tenants().await;
    put(&s, &s.auth, "takeover", "python:3", TAKEOVER, json!({})).await;
    let work_dir = api::work_dir(s.data.path()).unwrap().display().to_string();
    let (status, result) = invoke(&s, &s.auth, "takeover", json!({"work_dir": work_dir})).await;
    // It can signal only its own processes, and its namespace's first one ignores it: it lives to report.
    assert_eq!(status, 200, "{result}");
    {
        assert_eq!(result["wrote"], json!([]), "{result}");
        assert_eq!(result["walked"], json!(false), "{result}");
        let errors = result["errors"].as_array().unwrap();
        for expected in ["unix: PermissionError", "ptrace: errno 1", "shadow: FileNotFoundError"] {
            assert!(errors.contains(&json!(expected)), "{expected}: {result}");
        }
    }
    victim_unharmed(&s, &other).await;
    // Its own warm function carries on too.
    put(&s, &s.auth, "echo", "python:3", "def main(a):\n    return a\n", json!({})).await;
    assert_eq!(invoke(&s, &s.auth, "echo", json!({"x": 1})).await, (200, json!({"x": 1})));
    s.stop().await;
}

const SPAWNER: &str = r#"import subprocess, sys, time
def main(a):
    started, refused = 0, None
    for i in range(a['n']):
        try:
            # A detached child that keeps the marker in its command line, or one process per child (exec).
            command = ['/bin/sleep', a['exec']] if 'exec' in a else ['/bin/sh', '-c', 'sleep 120; :', a['marker']]
            subprocess.Popen(command,
                             start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            started += 1
        except OSError as e:
            refused = str(e)
            break
    time.sleep(a.get('then_sleep', 0))
    return {'started': started, 'refused': refused}
"#;

/// Resources: 64 detached children outlive neither a finished activation nor a timed-out one, and a fork bomb
/// stops at the processes limit with a message naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_child_outlives_its_activation_and_forks_stop_at_the_limit() {
    let (s, other) = two_tenants().await;
    put(&s, &s.auth, "spawner", "python:3", SPAWNER, json!({"timeout": 5000, "processes": 256})).await;
    let (status, result) = invoke(&s, &s.auth, "spawner", json!({"n": 64, "marker": "detached-7f3a"})).await;
    assert_eq!((status, &result["started"]), (200, &json!(64)), "{result}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(runtime::conformance::processes_with("detached-7f3a"), 0, "children of a finished activation are gone");
    let (status, result) =
        invoke(&s, &s.auth, "spawner", json!({"n": 8, "marker": "timedout-7f3a", "then_sleep": 30})).await;
    assert_eq!(status, 502, "a timeout: {result}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(runtime::conformance::processes_with("timedout-7f3a"), 0, "children of a timed-out activation are gone");
    // A fork bomb stops at the limit.
    put(&s, &s.auth, "bomb", "python:3", SPAWNER, json!({"processes": 32})).await;
    let (status, result) = invoke(&s, &s.auth, "bomb", json!({"n": 500, "exec": "4711"})).await;
    assert_eq!(status, 200, "{result}");
    let started = result["started"].as_u64().unwrap();
    assert!(started < 32, "the limit of 32 held: {result}");
    assert!(result["refused"].is_string(), "{result}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(runtime::conformance::processes_with("sleep\u{0}4711"), 0);
    let crash = "import os\ndef main(a):\n    while True:\n        os.fork()\n";
    put(&s, &s.auth, "crash", "python:3", crash, json!({"processes": 32})).await;
    let (status, result) = invoke(&s, &s.auth, "crash", json!({})).await;
    assert_eq!(status, 502, "{result}");
    assert!(result["error"].as_str().unwrap().contains("limit of 32 processes"), "{result}");
    victim_unharmed(&s, &other).await;
    s.stop().await;
}

const DISK: &str = r#"import errno
def main(a):
    written, failure = 0, None
    chunk = b'x' * (1 << 20)
    try:
        with open('/tmp/big', 'wb') as f:
            for _ in range(300):
                f.write(chunk)
                f.flush()
                written += len(chunk)
    except OSError as e:
        failure = errno.errorcode[e.errno]
    outside = {}
    for path in ['/big', '/action/big', '/var/tmp/big', '/usr/big']:
        try:
            open(path, 'wb').write(b'x')
            outside[path] = 'written'
        except OSError as e:
            outside[path] = errno.errorcode.get(e.errno, str(e.errno))
    if a.get('raise') and failure:
        raise OSError(28, 'No space left on device')
    return {'written': written, 'failure': failure, 'outside': outside}
"#;

const HOG: &str = "function main(a) {
  const kept = [];
  for (let mb = 32; mb <= 1024; mb += 32) {
    kept.push(Buffer.alloc(32 * 1024 * 1024, 1));
    console.log(`allocated ${mb} MB`);
  }
  return { allocated: kept.length * 32 };
}";

/// Resources: scratch space stops at `tmp_mb` and nothing outside it is writable; a Node.js function's buffers
/// stop at its memory limit. Each failure names the limit, and the server carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_and_memory_stop_at_their_limits() {
    let (s, other) = two_tenants().await;
    put(&s, &s.auth, "disk", "python:3", DISK, json!({"tmp": 64, "memory": 512})).await;
    let (status, result) = invoke(&s, &s.auth, "disk", json!({})).await;
    assert_eq!(status, 200, "{result}");
    let written = result["written"].as_u64().unwrap();
    assert!(written <= 64 << 20, "wrote {written} bytes into a 64 MB scratch space");
    assert_eq!(result["failure"], json!("ENOSPC"), "{result}");
    for (path, outcome) in result["outside"].as_object().unwrap() {
        assert!(outcome == "EROFS" || outcome == "ENOENT", "{path}: {result}");
    }
    let (status, result) = invoke(&s, &s.auth, "disk", json!({"raise": true})).await;
    assert_eq!(status, 502, "{result}");
    assert!(result["error"].as_str().unwrap().contains("scratch space of 64 MB (tmp_mb)"), "{result}");
    put(&s, &s.auth, "hog", "nodejs:20", HOG, json!({"memory": 256})).await;
    let (status, result) = invoke(&s, &s.auth, "hog", json!({})).await;
    assert_eq!(status, 502, "{result}");
    assert!(result["error"].as_str().unwrap().contains("memory limit of 256 MB"), "{result}");
    // How much it reached: its logs say, up to where it was stopped.
    let path = "/api/v1/namespaces/_/activations?name=hog&docs=true&limit=1";
    let (_, list) = s.call("GET", path, Some(&s.auth), None).await;
    let logs = list[0]["logs"].as_array().cloned().unwrap_or_default();
    let reached = logs
        .iter()
        .filter_map(|l| l.as_str()?.split("allocated ").nth(1)?.split(' ').next()?.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    assert!((32..=256).contains(&reached), "a 256 MB function allocated {reached} MB of buffers: {logs:?}");
    victim_unharmed(&s, &other).await;
    s.stop().await;
}
