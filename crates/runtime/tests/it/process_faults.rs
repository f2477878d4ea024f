//! Faults only process functions can show: exits, crashes, memory limits, init errors, log floods.

use std::time::Duration;

use model::{Kind, Limits};
use runtime::conformance::{MockHost, activation, processes_with, run, start};
use runtime::{Outcome, Runtime, Warm};
use serde_json::json;

async fn load(kind: Kind, text: &str, limits: Limits) -> std::sync::Arc<dyn Warm> {
    let spec = crate::source("fault", kind, text, limits);
    crate::process_runtime().load(std::sync::Arc::new(spec)).await.unwrap()
}

async fn load_err(kind: Kind, text: &str) -> String {
    let spec = crate::source("broken", kind, text, Limits::default());
    match crate::process_runtime().load(std::sync::Arc::new(spec)).await {
        Ok(_) => panic!("loading should fail"),
        Err(e) => e.to_string(),
    }
}

fn developer_error(outcome: Outcome) -> String {
    match outcome {
        Outcome::DeveloperError(m) | Outcome::Threw { message: m, .. } => m,
        other => panic!("expected a developer error, got {other:?}"),
    }
}

/// `check(kind, code, input, expected fragment of the developer error)`, then the same warm function must still
/// serve `{"ok": true}` for the input `{}`: a crash never takes the warm process down.
async fn check_crash(kind: Kind, code: &str, limits: Limits, needle: &str) {
    let warm = load(kind, code, limits).await;
    let message = developer_error(run(&*warm, json!({"crash": true})).await.outcome);
    assert!(message.contains(needle), "{kind:?}: {message}");
    assert_eq!(run(&*warm, json!({})).await.outcome, Outcome::Success(json!({"ok": true})), "{kind:?}");
}

const PY_EXIT: &str = "import os\ndef main(a):\n    if a.get('crash'):\n        os._exit(3)\n    return {'ok': True}\n";
const PY_SEGV: &str = "import os, signal\ndef main(a):\n    if a.get('crash'):\n        os.kill(os.getpid(), signal.SIGSEGV)\n    return {'ok': True}\n";
const PY_OOM: &str =
    "def main(a):\n    if a.get('crash'):\n        x = bytearray(1024 * 1024 * 1024)\n    return {'ok': True}\n";
const JS_EXIT: &str = "function main(a) { if (a.crash) process.exit(3); return { ok: true }; }";
const JS_OOM: &str = "function main(a) { if (a.crash) { const k = []; while (true) k.push(new Array(1e6).fill(7)); } return { ok: true }; }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exits_crashes_and_memory_limits_are_developer_errors() {
    check_crash(Kind::Python, PY_EXIT, Limits::default(), "exited with code 3").await;
    check_crash(Kind::Python, PY_SEGV, Limits::default(), "SIGSEGV").await;
    check_crash(Kind::Python, PY_OOM, Limits { memory_mb: 128, ..Limits::default() }, "MemoryError").await;
    check_crash(Kind::Node, JS_EXIT, Limits::default(), "exited with code 3").await;
    check_crash(Kind::Node, JS_OOM, Limits { memory_mb: 128, ..Limits::default() }, "memory limit of 128 MB").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_loops_are_killed_at_once() {
    for (kind, code) in [
        (Kind::Python, "def main(a):\n    while True:\n        pass\n"),
        (Kind::Node, "function main() { while (true) {} }"),
    ] {
        let warm = load(kind, code, Limits::default()).await;
        let running = start(&*warm, activation(json!({})), &MockHost::default());
        tokio::time::sleep(Duration::from_millis(200)).await;
        running.kill();
        let report = tokio::time::timeout(Duration::from_secs(5), running.done).await.expect("kill hung").unwrap();
        assert_eq!(report.outcome, Outcome::Killed, "{kind:?}");
    }
}

/// A kill reports at once and leaves the signal to a background thread: the signal must still come, and end the
/// handler with the children it started (a shell that keeps the marker in its command line).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_handler_and_its_children_are_gone_soon_after_the_report() {
    for (kind, code) in [
        (
            Kind::Python,
            "import subprocess\ndef main(a):\n    subprocess.Popen(['/bin/sh', '-c', 'sleep 120; :', a['marker']])\n    while True:\n        pass\n",
        ),
        (
            Kind::Node,
            "function main(a) { require('child_process').spawn('/bin/sh', ['-c', 'sleep 120; :', a.marker], { detached: true, stdio: 'ignore' }); while (true) {} }",
        ),
    ] {
        let marker = format!("killed-{kind:?}-{}", std::process::id());
        let warm = load(kind, code, Limits::default()).await;
        let mut running = start(&*warm, activation(json!({"marker": marker})), &MockHost::default());
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while processes_with(&marker) == 0 {
            if let Ok(report) = running.done.try_recv() {
                panic!("{kind:?}: the function ended before it was killed: {report:?}");
            }
            assert!(std::time::Instant::now() < deadline, "{kind:?}: the child never started");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        running.kill();
        let report = tokio::time::timeout(Duration::from_secs(5), running.done).await.expect("kill hung").unwrap();
        assert_eq!(report.outcome, Outcome::Killed, "{kind:?}");
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        while processes_with(&marker) > 0 {
            assert!(std::time::Instant::now() < deadline, "{kind:?}: the killed handler's child outlived it by 3 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_that_does_not_load_is_rejected_at_load() {
    assert!(load_err(Kind::Python, "def main(a)\n  return a").await.contains("SyntaxError"));
    assert!(load_err(Kind::Python, "def handler(a):\n    return a\n").await.contains("no function named 'main'"));
    assert!(load_err(Kind::Python, "import no_such_module_x\n").await.contains("ModuleNotFoundError"));
    assert!(load_err(Kind::Node, "function main( {").await.contains("SyntaxError"));
    assert!(load_err(Kind::Node, "function handler() {}").await.contains("no function named 'main'"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_dictionary_results_are_developer_errors() {
    let warm = load(Kind::Python, "def main(a):\n    return 5\n", Limits::default()).await;
    assert!(developer_error(run(&*warm, json!({})).await.outcome).contains("did not return a dictionary"));
    let warm = load(Kind::Node, "function main() { return [1]; }", Limits::default()).await;
    assert!(developer_error(run(&*warm, json!({})).await.outcome).contains("did not return a dictionary"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_bounded() {
    let limits = Limits { logs_bytes_max: 1000, ..Limits::default() };
    for (kind, code) in [
        (Kind::Python, "def main(a):\n    for i in range(100):\n        print('x' * 50)\n    return {}\n"),
        (Kind::Node, "function main() { for (let i = 0; i < 100; i++) console.log('x'.repeat(50)); return {}; }"),
    ] {
        let warm = load(kind, code, limits).await;
        let report = run(&*warm, json!({})).await;
        assert_eq!(report.outcome, Outcome::Success(json!({})));
        assert_eq!(report.logs.len(), 20, "{kind:?}: 19 lines of 51 bytes fit in 1000, then one warning");
        assert!(report.logs.last().unwrap().contains("Logs were truncated"), "{kind:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activation_environment_is_visible_to_the_function() {
    for (kind, code) in [
        (Kind::Python, "import os\ndef main(a):\n    return {'id': os.environ.get('__OW_ACTIVATION_ID')}\n"),
        (Kind::Node, "function main() { return { id: process.env.__OW_ACTIVATION_ID }; }"),
    ] {
        let warm = load(kind, code, Limits::default()).await;
        let mut act = activation(json!({}));
        act.env.insert("__OW_ACTIVATION_ID".into(), act.id.clone());
        let id = act.id.clone();
        let report = start(&*warm, act, &MockHost::default()).done.await.unwrap();
        assert_eq!(report.outcome, Outcome::Success(json!({"id": id})), "{kind:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_speculative_python_activation_reports_its_cpu_time() {
    let warm = load(Kind::Python, "def main(a):\n    while True:\n        pass\n", Limits::default()).await;
    let mut act = activation(json!({}));
    act.speculative = true;
    let running = start(&*warm, act, &MockHost::default());
    tokio::time::sleep(Duration::from_millis(300)).await;
    running.kill();
    let report = tokio::time::timeout(Duration::from_secs(5), running.done).await.unwrap().unwrap();
    assert_eq!(report.outcome, Outcome::Killed);
    let cpu = report.cpu_us.expect("a speculative Python activation is measured");
    // It spun for about 300 ms of wall time on a 2-core machine: well over 50 ms of CPU, under the wall time.
    assert!((50_000..400_000).contains(&cpu), "{cpu} µs");
    // A non-speculative activation is not measured (the read would cost every activation).
    let quick = load(Kind::Python, "def main(a):\n    return a\n", Limits::default()).await;
    assert_eq!(run(&*quick, json!({})).await.cpu_us, None);
}

/// A handler that finished cleanly serves later activations (its module state shows it); one that left a child
/// process behind is retired with it, and never serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_handler_is_reused_and_one_that_leaves_a_child_is_not() {
    let code = "import os, subprocess\nTOKEN = os.urandom(8).hex()\ndef main(a):\n    if a.get('child'):\n        subprocess.Popen(['/bin/sleep', '30'])\n    return {'token': TOKEN}\n";
    let warm = load(Kind::Python, code, Limits::default()).await;
    let token = |o: Outcome| match o {
        Outcome::Success(v) => v["token"].as_str().unwrap().to_string(),
        other => panic!("{other:?}"),
    };
    let mut seen = Vec::new();
    for _ in 0..6 {
        seen.push(token(run(&*warm, json!({})).await.outcome));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let distinct: std::collections::HashSet<_> = seen.iter().collect();
    assert!(distinct.len() < seen.len(), "a handler served more than once: {seen:?}");
    let left_a_child = token(run(&*warm, json!({"child": true})).await.outcome);
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_ne!(token(run(&*warm, json!({})).await.outcome), left_a_child, "a handler with a leftover child served");
    }
}

/// Spares start in the background (nice 19, and `cpu.idle` where there is a cpu cgroup), so that starting them
/// never takes CPU from running invocations. Once one serves, every thread of it runs at the default priority
/// again: a handler left at nice 19 would be slow forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spare_started_in_the_background_serves_at_the_default_priority() {
    let code = "import os, subprocess\nTOKEN = os.urandom(8).hex()\ndef main(a):\n    if a.get('child'):\n        subprocess.Popen(['/bin/sleep', '30'])\n    nice = {}\n    for t in os.listdir('/proc/self/task'):\n        with open('/proc/self/task/%s/stat' % t) as f:\n            nice[t] = int(f.read().rsplit(')', 1)[1].split()[16])\n    return {'token': TOKEN, 'nice': nice}\n";
    let warm = load(Kind::Python, code, Limits::default()).await;
    tokio::time::sleep(Duration::from_millis(500)).await; // the spare starts meanwhile
    let first = match run(&*warm, json!({"child": true})).await.outcome {
        Outcome::Success(v) => v,
        other => panic!("{other:?}"),
    };
    // That handler (started in the foreground, by the load) left a child: it is retired, so the next activation
    // runs on the spare, which was started in the background.
    let spare = match run(&*warm, json!({})).await.outcome {
        Outcome::Success(v) => v,
        other => panic!("{other:?}"),
    };
    assert_ne!(spare["token"], first["token"], "the retired handler served again");
    let nice = spare["nice"].as_object().unwrap();
    assert!(nice.len() >= 2, "the runner's threads: {nice:?}");
    assert!(nice.values().all(|n| n == 0), "a thread of a serving handler kept the background priority: {nice:?}");
}

/// A platform that died cannot remove its handlers' cgroups; the next sandbox on the machine does, and leaves
/// those of live platforms alone.
#[test]
fn cgroups_left_by_a_dead_platform_are_removed() {
    let base = std::path::Path::new("/sys/fs/cgroup/pids");
    if !base.is_dir() {
        return; // cgroup v2 machine: the same sweep runs on the unified hierarchy
    }
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let rel = own.lines().find_map(|l| l.split_once(":pids:").map(|(_, p)| p.trim_start_matches('/').to_string()));
    let parent = base.join(rel.unwrap_or_default());
    let mut gone = std::process::Command::new("/bin/true").spawn().unwrap();
    let dead = gone.id();
    gone.wait().unwrap();
    let stale = parent.join(format!("specfaas-{dead}-7"));
    let live = parent.join(format!("specfaas-{}-999999", std::process::id()));
    for dir in [stale.join("h3"), live.join("h4")] {
        std::fs::create_dir_all(&dir).unwrap();
    }
    // In the cpu hierarchy, handler cgroups sit beside the platform, named after it.
    let cpu = own_cpu_cgroup();
    let (stale_cpu, live_cpu) = match &cpu {
        Some(c) => (
            Some(c.join(format!("specfaas-{dead}-7-h3"))),
            Some(c.join(format!("specfaas-{}-999999-h4", std::process::id()))),
        ),
        None => (None, None),
    };
    for dir in stale_cpu.iter().chain(&live_cpu) {
        std::fs::create_dir_all(dir).unwrap();
    }
    let work = tempfile::Builder::new().prefix("sfsw").tempdir_in("/tmp").unwrap();
    let sandbox = runtime::sandbox::Sandbox::new(&runtime::sandbox::Config::default(), work.path()).unwrap();
    let (stale_left, live_left) = (stale.exists(), live.join("h4").exists());
    let stale_cpu_left = stale_cpu.as_ref().is_some_and(|d| d.exists());
    let live_cpu_left = live_cpu.as_ref().is_none_or(|d| d.exists());
    let _ = std::fs::remove_dir(live.join("h4"));
    let _ = std::fs::remove_dir(&live);
    if let Some(d) = &live_cpu {
        let _ = std::fs::remove_dir(d);
    }
    drop(sandbox);
    assert!(!stale_left, "the dead platform's cgroup {} is still there", stale.display());
    assert!(live_left, "a live platform's cgroup was removed");
    assert!(!stale_cpu_left, "the dead platform's cpu cgroup {:?} is still there", stale_cpu);
    assert!(live_cpu_left, "a live platform's cpu cgroup was removed");
}

/// This process's cgroup in the v1 cpu hierarchy, where it has `cpu.idle`.
fn own_cpu_cgroup() -> Option<std::path::PathBuf> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let rel = own.lines().find_map(|l| {
        let (_, rest) = l.split_once(':')?;
        let (controllers, path) = rest.split_once(':')?;
        controllers.split(',').any(|c| c == "cpu").then(|| path.trim_start_matches('/').to_string())
    })?;
    Some(std::path::Path::new("/sys/fs/cgroup/cpu").join(rel)).filter(|d| d.join("cpu.idle").is_file())
}

/// A handler's cpu cgroup is a sibling of the platform's threads, not nested in a directory of the platform's
/// handlers: nested, `cpu.idle` would only order handlers among themselves, and the directory would compete with
/// the platform's threads as one ordinary entity, so a spare starting or a killed handler dying would take CPU
/// from the platform as an equal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_cpu_cgroups_sit_beside_the_platform() {
    let Some(cpu) = own_cpu_cgroup() else {
        eprintln!("not exercised: no v1 cpu hierarchy with cpu.idle");
        return;
    };
    let code = "import os\ndef main(a):\n    return {'pid': os.getpid()}\n";
    let warm = load(Kind::Python, code, Limits::default()).await;
    assert!(matches!(run(&*warm, json!({})).await.outcome, Outcome::Success(_)));
    let prefix = format!("specfaas-{}-", std::process::id());
    let ours: Vec<std::path::PathBuf> = std::fs::read_dir(&cpu)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.starts_with(&prefix)))
        .map(|e| e.path())
        .collect();
    let busy =
        ours.iter().filter(|d| std::fs::read_to_string(d.join("cgroup.procs")).is_ok_and(|p| !p.trim().is_empty()));
    assert!(busy.count() >= 1, "no handler's cpu cgroup beside the platform in {}: {ours:?}", cpu.display());
    for dir in &ours {
        let nested: Vec<_> = std::fs::read_dir(dir).unwrap().flatten().filter(|e| e.path().is_dir()).collect();
        assert!(nested.is_empty(), "{} holds nested cgroups: {nested:?}", dir.display());
    }
    drop(warm);
}

/// The runner starts without `site` (`-S`: the host's `.pth` start-up hooks never run in a function), but puts
/// the interpreter's site-packages on the path itself, so installed packages stay importable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn site_packages_are_on_the_path_without_running_site() {
    let code = "import sys, site\ndef main(a):\n    return {'no_site': sys.flags.no_site, 'on_path': [p for p in site.getsitepackages() if p in sys.path]}\n";
    let warm = load(Kind::Python, code, Limits::default()).await;
    let Outcome::Success(v) = run(&*warm, json!({})).await.outcome else { panic!("the function failed") };
    assert_eq!(v["no_site"], 1, "{v}");
    assert!(!v["on_path"].as_array().unwrap().is_empty(), "no site-packages directory on the path: {v}");
}

/// The soft and hard open-file limits of this process, from `/proc/self/limits`.
fn open_file_limits() -> (u64, u64) {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    let mut numbers = line.split_whitespace().filter_map(|w| w.parse::<u64>().ok());
    (numbers.next().unwrap(), numbers.next().unwrap())
}

/// A platform holding more descriptors than a function may (1024) still starts handlers, and the function sees
/// none of them. The bench's 16 applications hold about 2000 (6 per warm handler); the child used to only mark the
/// platform's descriptors close-on-exec, so after lowering its limit it had no number left for the filter's
/// notification descriptor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_start_while_the_platform_holds_more_descriptors_than_a_function_may() {
    use std::os::fd::AsRawFd;
    crate::process_runtime();
    let (soft, hard) = open_file_limits();
    assert_eq!(soft, hard, "the runtime raises the platform's soft open-file limit to its hard limit");
    if hard < 1400 {
        eprintln!("not exercised: the hard open-file limit ({hard}) does not let the platform hold over 1024");
        return;
    }
    let devnull = std::fs::File::open("/dev/null").unwrap();
    let mut held = Vec::new();
    while held.last().map_or(0, |f: &std::fs::File| f.as_raw_fd()) < 1200 {
        held.push(devnull.try_clone().unwrap());
    }
    for (kind, code) in [
        (Kind::Python, "import os\ndef main(a):\n    return {'fds': len(os.listdir('/proc/self/fd'))}\n"),
        (Kind::Node, "function main() { return { fds: require('fs').readdirSync('/proc/self/fd').length }; }"),
    ] {
        let warm = load(kind, code, Limits::default()).await;
        let Outcome::Success(result) = run(&*warm, json!({})).await.outcome else {
            panic!("{kind:?} did not run while the platform held {} descriptors", held.len())
        };
        let fds = result["fds"].as_u64().unwrap();
        assert!(fds < 64, "{kind:?} sees {fds} descriptors: some of the platform's reached it");
    }
    drop(held);
}

/// A directory exposed to functions from below the host's `/tmp` (a checkout there, a `SPECFAAS_NODE_PATH` there)
/// is visible in the function, over its scratch `/tmp` rather than hidden under it, and the scratch space still
/// takes writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_exposed_from_below_tmp_is_visible_beside_the_scratch_space() {
    let shared = tempfile::Builder::new().prefix("sfexp").tempdir_in("/tmp").unwrap();
    std::fs::create_dir(shared.path().join("pkg")).unwrap();
    std::fs::write(shared.path().join("pkg/lib.txt"), "shared").unwrap();
    let work = tempfile::Builder::new().prefix("sfrt").tempdir_in("/tmp").unwrap();
    let mut config = runtime::sandbox::Config::default();
    config.expose.push(shared.path().join("pkg"));
    let rt = runtime::process::ProcessRuntime::with_sandbox(work.path(), &config).unwrap();
    let code = format!(
        "def main(a):\n    open('/tmp/scratch', 'w').write('x')\n    return {{'text': open('{}/pkg/lib.txt').read()}}\n",
        shared.path().display()
    );
    let spec = crate::source("exposed", Kind::Python, &code, Limits::default());
    let warm = rt.load(std::sync::Arc::new(spec)).await.unwrap();
    assert_eq!(run(&*warm, json!({})).await.outcome, Outcome::Success(json!({"text": "shared"})));
}

/// Starts `a` with a host that hands each call to the test instead of answering it: the killer, the calls, and
/// where the report goes.
fn start_holding(
    warm: &dyn Warm,
    a: runtime::Activation,
) -> (
    runtime::Killer,
    tokio::sync::mpsc::UnboundedReceiver<runtime::HostRequest>,
    tokio::sync::oneshot::Receiver<runtime::Report>,
) {
    let (calls_tx, calls) = tokio::sync::mpsc::unbounded_channel::<runtime::HostRequest>();
    let host: runtime::Host = std::sync::Arc::new(move |req| {
        let _ = calls_tx.send(req);
    });
    let (done_tx, done) = tokio::sync::oneshot::channel();
    let killer = warm.start(
        a,
        host,
        Box::new(move |r| {
            let _ = done_tx.send(r);
        }),
    );
    (killer, calls, done)
}

/// The `cpu.idle` of every cpu cgroup of this process's handlers that holds processes.
fn handler_cpu_idle(cpu: &std::path::Path) -> Vec<String> {
    let prefix = format!("specfaas-{}-", std::process::id());
    let mut found = Vec::new();
    for entry in std::fs::read_dir(cpu).unwrap().flatten() {
        let dir = entry.path();
        let ours = entry.file_name().to_str().is_some_and(|n| n.starts_with(&prefix));
        if ours && std::fs::read_to_string(dir.join("cgroup.procs")).is_ok_and(|p| !p.trim().is_empty()) {
            found.push(std::fs::read_to_string(dir.join("cpu.idle")).unwrap_or_default().trim().to_string());
        }
    }
    found
}

/// A speculative activation that asks for idle CPU runs with its handler's `cpu.idle` set, so it never delays
/// non-speculative work; promoted, it takes CPU as any activation does, and its handler serves the next one at
/// the full share again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_speculative_activation_runs_on_idle_cpu_until_it_is_promoted() {
    let Some(cpu) = own_cpu_cgroup() else {
        eprintln!("not exercised: no v1 cpu hierarchy with cpu.idle");
        return;
    };
    let code = "import specfaas\ndef main(a):\n    return {'got': specfaas.kv.get('k')}\n";
    let warm = load(Kind::Python, code, Limits::default()).await;
    // The spare starts in the background (idle CPU) and gets the full share once ready: wait for that, which on a
    // busy machine takes longer than on an idle one.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while handler_cpu_idle(&cpu).iter().any(|i| i != "0") && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The host holds the function's read until the test has looked.
    let mut a = activation(json!({}));
    a.speculative = true;
    a.cpu = runtime::Cpu::Idle;
    let (killer, mut calls, done_rx) = start_holding(&*warm, a);
    let read = tokio::time::timeout(Duration::from_secs(30), calls.recv()).await.unwrap().unwrap();
    let speculative = handler_cpu_idle(&cpu);
    assert_eq!(speculative.iter().filter(|i| *i == "1").count(), 1, "one handler on idle CPU: {speculative:?}");
    killer.promote();
    let promoted = handler_cpu_idle(&cpu);
    assert!(promoted.iter().all(|i| i == "0"), "a promoted activation kept idle CPU: {promoted:?}");
    (read.reply)(runtime::Reply::Ok(json!(7)));
    let report = tokio::time::timeout(Duration::from_secs(30), done_rx).await.unwrap().unwrap();
    assert_eq!(report.outcome, Outcome::Success(json!({"got": 7})));
    killer.settle();
    // Not promoted this time: its handler still gets the full share back once the activation is over.
    let mut a = activation(json!({}));
    a.speculative = true;
    a.cpu = runtime::Cpu::Idle;
    let running = start(&*warm, a, &MockHost::default());
    let report = tokio::time::timeout(Duration::from_secs(30), running.done).await.unwrap().unwrap();
    assert!(matches!(report.outcome, Outcome::Success(_)), "{report:?}");
    running.killer.settle();
    let after = handler_cpu_idle(&cpu);
    assert!(after.iter().all(|i| i == "0"), "a handler kept idle CPU after its activation: {after:?}");
}

/// Runs a speculative activation to its end, then kills it, as a squash after the run finished does.
async fn squash_after_finish(warm: &dyn Warm, input: serde_json::Value, after: runtime::AfterSquash) -> String {
    let mut a = activation(input);
    a.speculative = true;
    a.after_squash = after;
    let running = start(warm, a, &MockHost::default());
    let report = tokio::time::timeout(Duration::from_secs(30), running.done).await.unwrap().unwrap();
    running.killer.kill();
    token(report.outcome)
}

/// The handler of a speculative activation that ran to its end and was then squashed serves others again if the
/// activation held no effect and left its `/tmp` as it found it, so a squash costs no fresh handler; if it wrote
/// there, or reuse is off, the handler is retired and nothing it left reaches another activation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_squashed_handler_is_reused_only_if_it_left_its_scratch_space_as_it_was() {
    let pool = OwnPool::load(TOKEN_WRITER).await;
    if !pool.rt.confined() {
        eprintln!("not exercised: handlers are not confined, so their /tmp is not their own");
        return;
    }
    // A clean handler may be on its way back from the activation's own task when the kill comes: poll for it.
    let clean = squash_after_finish(&*pool.warm, json!({}), runtime::AfterSquash::Reuse).await;
    let served = pool.rounds_until(&clean).await;
    assert!(served.contains(&clean), "a squashed handler that left nothing was not reused: {clean} not in {served:?}");

    let wrote = squash_after_finish(&*pool.warm, json!({"write": true}), runtime::AfterSquash::Reuse).await;
    // A kill retires any other handler before it returns: each of these checks is one round.
    let served = pool.round().await;
    assert!(!served.contains(&wrote), "a squashed handler that wrote to its /tmp served again: {served:?}");
    let retired = squash_after_finish(&*pool.warm, json!({}), runtime::AfterSquash::Retire).await;
    let served = pool.round().await;
    assert!(!served.contains(&retired), "a squashed handler served again with reuse off: {served:?}");
    let c = counts_until(&pool.rt, |c| c.retired_killed == 2).await; // counted when the process is reaped
    assert_eq!(c.retired_killed, 2, "both were retired: {c:?}");
}

/// One function on a runtime of its own, so that the runtime's handler counts are its handlers' alone.
struct OwnPool {
    warm: std::sync::Arc<dyn Warm>,
    rt: runtime::process::ProcessRuntime,
    _dir: tempfile::TempDir,
}

impl OwnPool {
    async fn load(code: &str) -> OwnPool {
        let dir = tempfile::Builder::new().prefix("sfrt").tempdir_in("/tmp").unwrap();
        let rt = runtime::process::ProcessRuntime::new(dir.path()).unwrap();
        let spec = std::sync::Arc::new(crate::source("own", Kind::Python, code, Limits::default()));
        let warm = rt.load(spec).await.unwrap();
        OwnPool { warm, rt, _dir: dir }
    }

    /// Handlers started and not ended: idle, running, parked, or still loading the code.
    fn alive(&self) -> u64 {
        let c = self.rt.handlers();
        c.started_for_waiter + c.started_spare - c.ended()
    }

    /// Every handler idle when it is called serves one activation, whatever order the pool holds them in: as many
    /// activations start at once as there are handlers alive, and each holds its handler on a read of its token
    /// (see [`TOKEN_WRITER`]) until all have one, so none serves two. The tokens that served.
    async fn round(&self) -> Vec<String> {
        let n = self.alive().max(1);
        let mut held: Vec<Held> =
            (0..n).map(|_| start_holding(&*self.warm, activation(json!({"read": true})))).collect();
        let mut reads = Vec::new();
        for (_, calls, _) in &mut held {
            let read = tokio::time::timeout(Duration::from_secs(30), calls.recv());
            reads.push(read.await.expect("an activation of a round had no handler in 30 s").unwrap());
        }
        let mut tokens = Vec::new();
        for read in reads {
            let runtime::Call::Get { key } = read.call else { panic!("{:?}", read.call) };
            tokens.push(key);
            (read.reply)(runtime::Reply::Ok(serde_json::Value::Null));
        }
        for (_killer, _, done) in held {
            let report = tokio::time::timeout(Duration::from_secs(30), done).await.unwrap().unwrap();
            assert!(matches!(report.outcome, Outcome::Success(_)), "{report:?}");
        }
        tokens
    }

    /// Rounds, 100 ms apart, until the handler named `token` serves in one, for up to 30 s: for a handler that
    /// goes back to the pool some time after its activation reported. Every token that served.
    async fn rounds_until(&self, token: &str) -> Vec<String> {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut served = Vec::new();
        while std::time::Instant::now() < deadline {
            served.extend(self.round().await);
            if served.iter().any(|t| t == token) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        served
    }
}

/// A fixture that returns its handler's token, and asked to, writes to its `/tmp` or reads the key named by the
/// token (so that the host learns which handler serves while it holds the read).
const TOKEN_WRITER: &str = "import os, specfaas\nTOKEN = os.urandom(8).hex()\ndef main(a):\n    if a.get('write'):\n        with open('/tmp/left', 'w') as f:\n            f.write('x')\n    if a.get('read'):\n        specfaas.kv.get(TOKEN)\n    return {'token': TOKEN}\n";

/// The `token` a fixture returned.
fn token(o: Outcome) -> String {
    match o {
        Outcome::Success(v) => v["token"].as_str().unwrap().to_string(),
        other => panic!("{other:?}"),
    }
}

/// Starts a speculative activation that may be reused after a squash, waits for its first call, and kills it
/// there, as a squash of a running activation does; its call is never answered by the host. Returns the key it
/// read.
async fn squash_while_running(warm: &dyn Warm, input: serde_json::Value) -> String {
    let mut a = activation(input);
    a.speculative = true;
    a.after_squash = runtime::AfterSquash::Reuse;
    let (killer, mut calls, done_rx) = start_holding(warm, a);
    let call = tokio::time::timeout(Duration::from_secs(30), calls.recv()).await.unwrap().unwrap();
    let runtime::Call::Get { key } = call.call else { panic!("{:?}", call.call) };
    killer.kill();
    let report = tokio::time::timeout(Duration::from_secs(5), done_rx).await.unwrap().unwrap();
    assert_eq!(report.outcome, Outcome::Killed, "a squashed activation reports Killed at once");
    tokio::time::sleep(Duration::from_millis(300)).await; // it runs to its end on the refusal
    key
}

/// A speculative activation squashed while it runs is abandoned rather than killed when it has held no effect:
/// every call it makes from then on is refused, it runs to its end, and its handler serves again if it left its
/// `/tmp` as it found it. If it wrote there, the handler is retired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_squashed_while_running_is_reused_only_if_it_left_its_scratch_space_as_it_was() {
    let pool = OwnPool::load(TOKEN_WRITER).await;
    if !pool.rt.confined() {
        eprintln!("not exercised: handlers are not confined, so their /tmp is not their own");
        return;
    }
    // The key a run reads names the handler (its module's token).
    let abandoned = squash_while_running(&*pool.warm, json!({"read": true})).await;
    // It runs to its end on the refusal and goes back to the pool, sooner or later on a loaded machine: a later
    // run is served by it. A killed or retired handler never serves again.
    let served = pool.rounds_until(&abandoned).await;
    assert!(served.contains(&abandoned), "an abandoned clean handler was not reused: {abandoned} not in {served:?}");
    let wrote = squash_while_running(&*pool.warm, json!({"read": true, "write": true})).await;
    // Once it has run to its end, it is retired rather than given back.
    let c = counts_until(&pool.rt, |c| c.retired_killed == 1).await;
    assert_eq!(c.retired_killed, 1, "a handler that wrote to its /tmp was not retired: {c:?}");
    for _ in 0..3 {
        let served = pool.round().await;
        assert!(!served.contains(&wrote), "a handler that wrote to its /tmp served again: {wrote} in {served:?}");
    }
}

/// Polls `counts` of `rt` until `done` holds, for up to 20 s; the counts when it held (or the last ones).
async fn counts_until(
    rt: &runtime::process::ProcessRuntime,
    done: impl Fn(&runtime::HandlerCounts) -> bool,
) -> runtime::HandlerCounts {
    for _ in 0..200 {
        let c = rt.handlers();
        if done(&c) {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    rt.handlers()
}

/// Every handler started is counted once, as started for a waiter or as a spare, and once when it is gone, with
/// the reason: killed with its activation, failed (a timeout), exited by itself (a crash), left processes behind,
/// or let go with its function. Waits for a handler are counted with their time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_are_counted_as_started_and_as_retired_by_reason() {
    // Its own runtime, so that no other test's handlers are counted.
    let dir = tempfile::Builder::new().prefix("sfrt").tempdir_in("/tmp").unwrap();
    let rt = runtime::process::ProcessRuntime::new(dir.path()).unwrap();
    let code = "import os, subprocess, time, specfaas\ndef main(a):\n    if a.get('child'):\n        subprocess.Popen(['/bin/sleep', '30'])\n    if a.get('exit'):\n        os._exit(3)\n    if a.get('read'):\n        specfaas.kv.get('k')\n    time.sleep(a.get('sleep', 0))\n    return {'ok': True}\n";
    let limits = Limits { timeout_ms: 1000, ..Limits::default() };
    let spec = std::sync::Arc::new(crate::source("counted", Kind::Python, code, limits));
    let warm = rt.load(spec).await.unwrap();
    // The first handler starts at load, at full priority, and is the pool's one idle spare.
    let c = rt.handlers();
    assert_eq!((c.started_for_waiter, c.started_spare, c.ended()), (1, 0, 0), "{c:?}");

    // Three at once, on one idle handler: at least two wait, and handlers are started (the spare being started
    // when one asks counts for it).
    let three = tokio::join!(
        run(&*warm, json!({"sleep": 0.2})),
        run(&*warm, json!({"sleep": 0.2})),
        run(&*warm, json!({"sleep": 0.2}))
    );
    for r in [three.0, three.1, three.2] {
        assert_eq!(r.outcome, Outcome::Success(json!({"ok": true})));
    }
    let c = rt.handlers();
    assert!(c.waits >= 2 && c.wait_us > 0 && c.started_for_waiter + c.started_spare >= 3, "{c:?}");
    assert_eq!(c.ended(), 0, "clean activations retire no handler: {c:?}");

    // A crash: the handler exited by itself.
    assert!(matches!(run(&*warm, json!({"exit": true})).await.outcome, Outcome::DeveloperError(_)));
    let c = counts_until(&rt, |c| c.exited == 1).await;
    assert_eq!((c.exited, c.ended()), (1, 1), "{c:?}");

    // A timeout: retired as failed.
    assert!(matches!(run(&*warm, json!({"sleep": 5})).await.outcome, Outcome::Timeout { .. }));
    let c = counts_until(&rt, |c| c.retired_failed == 1).await;
    assert_eq!((c.retired_failed, c.ended()), (1, 2), "{c:?}");

    // Killed while it waits on a call, as a squash kills a run: retired as killed.
    let (killer, mut calls, done) = start_holding(&*warm, activation(json!({"read": true})));
    let _call = tokio::time::timeout(Duration::from_secs(30), calls.recv()).await.unwrap().unwrap();
    killer.kill();
    assert_eq!(tokio::time::timeout(Duration::from_secs(5), done).await.unwrap().unwrap().outcome, Outcome::Killed);
    let c = counts_until(&rt, |c| c.retired_killed == 1).await;
    assert_eq!((c.retired_killed, c.ended()), (1, 3), "{c:?}");

    let mut ended = 3;
    if rt.confined() {
        // A child left behind: only a confined handler's cgroup tells.
        assert_eq!(run(&*warm, json!({"child": true})).await.outcome, Outcome::Success(json!({"ok": true})));
        let c = counts_until(&rt, |c| c.retired_left_processes == 1).await;
        assert_eq!((c.retired_left_processes, c.ended()), (1, 4), "{c:?}");
        ended = 4;
    }

    // Let go with the function: every handler still alive is released, and each started one has ended once.
    drop(warm);
    let c = counts_until(&rt, |c| c.ended() == c.started_for_waiter + c.started_spare).await;
    assert_eq!(c.ended(), c.started_for_waiter + c.started_spare, "{c:?}");
    assert_eq!(c.released, c.ended() - ended, "{c:?}");
    assert_eq!(c.retired_idle_max, 0, "{c:?}");
}

/// A speculative activation that finished, held no effect and left its `/tmp` as it found it gives its handler
/// back at once, before it is settled: squashed or committed, the handler would serve again, so holding it while
/// the run stays speculative would only make the pool start more. One that wrote there stays parked until settled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_speculative_activation_that_left_nothing_gives_its_handler_back_before_it_is_settled() {
    let pool = OwnPool::load(TOKEN_WRITER).await;
    if !pool.rt.confined() {
        eprintln!("not exercised: handlers are not confined, so their /tmp is not their own");
        return;
    }
    let speculative = |input| {
        let mut a = activation(input);
        a.speculative = true;
        a.after_squash = runtime::AfterSquash::Reuse;
        a
    };
    let clean = start(&*pool.warm, speculative(json!({})), &MockHost::default());
    let report = tokio::time::timeout(Duration::from_secs(30), clean.done).await.unwrap().unwrap();
    let clean_token = token(report.outcome);
    // Given back by the activation's task, just after it reported.
    let served = pool.rounds_until(&clean_token).await;
    assert!(served.contains(&clean_token), "a clean unsettled handler was held: {clean_token} not in {served:?}");

    let wrote = start(&*pool.warm, speculative(json!({"write": true})), &MockHost::default());
    let report = tokio::time::timeout(Duration::from_secs(30), wrote.done).await.unwrap().unwrap();
    let wrote_token = token(report.outcome);
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let served = pool.round().await;
        assert!(!served.contains(&wrote_token), "an unsettled handler that wrote to /tmp served: {served:?}");
    }
    // Committed: it serves again at once, as any committed run's handler does.
    wrote.killer.settle();
    let served = pool.round().await;
    assert!(served.contains(&wrote_token), "a settled handler was not reused: {wrote_token} not in {served:?}");
    drop(clean.killer);
    assert_eq!(pool.rt.handlers().ended(), 0, "no handler was retired: {:?}", pool.rt.handlers());
}

type Held = (
    runtime::Killer,
    tokio::sync::mpsc::UnboundedReceiver<runtime::HostRequest>,
    tokio::sync::oneshot::Receiver<runtime::Report>,
);

/// Whether every one of `held` makes its call within 30 s.
async fn all_run(held: &mut [Held]) -> bool {
    let mut ran = vec![false; held.len()];
    for _ in 0..300 {
        for (i, (_, calls, _)) in held.iter_mut().enumerate() {
            ran[i] |= calls.try_recv().is_ok();
        }
        if ran.iter().all(|r| *r) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Speculative activations never have a handler started for them in the foreground: they take idle handlers and
/// spares, and a pool grows for them one background spare at a time. Promoted while they wait, activations get
/// starts in the foreground.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speculative_activations_have_no_handler_started_for_them_until_they_are_promoted() {
    let dir = tempfile::Builder::new().prefix("sfrt").tempdir_in("/tmp").unwrap();
    let rt = runtime::process::ProcessRuntime::new(dir.path()).unwrap();
    let code = "import specfaas\ndef main(a):\n    specfaas.kv.get('k')\n    return {'ok': True}\n";
    let spec = |name| std::sync::Arc::new(crate::source(name, Kind::Python, code, Limits::default()));
    let five = |warm: std::sync::Arc<dyn Warm>| {
        (0..5)
            .map(|_| {
                let mut a = activation(json!({}));
                a.speculative = true;
                a.cpu = runtime::Cpu::Idle;
                start_holding(&*warm, a)
            })
            .collect::<Vec<_>>()
    };
    let mut held = five(rt.load(spec("waits")).await.unwrap());
    assert!(all_run(&mut held).await, "speculative activations left waiting");
    let c = rt.handlers();
    assert_eq!(c.started_for_waiter, 1, "only the first handler, at load, started in the foreground: {c:?}");
    assert!(c.started_spare >= 4 && c.waits >= 4, "{c:?}");
    for (killer, _, _) in &held {
        killer.kill();
    }

    // Promoted at once, while they wait, they get foreground starts.
    let before = rt.handlers().started_for_waiter;
    let mut held = five(rt.load(spec("promoted")).await.unwrap());
    for (killer, _, _) in &held {
        killer.promote();
    }
    assert!(all_run(&mut held).await, "promoted activations left waiting");
    let c = rt.handlers();
    assert!(c.started_for_waiter > before + 1, "no foreground start for promoted waiters: {c:?}");
    for (killer, _, _) in &held {
        killer.kill();
    }
}

/// Speculative activations that wait are served in the end without being promoted, even when the handlers of
/// those that ran are killed with them (a squash): a handler is always on its way while one waits with none idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_speculative_activations_are_served_when_the_running_ones_are_squashed() {
    let code = "import specfaas\ndef main(a):\n    specfaas.kv.get('k')\n    return {'ok': True}\n";
    let warm = load(Kind::Python, code, Limits::default()).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut a = activation(json!({}));
        a.speculative = true;
        a.cpu = runtime::Cpu::Idle;
        held.push((start_holding(&*warm, a), false));
    }
    let mut served = 0;
    for _ in 0..300 {
        for ((killer, calls, _), ran) in held.iter_mut() {
            if !*ran && calls.try_recv().is_ok() {
                *ran = true;
                served += 1;
                killer.kill(); // squashed while it runs: its handler is retired
            }
        }
        if served == held.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(served, held.len(), "speculative activations left waiting for a handler");
}
