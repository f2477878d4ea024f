//! `specfaas`: the one binary. Subcommands:
//! - `run DIR APP --input JSON`: deploy a project in-process on the embedded store and run one invocation;
//! - `activation list|get`: query the activation records in a data directory;
//! - `bench handoff`: the hand-off benchmark (see the `bench` crate).
//!
//! Exit codes: 0 the invocation succeeded; 1 the command failed before invoking (bad project, bad input);
//! 3 the invocation completed with an error status.

mod client;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use serde_json::{Value, json};
use storage::{ActivationQuery, Store};

#[derive(Parser)]
#[command(
    name = "specfaas",
    version,
    about = "A serverless platform that runs multi-function applications speculatively"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Deploy the project in DIR and run one invocation of APP (an application or a function) on the embedded store.
    Run {
        /// Project directory containing specfaas.toml.
        dir: PathBuf,
        /// Application (or function) to invoke.
        app: String,
        /// Input, a JSON object.
        #[arg(long, default_value = "{}")]
        input: String,
        /// Where the embedded store lives [default: DIR/.specfaas].
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Print only the result, not the activation records.
        #[arg(long)]
        result: bool,
        /// Platform limits, a TOML file (see README, "Limits"); defaults apply to anything it leaves out.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Run this invocation non-speculatively.
        #[arg(long)]
        no_speculation: bool,
    },
    /// Run the platform behind an HTTP API compatible with Apache OpenWhisk.
    Serve {
        /// Address to listen on [default: the config's [server] listen, else 127.0.0.1:3233].
        #[arg(long, env = "SPECFAAS_LISTEN")]
        listen: Option<std::net::SocketAddr>,
        /// Where the embedded store, and the first key (`auth`), live [default: the config's [server] data_dir,
        /// else .specfaas].
        #[arg(long, env = "SPECFAAS_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Platform limits, a TOML file (see README, "Limits").
        #[arg(long, env = "SPECFAAS_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Administer a server's data directory.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Activation records: from a server (default), or from a local data directory with --data-dir.
    Activation {
        #[command(subcommand)]
        command: ActivationCommand,
    },
    /// Actions on a server: create, update, invoke, get, list, delete.
    Action {
        #[command(flatten)]
        server: ServerArgs,
        #[command(subcommand)]
        command: ActionCommand,
    },
    /// ASL workflows on a server: create, update, invoke, get, list, delete.
    Workflow {
        #[command(flatten)]
        server: ServerArgs,
        #[command(subcommand)]
        command: WorkflowCommand,
    },
    /// Remember the API host and key for the client commands (like `wsk property set`).
    Property {
        #[command(subcommand)]
        command: PropertyCommand,
    },
    /// Benchmarks; results go to stdout as Markdown and, with --json, to a file.
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// API keys (`uuid:key`) of a namespace.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Print a new `uuid:key` for NAMESPACE.
    Create {
        namespace: String,
        #[arg(long, default_value = ".specfaas")]
        data_dir: PathBuf,
    },
    /// List NAMESPACE's keys (their uuids; keys themselves are stored hashed).
    List {
        namespace: String,
        #[arg(long, default_value = ".specfaas")]
        data_dir: PathBuf,
    },
    /// Revoke one of NAMESPACE's keys, by uuid.
    Revoke {
        namespace: String,
        uuid: String,
        #[arg(long, default_value = ".specfaas")]
        data_dir: PathBuf,
    },
}

#[derive(clap::Args, Clone)]
struct ServerArgs {
    /// The server, e.g. http://127.0.0.1:3233 [env: SPECFAAS_APIHOST, else `property set`].
    #[arg(long, global = true)]
    apihost: Option<String>,
    /// The key, `uuid:key` [env: SPECFAAS_AUTH, else `property set`].
    #[arg(long, global = true)]
    auth: Option<String>,
}

#[derive(Subcommand)]
enum PropertyCommand {
    Set {
        #[arg(long)]
        apihost: Option<String>,
        #[arg(long)]
        auth: Option<String>,
    },
}

/// What an action is made of: a code file, or a sequence of other actions.
#[derive(clap::Args)]
struct ActionSource {
    name: String,
    /// The code file (kind from --kind or the extension).
    file: Option<PathBuf>,
    #[arg(long)]
    kind: Option<String>,
    #[arg(long)]
    main: Option<String>,
    /// Make a sequence of these actions instead, comma-separated.
    #[arg(long)]
    sequence: Option<String>,
    /// Bound parameter, KEY=VALUE (VALUE as JSON when it parses).
    #[arg(long = "param", short = 'p')]
    params: Vec<String>,
}

/// How to invoke an action or workflow.
#[derive(clap::Args)]
struct InvokeArgs {
    name: String,
    /// Parameter, KEY=VALUE (VALUE as JSON when it parses).
    #[arg(long = "param", short = 'p')]
    params: Vec<String>,
    /// Wait for the activation and print its record.
    #[arg(long, short = 'b')]
    blocking: bool,
    /// Wait and print only the result.
    #[arg(long, short = 'r')]
    result: bool,
}

#[derive(Subcommand)]
enum ActionCommand {
    /// Create an action from a code file or --sequence a,b,c.
    Create(ActionSource),
    /// Like create, replacing an existing action.
    Update(ActionSource),
    /// Invoke an action (non-blocking unless --blocking or --result).
    Invoke(InvokeArgs),
    Get {
        name: String,
    },
    List,
    Delete {
        name: String,
    },
}

#[derive(Subcommand)]
enum WorkflowCommand {
    /// Create a workflow from an ASL file (JSON or YAML).
    Create {
        name: String,
        file: PathBuf,
    },
    /// Like create, replacing an existing workflow.
    Update {
        name: String,
        file: PathBuf,
    },
    /// Invoke a workflow (non-blocking unless --blocking or --result).
    Invoke(InvokeArgs),
    Get {
        name: String,
    },
    List,
    Delete {
        name: String,
    },
}

#[derive(Subcommand)]
enum ActivationCommand {
    /// List records, newest first.
    List {
        /// Read a local data directory instead of a server.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[command(flatten)]
        server: ServerArgs,
        /// Only records of this function or application.
        #[arg(long)]
        name: Option<String>,
        #[arg(long, default_value_t = 30)]
        limit: usize,
        #[arg(long, default_value_t = 0)]
        skip: usize,
    },
    /// Print one record.
    Get {
        id: String,
        /// Read a local data directory instead of a server.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Print an activation's logs (from a server).
    Logs {
        id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Print an activation's response (from a server).
    Result {
        id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Hand-off cost between functions on a chain of no-op functions, native and Python (and Node.js).
    Handoff {
        /// Functions in the chain.
        #[arg(long, default_value_t = 10)]
        chain: usize,
        /// Measured invocations per runtime (after warm-up).
        #[arg(long, default_value_t = 200)]
        iterations: usize,
        /// Also write the results as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// The engine's own cost per function launch and commit, and per buffered access (in-process, no I/O).
    Engine {
        #[arg(long, default_value_t = 2000)]
        iterations: usize,
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// The examples (smarthome, travel) with speculation off and on, interleaved in one run.
    Examples {
        /// The examples directory.
        #[arg(long, default_value = "examples")]
        dir: PathBuf,
        #[arg(long, default_value_t = 200)]
        iterations: usize,
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Concurrent HTTP clients against `specfaas serve`: throughput, p50/p99, nothing lost or duplicated.
    Load {
        #[arg(long, default_value_t = 8)]
        clients: usize,
        /// Requests per client and target.
        #[arg(long, default_value_t = 50)]
        requests: usize,
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// The SpecFaaS paper's evaluation: its 16 applications (examples/paper) with speculation off and on, at
    /// three loads; speedup, oracle bound, tail latency, throughput, hit-rate sweep, CPU. Progress on stderr, the
    /// Markdown report on stdout.
    Paper {
        /// All 16 applications at one load with short runs (under two minutes); proves the harness works.
        #[arg(long)]
        quick: bool,
        /// Seeds inputs and arrivals.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// The examples directory (holding paper/).
        #[arg(long, default_value = "examples")]
        dir: PathBuf,
        /// Only these applications (comma-separated names, such as login,tcktapp,ali1).
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// Also write the report (report.md), its SVG plots and results.json into this directory.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Also write the results as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Latency of killing a running activation (the cost of a squash), per runtime.
    Kill {
        /// Kills per runtime.
        #[arg(long, default_value_t = 100)]
        iterations: usize,
        /// Also write the results as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

/// The store `serve` and `run` use in `data_dir`, for the admin and activation commands.
fn open_store(data_dir: &Path) -> anyhow::Result<Arc<dyn Store>> {
    Ok(platform::embedded_store(data_dir)?)
}

fn print(value: &Value) {
    println!("{}", serde_json::to_string_pretty(value).expect("JSON prints"));
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    match dispatch(cli.command).await {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}

async fn dispatch(command: Command) -> anyhow::Result<i32> {
    match command {
        Command::Run { dir, app, input, data_dir, result, config, no_speculation } => {
            let input: Value =
                serde_json::from_str(&input).with_context(|| format!("--input is not valid JSON: {input}"))?;
            let data_dir = data_dir.unwrap_or_else(|| dir.join(".specfaas"));
            let work = tempfile::Builder::new().prefix("specfaas").tempdir_in("/tmp")?;
            let config = read_config(config)?;
            let platform = platform::Platform::embedded(&data_dir)?.work_dir(work.path()).config(config).build()?;
            let ns = platform::DEFAULT_NAMESPACE;
            platform.deploy_project(ns, &dir).await?;
            let options =
                platform::InvokeOptions { speculation: no_speculation.then_some(false), ..Default::default() };
            let inv = platform.invoke_with(ns, &app, input, options).await?;
            platform.flush_records().await;
            if result {
                print(&inv.result);
            } else {
                let runs: Vec<Value> = inv.runs.iter().map(|r| r.to_json()).collect();
                print(&json!({"result": inv.result, "activation": inv.record.to_json(), "runs": runs}));
            }
            Ok(if inv.status == platform::Status::Success { 0 } else { 3 })
        }
        Command::Serve { listen, data_dir, config } => {
            let (config, limits, server) = read_serve_config(config)?;
            // Flags and environment win over the config file, which wins over the defaults.
            let listen = match listen.or(server.listen) {
                Some(l) => l,
                None => "127.0.0.1:3233".parse()?,
            };
            let data_dir = data_dir.or(server.data_dir).unwrap_or_else(|| PathBuf::from(".specfaas"));
            let options = api::Options { config, limits, ..api::Options::new(listen, data_dir.clone()) };
            // SIGINT (Ctrl-C) and SIGTERM (what service managers and `kill` send) both stop the server cleanly,
            // which removes its work directory. Both are caught from before the port opens, so a signal during the
            // start cannot kill the server without its cleanup.
            use tokio::signal::unix::{SignalKind, signal};
            let (mut interrupt, mut terminate) = (signal(SignalKind::interrupt())?, signal(SignalKind::terminate())?);
            let server = api::Server::start(options).await?;
            if let Some(key) = &server.first_key {
                println!(
                    "created namespace {} with key {} (written to {})",
                    key.namespace,
                    key.auth(),
                    data_dir.join("auth").display()
                );
            }
            println!("specfaas serving on http://{}", server.addr);
            server
                .serve(async move {
                    tokio::select! {
                        _ = interrupt.recv() => {}
                        _ = terminate.recv() => {}
                    }
                })
                .await?;
            Ok(0)
        }
        Command::Admin { command: AdminCommand::Key { command } } => {
            match command {
                KeyCommand::Create { namespace, data_dir } => {
                    let store = open_store(&data_dir)?;
                    println!("{}", api::keys::create(&*store, &namespace).await?.auth());
                }
                KeyCommand::List { namespace, data_dir } => {
                    let store = open_store(&data_dir)?;
                    for (uuid, revoked) in api::keys::list(&*store, &namespace).await? {
                        println!("{uuid}{}", if revoked { " (revoked)" } else { "" });
                    }
                }
                KeyCommand::Revoke { namespace, uuid, data_dir } => {
                    let store = open_store(&data_dir)?;
                    if !api::keys::revoke(&*store, &namespace, &uuid).await? {
                        bail!("namespace {namespace} has no key {uuid}");
                    }
                    println!("revoked {uuid}");
                }
            }
            Ok(0)
        }
        Command::Activation { command } => match command {
            ActivationCommand::List { data_dir: Some(data_dir), name, limit, skip, .. } => {
                let store = open_store(&data_dir)?;
                let query = ActivationQuery { name, limit, skip, ..Default::default() };
                let list = store.list_activations(platform::DEFAULT_NAMESPACE, &query).await?;
                print(&Value::Array(list.into_iter().map(|e| e.record).collect()));
                Ok(0)
            }
            ActivationCommand::List { data_dir: None, server, name, limit, skip } => {
                let target = client::Target::resolve(server.apihost, server.auth)?;
                let mut path = format!("/activations?limit={limit}&skip={skip}&docs=true");
                if let Some(name) = name {
                    path.push_str(&format!("&name={name}"));
                }
                print(&target.call("GET", &path, None)?.1);
                Ok(0)
            }
            ActivationCommand::Get { id, data_dir: Some(data_dir), .. } => {
                let store = open_store(&data_dir)?;
                match store.get_activation(platform::DEFAULT_NAMESPACE, &id).await? {
                    Some(e) => {
                        print(&e.record);
                        Ok(0)
                    }
                    None => bail!("activation {id} not found in {}", data_dir.display()),
                }
            }
            ActivationCommand::Get { id, data_dir: None, server } => {
                remote(server, "GET", &format!("/activations/{id}"), None)
            }
            ActivationCommand::Logs { id, server } => remote(server, "GET", &format!("/activations/{id}/logs"), None),
            ActivationCommand::Result { id, server } => {
                remote(server, "GET", &format!("/activations/{id}/result"), None)
            }
        },
        Command::Property { command: PropertyCommand::Set { apihost, auth } } => {
            client::property_set(apihost, auth)?;
            Ok(0)
        }
        Command::Action { server, command } => match command {
            ActionCommand::Create(source) => put_action(server, source, false),
            ActionCommand::Update(source) => put_action(server, source, true),
            ActionCommand::Invoke(args) => invoke(server, "actions", args),
            ActionCommand::Get { name } => remote(server, "GET", &format!("/actions/{name}"), None),
            ActionCommand::List => remote(server, "GET", "/actions", None),
            ActionCommand::Delete { name } => remote(server, "DELETE", &format!("/actions/{name}"), None),
        },
        Command::Workflow { server, command } => match command {
            WorkflowCommand::Create { name, file } => {
                let body = client::workflow_body(&file)?;
                remote(server, "PUT", &format!("/workflows/{name}"), Some(&body))
            }
            WorkflowCommand::Update { name, file } => {
                let body = client::workflow_body(&file)?;
                remote(server, "PUT", &format!("/workflows/{name}?overwrite=true"), Some(&body))
            }
            WorkflowCommand::Invoke(args) => invoke(server, "workflows", args),
            WorkflowCommand::Get { name } => remote(server, "GET", &format!("/workflows/{name}"), None),
            WorkflowCommand::List => remote(server, "GET", "/workflows", None),
            WorkflowCommand::Delete { name } => remote(server, "DELETE", &format!("/workflows/{name}"), None),
        },
        Command::Bench { command } => match command {
            BenchCommand::Handoff { chain, iterations, json } => {
                emit(&bench::handoff::run(chain, iterations).await?, json)
            }
            BenchCommand::Kill { iterations, json } => emit(&bench::kill::run(iterations).await?, json),
            BenchCommand::Engine { iterations, json } => emit(&bench::engine::run(iterations)?, json),
            BenchCommand::Load { clients, requests, json } => emit(&bench::load::run(clients, requests).await?, json),
            BenchCommand::Paper { quick, seed, dir, only, out, json } => {
                let run = bench::paper::run(bench::paper::Options { quick, seed, examples: dir, only }).await?;
                let report = run.json();
                if let Some(out) = &out {
                    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
                    std::fs::write(out.join("report.md"), run.markdown(Some(out))?)?;
                    std::fs::write(out.join("results.json"), serde_json::to_string_pretty(&report)?)?;
                }
                println!("{}", run.markdown(None)?);
                if let Some(path) = json {
                    std::fs::write(&path, serde_json::to_string_pretty(&report)?)
                        .with_context(|| format!("cannot write {}", path.display()))?;
                }
                let wrong = bench::paper::report::check_json(&report, run.results.len());
                anyhow::ensure!(wrong.is_empty(), "the report is incomplete: {}", wrong.join("; "));
                Ok(0)
            }
            BenchCommand::Examples { dir, iterations, json } => {
                emit(&bench::examples::run(&dir, iterations).await?, json)
            }
        },
    }
}

/// Prints a benchmark's Markdown and, when asked, writes its JSON.
fn emit(report: &dyn bench::Report, json: Option<PathBuf>) -> anyhow::Result<i32> {
    println!("{}", report.markdown());
    if let Some(path) = json {
        std::fs::write(&path, serde_json::to_string_pretty(&report.to_json())?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(0)
}

/// Platform limits from a TOML file; defaults without one.
fn read_config(path: Option<PathBuf>) -> anyhow::Result<platform::Config> {
    let Some(path) = path else { return Ok(platform::Config::default()) };
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let config: platform::Config =
        toml::from_str(&text).with_context(|| format!("{} is not a valid config", path.display()))?;
    config.tables.check().map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(config)
}

/// The `[server]` table of `serve`'s config file.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerTable {
    listen: Option<std::net::SocketAddr>,
    data_dir: Option<PathBuf>,
}

/// `serve`'s config file: the platform's settings, plus `[namespace]` (per-namespace invocation limits) and
/// `[server]` (listen address, data directory).
fn read_serve_config(path: Option<PathBuf>) -> anyhow::Result<(platform::Config, api::NamespaceLimits, ServerTable)> {
    let Some(path) = path else { return Ok(Default::default()) };
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut table: toml::Table =
        toml::from_str(&text).with_context(|| format!("{} is not valid TOML", path.display()))?;
    let limits = match table.remove("namespace") {
        Some(v) => v.try_into().with_context(|| format!("{}: invalid [namespace] limits", path.display()))?,
        None => api::NamespaceLimits::default(),
    };
    let server = match table.remove("server") {
        Some(v) => v.try_into().with_context(|| format!("{}: invalid [server] table", path.display()))?,
        None => ServerTable::default(),
    };
    let config: platform::Config =
        toml::Value::Table(table).try_into().with_context(|| format!("{} is not a valid config", path.display()))?;
    config.tables.check().map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok((config, limits, server))
}

/// One client request, its response printed; exit code 3 when an invocation ended in an error (502).
fn remote(server: ServerArgs, method: &str, path: &str, body: Option<&Value>) -> anyhow::Result<i32> {
    let target = client::Target::resolve(server.apihost, server.auth)?;
    let (status, response) = target.call(method, path, body)?;
    client::print(&response);
    Ok(if status == 502 { 3 } else { 0 })
}

/// Creates (or, with `overwrite`, updates) an action.
fn put_action(server: ServerArgs, source: ActionSource, overwrite: bool) -> anyhow::Result<i32> {
    let ActionSource { name, file, kind, main, sequence, params } = source;
    let body = client::action_body(file.as_deref(), kind, main, sequence, &client::params(&params)?)?;
    let query = if overwrite { "?overwrite=true" } else { "" };
    remote(server, "PUT", &format!("/actions/{name}{query}"), Some(&body))
}

/// Invokes an action or a workflow (`plural` is the route: `actions` or `workflows`).
fn invoke(server: ServerArgs, plural: &str, args: InvokeArgs) -> anyhow::Result<i32> {
    let query = match (args.blocking || args.result, args.result) {
        (true, true) => "?blocking=true&result=true",
        (true, false) => "?blocking=true",
        _ => "",
    };
    remote(server, "POST", &format!("/{plural}/{}{query}", args.name), Some(&client::params(&args.params)?))
}
