//! Runtime tests: the conformance suite against each runtime, then process-specific faults.

mod native;
mod node;
mod process_faults;
mod python;
mod wasm;

use std::sync::{Arc, OnceLock};

use model::{Annotations, Code, FunctionSpec, Kind, Limits};
use runtime::process::ProcessRuntime;

/// One process runtime per test binary, in a short temporary directory (it holds Unix sockets).
pub fn process_runtime() -> Arc<ProcessRuntime> {
    static RT: OnceLock<(tempfile::TempDir, Arc<ProcessRuntime>)> = OnceLock::new();
    RT.get_or_init(|| {
        let dir = tempfile::Builder::new().prefix("sfrt").tempdir_in("/tmp").unwrap();
        let rt = Arc::new(ProcessRuntime::new(dir.path()).unwrap());
        (dir, rt)
    })
    .1
    .clone()
}

pub fn source(name: &str, kind: Kind, text: &str, limits: Limits) -> FunctionSpec {
    let code = Code::Source { text: text.into(), main: "main".into() };
    FunctionSpec::new(name, kind, code, limits, Annotations::default()).unwrap()
}
