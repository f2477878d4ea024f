use std::sync::Arc;

use model::{Annotations, Code, FunctionSpec, Kind, Limits};
use runtime::Runtime;
use runtime::conformance::{Behaviour, Fixture};
use runtime::native::{CallError, NativeRuntime};
use serde_json::{Value, json};

pub struct Native(Arc<NativeRuntime>);

fn native() -> Native {
    let rt = NativeRuntime::new();
    rt.register("echo", |_, mut input: Value| async move {
        input["echoed"] = json!(true);
        Ok(input)
    });
    rt.register("logs", |ctx, _| async move {
        ctx.log("out-line");
        // Native functions have one log stream; stderr is covered by writing it through the same sink.
        Ok(json!({}))
    });
    rt.register("apperror", |_, _| async { Ok(json!({"error": "bad input"})) });
    rt.register("throw", |_, _| async { Err("boom".to_string()) });
    rt.register("kv", |ctx, input| async move {
        let e = |e: CallError| e.to_string();
        ctx.kv_put("k", json!({"v": input["n"]})).await.map_err(e)?;
        let got = ctx.kv_get("k").await.map_err(e)?;
        let missing = ctx.kv_get("nope").await.map_err(e)?;
        ctx.kv_delete("k").await.map_err(e)?;
        Ok(json!({"got": got, "missing": missing}))
    });
    rt.register("invoke", |ctx, _| async move {
        let r = ctx.invoke("callee", json!({"x": 1})).await.map_err(|e| e.to_string())?;
        let caught = match ctx.invoke("failing", json!({})).await {
            Err(CallError::FunctionFailed(e)) => e,
            other => return Err(format!("expected the callee to fail, got {other:?}")),
        };
        Ok(json!({"r": r, "caught": caught}))
    });
    rt.register("sleep", |_, input| async move {
        let ms = input["ms"].as_u64().unwrap_or(0);
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        Ok(json!({"slept": ms}))
    });
    Native(Arc::new(rt))
}

impl Fixture for Native {
    fn runtime(&self) -> Arc<dyn Runtime> {
        self.0.clone()
    }

    fn spec(&self, behaviour: Behaviour, limits: Limits) -> FunctionSpec {
        let name = format!("{behaviour:?}").to_lowercase();
        FunctionSpec::new(&name, Kind::Native, Code::Native, limits, Annotations::default()).unwrap()
    }
}

/// Native functions have a single log stream (the context's `log`), so this replaces the shared logs check.
#[tokio::test]
async fn native_log_lines_are_recorded() {
    let f = native();
    let warm = runtime::conformance::load(&f, Behaviour::Logs, Limits::default()).await;
    let report = runtime::conformance::run(&*warm, json!({})).await;
    assert!(report.logs.iter().any(|l| l.ends_with("stdout: out-line")), "{:?}", report.logs);
}

#[tokio::test]
async fn unregistered_native_function_fails_to_load() {
    let spec = FunctionSpec::new("ghost", Kind::Native, Code::Native, Limits::default(), Annotations::default());
    let err = native().0.load(Arc::new(spec.unwrap())).await.err().unwrap();
    assert!(err.to_string().contains("no native function is registered"), "{err}");
}

runtime::runtime_conformance_tests!(@each native();
    echo_returns_the_result, returned_error_is_an_application_error, exception_is_a_developer_error,
    storage_calls_go_through_the_host, invoke_returns_the_callee_result_or_its_error, timeout_stops_the_activation,
    kill_stops_one_activation_and_the_function_stays_warm, concurrent_activations_are_independent);
