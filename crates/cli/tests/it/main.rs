//! End-to-end: the `specfaas` binary runs the examples, as the README tells a newcomer to.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

fn specfaas(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_specfaas")).args(args).output().expect("the binary runs")
}

/// Runs `specfaas run` and returns (exit code, parsed stdout).
fn run(example: &str, app: &str, input: Value, data: &Path) -> (i32, Value) {
    let dir = examples().join(example);
    let out = specfaas(&[
        "run",
        dir.to_str().unwrap(),
        app,
        "--input",
        &input.to_string(),
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let parsed = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!("stdout is not JSON ({e}): {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr))
    });
    (out.status.code().unwrap(), parsed)
}

fn annotation(record: &Value, key: &str) -> Value {
    record["annotations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["key"] == key)
        .map_or(Value::Null, |a| a["value"].clone())
}

#[test]
fn smarthome_turns_on_the_air_when_it_is_hot() {
    let data = tempfile::tempdir().unwrap();
    let (code, out) = run(
        "smarthome",
        "smarthome",
        json!({"user": "alice", "password": "wonderland", "room": "living"}),
        data.path(),
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out["result"],
        json!({"air_on": true, "celsius": 27.4, "message": "living is 27.4 C: air conditioning turned on", "room": "living"})
    );
    let record = &out["activation"];
    assert_eq!(record["response"]["status"], "success");
    assert_eq!(
        annotation(record, "path"),
        json!(["Login", "LoggedIn?", "ReadTemp", "Normalize", "CompareTemp", "TooHot?", "TurnAir", "Done"])
    );
    let names: Vec<&str> = out["runs"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["login", "read_temp", "normalize", "compare_temp", "turn_air", "done"]);
    assert_eq!(record["logs"].as_array().unwrap().len(), 6, "the app record lists its functions' activations");
    assert!(out["runs"][4]["logs"][0].as_str().unwrap().contains("stdout: air conditioning on in living"));
}

#[test]
fn smarthome_takes_the_other_branches() {
    let data = tempfile::tempdir().unwrap();
    // A cool room: no air conditioning.
    let (code, out) = run(
        "smarthome",
        "smarthome",
        json!({"user": "alice", "password": "wonderland", "room": "cellar"}),
        data.path(),
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(out["result"]["air_on"], false);
    assert_eq!(annotation(&out["activation"], "path").as_array().unwrap().last().unwrap(), "Done");
    // A wrong password: the Fail function, an application error, exit code 3.
    let (code, out) =
        run("smarthome", "smarthome", json!({"user": "alice", "password": "nope", "room": "living"}), data.path());
    assert_eq!(code, 3);
    // A workflow's failure as Step Functions reports it: the error's name, and its cause.
    assert_eq!(out["result"], json!({"error": "States.TaskFailed", "cause": "login failed for user 'alice'"}));
    assert_eq!(out["activation"]["response"]["status"], "application error");
    assert_eq!(annotation(&out["activation"], "path"), json!(["Login", "LoggedIn?", "Fail"]));
}

#[test]
fn travel_books_through_implicit_calls_and_remembers_seats() {
    let data = tempfile::tempdir().unwrap();
    let input = json!({"from": "paris", "to": "lyon", "rider": "ada", "age": 22});
    let (code, out) = run("travel", "travel", input, data.path());
    assert_eq!(code, 0, "{out}");
    assert_eq!(out["result"], json!({"rider": "ada", "train": "TGV-6601", "seat": "TGV-6601-2", "price_eur": 27.9}));
    assert_eq!(annotation(&out["activation"], "path"), json!(["book_trip", "find_trains", "reserve_seat", "quote"]));
    // The store is durable: two more riders fill TGV-6601, so the third goes on TGV-6605.
    for rider in ["bo", "cy"] {
        let (code, out) = run("travel", "travel", json!({"from": "paris", "to": "lyon", "rider": rider}), data.path());
        assert_eq!(code, 0, "{out}");
        if rider == "cy" {
            assert_eq!(out["result"]["train"], "TGV-6605", "{out}");
        }
    }
    // A full route: the callee's application error is handled by the caller, which fails the application.
    let (code, out) = run("travel", "travel", json!({"from": "paris", "to": "lille", "rider": "ada"}), data.path());
    assert_eq!(code, 3);
    assert_eq!(out["result"], json!({"error": "no seats left from paris to lille"}));
}

#[test]
fn records_can_be_listed_and_fetched_afterwards() {
    let data = tempfile::tempdir().unwrap();
    let (_, out) = run("travel", "travel", json!({"from": "paris", "to": "lyon", "rider": "ada"}), data.path());
    let id = out["activation"]["activationId"].as_str().unwrap();
    let got = specfaas(&["activation", "get", id, "--data-dir", data.path().to_str().unwrap()]);
    assert!(got.status.success());
    let record: Value = serde_json::from_slice(&got.stdout).unwrap();
    assert_eq!(record["response"]["result"], out["result"]);
    let listed = specfaas(&["activation", "list", "--data-dir", data.path().to_str().unwrap(), "--name", "quote"]);
    let list: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["response"]["result"], json!({"price_eur": 55.8}));
}

#[test]
fn bad_input_gets_a_clear_error_and_exit_code_1() {
    let data = tempfile::tempdir().unwrap();
    let dir = examples().join("smarthome");
    let dir = dir.to_str().unwrap();
    let data = data.path().to_str().unwrap();
    for (args, needle) in [
        (vec!["run", dir, "smarthome", "--input", "{not json", "--data-dir", data], "--input is not valid JSON"),
        (vec!["run", dir, "nosuchapp", "--data-dir", data], "\"nosuchapp\" does not exist"),
        (vec!["run", "/nonexistent", "x", "--data-dir", data], "/nonexistent/specfaas.toml: cannot read"),
        (vec!["activation", "get", "deadbeef", "--data-dir", data], "activation deadbeef not found"),
    ] {
        let out = specfaas(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

#[test]
fn limits_come_from_a_config_file() {
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("limits.toml");
    // Three state transitions are not enough for the smart-home workflow.
    std::fs::write(&config, "[engine]\nsteps_max = 3\n").unwrap();
    let dir = examples().join("smarthome");
    let input = json!({"user": "alice", "password": "wonderland", "room": "living"}).to_string();
    let args = [
        "run",
        dir.to_str().unwrap(),
        "smarthome",
        "--input",
        &input,
        "--data-dir",
        data.path().to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ];
    let out = specfaas(&args);
    assert_eq!(out.status.code(), Some(3));
    let out: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out["result"]["error"], "States.Runtime", "{out}");
    assert!(out["result"]["cause"].as_str().unwrap().contains("limit of 3 state transitions (steps_max)"), "{out}");
    std::fs::write(&config, "[engine]\nsteps_maximum = 3\n").unwrap();
    let out = specfaas(&args);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("limits.toml is not a valid config") && stderr.contains("steps_maximum"), "{stderr}");
}

/// The official `openwhisk` npm client, unchanged, drives a real `specfaas serve` (`tests/openwhisk`): actions in
/// Python and Node.js, a sequence, blocking and non-blocking invocations, activations, results and logs, update,
/// delete, and bad input. The client is installed from the committed lockfile on first use.
#[test]
fn the_official_openwhisk_client_works_unchanged() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/openwhisk");
    if !dir.join("node_modules/openwhisk").exists() {
        let install =
            Command::new("npm").args(["ci", "--no-audit", "--no-fund"]).current_dir(&dir).output().expect("npm runs");
        assert!(install.status.success(), "npm ci failed: {}", String::from_utf8_lossy(&install.stderr));
    }
    let out = Command::new("node")
        .args(["--test", "client.test.mjs"])
        .current_dir(&dir)
        .env("SPECFAAS_BIN", env!("CARGO_BIN_EXE_specfaas"))
        .output()
        .expect("node runs");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the openwhisk client tests failed:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains("# pass 5") && report.contains("# fail 0"), "{report}");
}

/// The `wsk`-style client commands against a real `specfaas serve` process.
#[test]
fn the_client_commands_drive_a_server() {
    let data = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let listen = format!("127.0.0.1:{port}");
    /// Kills the server when the test ends, whether it passed or not.
    struct Server(std::process::Child);
    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    // The address and data directory come from the config file's [server] table, not flags.
    let config = data.path().join("serve.toml");
    let server_dir = data.path().join("server");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"{listen}\"\ndata_dir = \"{}\"\n[namespace]\ninvocations_per_minute_max = 600\n",
            server_dir.display()
        ),
    )
    .unwrap();
    let _server = Server(
        Command::new(env!("CARGO_BIN_EXE_specfaas"))
            .args(["serve", "--config", config.to_str().unwrap()])
            .env_remove("SPECFAAS_LISTEN")
            .env_remove("SPECFAAS_DATA_DIR")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let auth_file = server_dir.join("auth");
    for _ in 0..200 {
        if std::net::TcpStream::connect(&listen).is_ok() && auth_file.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let auth = std::fs::read_to_string(&auth_file).unwrap();
    let apihost = format!("http://{listen}");
    let client = |args: &[&str]| -> (i32, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_specfaas"))
            .args(args)
            .env("SPECFAAS_APIHOST", &apihost)
            .env("SPECFAAS_AUTH", &auth)
            .env("HOME", data.path())
            .output()
            .unwrap();
        (
            out.status.code().unwrap(),
            String::from_utf8_lossy(&out.stdout).into(),
            String::from_utf8_lossy(&out.stderr).into(),
        )
    };
    let json = |s: &str| -> Value { serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}")) };
    let quote = examples().join("travel/functions/quote.js");
    let (code, out, err) = client(&["action", "create", "quote", quote.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out)["exec"]["kind"], "nodejs:20", "the kind follows the file's extension");
    let (code, out, _) = client(&["action", "invoke", "quote", "-p", "distance_km=100", "-p", "age=20", "--result"]);
    assert_eq!((code, json(&out)), (0, json!({"price_eur": 6})));
    let (_, out, _) = client(&["action", "list"]);
    assert_eq!(json(&out)[0]["name"], "quote");
    let flow = data.path().join("flow.yaml");
    std::fs::write(&flow, "StartAt: Q\nStates:\n  Q:\n    Type: Task\n    Resource: quote\n    End: true\n").unwrap();
    let (code, _, err) = client(&["workflow", "create", "priced", flow.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = client(&["workflow", "invoke", "priced", "-p", "distance_km=10", "-p", "age=40", "-r"]);
    assert_eq!((code, json(&out)), (0, json!({"price_eur": 1.2})));
    let (_, out, _) = client(&["activation", "list", "--name", "priced", "--limit", "1"]);
    let id = json(&out)[0]["activationId"].as_str().unwrap().to_string();
    let (_, out, _) = client(&["activation", "result", &id]);
    assert_eq!(json(&out)["result"], json!({"price_eur": 1.2}));
    let (code, _, err) = client(&["action", "invoke", "ghost", "-r"]);
    assert_eq!(code, 1);
    assert!(err.contains("does not exist. (404)"), "{err}");
    // `property set` remembers the host and key for later commands.
    let (code, _, _) = client(&["property", "set", "--apihost", &apihost, "--auth", &auth]);
    assert_eq!(code, 0);
    let out = Command::new(env!("CARGO_BIN_EXE_specfaas"))
        .args(["action", "delete", "quote"])
        .env("HOME", data.path())
        .env_remove("SPECFAAS_APIHOST")
        .env_remove("SPECFAAS_AUTH")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// A `specfaas serve` process on a data directory, with the address it listens on.
struct Serve {
    child: std::process::Child,
    listen: String,
}

impl Serve {
    fn start(data_dir: &Path) -> Serve {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let listen = format!("127.0.0.1:{port}");
        let child = Command::new(env!("CARGO_BIN_EXE_specfaas"))
            .args(["serve", "--listen", &listen, "--data-dir", data_dir.to_str().unwrap()])
            .env_remove("SPECFAAS_CONFIG")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let serve = Serve { child, listen };
        for _ in 0..200 {
            if std::net::TcpStream::connect(&serve.listen).is_ok() && data_dir.join("auth").exists() {
                return serve;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("specfaas serve did not start on {}", serve.listen);
    }

    /// Deploys a Python action through the client, and returns the work directory its interpreter runs from: the
    /// directory holding every tenant's code and sockets.
    fn work_dir(&self, data_dir: &Path) -> PathBuf {
        let code = data_dir.parent().unwrap().join("hello.py");
        std::fs::write(&code, "def main(args):\n    return {'hi': 1}\n").unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_specfaas"))
            .args(["action", "update", "hello", code.to_str().unwrap()])
            .env("SPECFAAS_APIHOST", format!("http://{}", self.listen))
            .env("SPECFAAS_AUTH", std::fs::read_to_string(data_dir.join("auth")).unwrap())
            .env("HOME", data_dir.parent().unwrap())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        // The server's children (of any of its threads) include the action's sandbox, where WORK/rt is mounted
        // on /opt/specfaas (its mountinfo names the source directory).
        let pid = self.child.id();
        for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
            let children = std::fs::read_to_string(task.unwrap().path().join("children")).unwrap_or_default();
            for child in children.split_whitespace() {
                let mounts = std::fs::read_to_string(format!("/proc/{child}/mountinfo")).unwrap_or_default();
                for line in mounts.lines() {
                    let fields: Vec<&str> = line.split(' ').collect();
                    if fields.get(4) == Some(&"/opt/specfaas")
                        && let Some(work) = fields.get(3).and_then(|root| root.strip_suffix("/rt"))
                    {
                        return PathBuf::from(work);
                    }
                }
            }
        }
        panic!("no interpreter of the action runs under the server (pid {pid})");
    }

    fn terminate(mut self) -> std::process::ExitStatus {
        let sent = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(sent.success());
        for _ in 0..200 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("specfaas serve did not stop on SIGTERM");
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Bug 5: SIGTERM removes the work directory, as SIGINT does; one left by a killed server is cleaned at the next
/// start.
#[test]
fn the_work_directory_goes_on_sigterm_and_a_stale_one_at_the_next_start() {
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().join("server");
    let serve = Serve::start(&data_dir);
    let work = serve.work_dir(&data_dir);
    assert!(work.is_dir(), "{}", work.display());
    let status = serve.terminate();
    assert!(!work.exists(), "{} is left behind after SIGTERM", work.display());
    assert!(status.success(), "SIGTERM is a clean shutdown: {status}");

    // A server killed outright leaves its work directory; the next start on the same data directory cleans it.
    let mut serve = Serve::start(&data_dir);
    let stale = serve.work_dir(&data_dir);
    serve.child.kill().unwrap();
    serve.child.wait().unwrap();
    assert!(stale.is_dir());
    std::fs::write(stale.join("left-over"), "from a killed server").unwrap();
    let serve = Serve::start(&data_dir);
    assert!(!stale.join("left-over").exists(), "{} was not cleaned at start", stale.display());
    assert!(serve.terminate().success());

    // A directory at that place that specfaas did not make is never deleted: the server refuses to start.
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(stale.join("mine"), "a user's file").unwrap();
    // Bounded: a server that wrongly starts must fail this test, not hang it.
    let mut refused = Command::new(env!("CARGO_BIN_EXE_specfaas"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir", data_dir.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut status = None;
    for _ in 0..200 {
        status = refused.try_wait().unwrap();
        if status.is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    if status.is_none() {
        let _ = refused.kill();
        panic!("specfaas serve started on a directory it did not make");
    }
    let out = refused.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is not a specfaas work directory"), "{stderr}");
    assert!(stale.join("mine").exists());
}
