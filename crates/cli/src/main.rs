//! `specfaas`: the one binary. It holds no logic that belongs in a library:
//!
//! - `args`: the command line (`run`, `serve`, `admin key`, the `wsk`-style client commands, `bench`);
//! - `config`: `--config` files;
//! - `client`: the HTTP client behind `action`, `workflow`, `activation` and `property`;
//! - this file: what each subcommand does, by calling the `platform`, `api` and `bench` crates.
//!
//! Exit codes: 0 the invocation succeeded; 1 the command failed before invoking (bad project, bad input);
//! 3 the invocation completed with an error status.

mod args;
mod client;
mod config;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Parser;

use args::*;
use config::{read_config, read_serve_config};
use serde_json::{Value, json};
use storage::{ActivationQuery, Store};

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
        Command::Run { dir, app, input, data_dir, result, config, no_speculation, sandbox: sandbox_flag } => {
            let input: Value =
                serde_json::from_str(&input).with_context(|| format!("--input is not valid JSON: {input}"))?;
            let data_dir = data_dir.unwrap_or_else(|| dir.join(".specfaas"));
            let work = tempfile::Builder::new().prefix("specfaas").tempdir_in("/tmp")?;
            let (config, mut sandbox) = read_config(config)?;
            if let Some(mode) = sandbox_flag {
                sandbox.mode = mode.into();
            }
            let platform = platform::Platform::embedded(&data_dir)?
                .work_dir(work.path())
                .config(config)
                .sandbox(sandbox)
                .build()?;
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
        Command::Serve { listen, data_dir, config, sandbox: sandbox_flag } => {
            let (config, limits, server, mut sandbox) = read_serve_config(config)?;
            if let Some(mode) = sandbox_flag {
                sandbox.mode = mode.into();
            }
            // Flags and environment win over the config file, which wins over the defaults.
            let listen = match listen.or(server.listen) {
                Some(l) => l,
                None => "127.0.0.1:3233".parse()?,
            };
            let data_dir = data_dir.or(server.data_dir).unwrap_or_else(|| PathBuf::from(".specfaas"));
            let options = api::Options { config, limits, sandbox, ..api::Options::new(listen, data_dir.clone()) };
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
            BenchCommand::Fanout { iterations, json } => emit(&bench::fanout::run(iterations).await?, json),
            BenchCommand::Kill { iterations, json } => emit(&bench::kill::run(iterations).await?, json),
            BenchCommand::Held { iterations, json } => emit(&bench::held::run(iterations).await?, json),
            BenchCommand::Engine { iterations, json } => emit(&bench::engine::run(iterations)?, json),
            BenchCommand::Load { clients, requests, json } => emit(&bench::load::run(clients, requests).await?, json),
            BenchCommand::Paper { quick, seed, dir, only, sandbox, out, json } => {
                let options = bench::paper::Options { quick, seed, examples: dir, only, sandbox: sandbox.into() };
                let run = bench::paper::run(options).await?;
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
            BenchCommand::Ablation { piece, seed, dir, only, sandbox, json } => {
                let options = bench::ablation::Options {
                    piece: piece.into(),
                    seed,
                    examples: dir,
                    only,
                    sandbox: sandbox.into(),
                };
                emit(&bench::ablation::run(options).await?, json)
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
