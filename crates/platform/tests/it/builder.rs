//! The platform builder: runtimes plug in, and are asked in the documented order.

use std::sync::Arc;

use model::{FunctionSpec, Kind, Limits};
use platform::{Platform, Status};
use runtime::native::NativeRuntime;
use runtime::{BoxFuture, Runtime, Warm};
use serde_json::json;
use storage::MemoryStore;

use super::{NS, source};

/// A runtime that runs `python:3` functions with native closures registered under their names: a stand-in for
/// any runtime an embedder plugs in.
struct FakePython(NativeRuntime);

impl Runtime for FakePython {
    fn kinds(&self) -> &'static [Kind] {
        &[Kind::Python]
    }

    fn load(&self, spec: Arc<FunctionSpec>) -> BoxFuture<'_, Result<Arc<dyn Warm>, runtime::Error>> {
        let native = FunctionSpec { kind: Kind::Native, code: model::Code::Native, ..(*spec).clone() };
        self.0.load(Arc::new(native))
    }
}

fn fake_python() -> Arc<FakePython> {
    let native = NativeRuntime::new();
    native.register("py", |_, _| async move { Ok(json!({"ran_on": "plugged"})) });
    Arc::new(FakePython(native))
}

const CODE: &str = "def main(args):\n    return {'ran_on': 'process'}\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugged_runtime_runs_its_kinds_before_the_default_ones() {
    let work = tempfile::Builder::new().prefix("sfpb").tempdir_in("/tmp").unwrap();
    let p = Platform::builder(Arc::new(MemoryStore::new()))
        .work_dir(work.path())
        .runtime(fake_python())
        .default_runtimes()
        .build()
        .unwrap();
    p.deploy_function(NS, source("py", Kind::Python, CODE, Limits::default())).await.unwrap();
    let inv = p.invoke(NS, "py", json!({})).await.unwrap();
    assert_eq!((inv.status, inv.result), (Status::Success, json!({"ran_on": "plugged"})));
    // The default runtimes are there too: Node.js runs on the process runtime.
    let node = source("js", Kind::Node, "function main() { return {ran_on: 'node'}; }", Limits::default());
    p.deploy_function(NS, node).await.unwrap();
    assert_eq!(p.invoke(NS, "js", json!({})).await.unwrap().result, json!({"ran_on": "node"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_platform_runs_only_the_runtimes_it_was_built_with() {
    // No default runtimes: native functions and the plugged runtime's kind only.
    let p = Platform::builder(Arc::new(MemoryStore::new())).runtime(fake_python()).build().unwrap();
    p.deploy_function(NS, source("py", Kind::Python, CODE, Limits::default())).await.unwrap();
    assert_eq!(p.invoke(NS, "py", json!({})).await.unwrap().result, json!({"ran_on": "plugged"}));
    let node = source("js", Kind::Node, "function main() { return {}; }", Limits::default());
    let err = p.deploy_function(NS, node).await.unwrap_err();
    assert!(err.to_string().contains("no runtime runs functions of kind nodejs"), "{err}");
    p.native().register("id", |_, input| async move { Ok(input) });
    p.deploy_function(NS, super::native("id")).await.unwrap();
    assert_eq!(p.invoke(NS, "id", json!({"n": 1})).await.unwrap().result, json!({"n": 1}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_runtimes_need_a_work_directory() {
    let err = Platform::builder(Arc::new(MemoryStore::new())).default_runtimes().build().err().expect("refused");
    assert!(err.to_string().contains("work directory"), "{err}");
}
