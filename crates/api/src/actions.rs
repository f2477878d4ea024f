//! Actions in OpenWhisk's shapes: a `PUT` body ([`ActionPut`]) checked and turned into the [`Action`] to store,
//! and a stored [`Action`] deployed on the platform. Sequences (`exec.kind: "sequence"`) are applications of the
//! platform. Storing, listing and deleting are `resources`'; redeploying at start is `restore`'s.
//!
//! **Architecture Invariant:** deploying over a deployed action never removes it first. The new version replaces
//! the old in one update of the namespace's deployments, and only once it has loaded, so an invocation always finds
//! the old or the new version, and an update that fails leaves the old one serving.

use base64::Engine as _;
use model::app::Form;
use model::{Annotations, Application, Code, FunctionSpec, Kind};

use crate::documents::{Action, ActionLimits, ActionPut, Exec, KeyValue, SequenceKind, from_map, to_map};
use crate::error::{Error, Result};

/// The version OpenWhisk shows for actions; ours are versioned by their code inside the platform.
const VERSION: &str = "0.0.1";

pub(crate) fn epoch_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A component of a sequence, `/ns/name`, `ns/name` or `name`, as a name in `ns`.
fn component(ns: &str, text: &str) -> Result<String> {
    let parts: Vec<&str> = text.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        [name] => Ok(name.to_string()),
        [owner, name] if *owner == ns || *owner == "_" => Ok(name.to_string()),
        [owner, _] => Err(Error::ForeignComponent {
            component: text.to_string(),
            owner: owner.to_string(),
            namespace: ns.to_string(),
        }),
        _ => Err(Error::Invalid(format!("component '{text}' must be NAME or /NAMESPACE/NAME"))),
    }
}

/// A wasm action's module, from the base64 of `exec.code`.
fn wasm_bytes(code: &str) -> Result<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(code.trim())
        .map_err(|e| Error::Invalid(format!("a wasm action's 'exec.code' must be the module in base64: {e}")))
}

/// Checks a `PUT` body and builds the action to store.
pub(crate) fn definition(ns: &str, name: &str, body: &[u8]) -> Result<Action> {
    let put = ActionPut::parse(body)?;
    let exec = put.exec.ok_or_else(|| Error::Invalid("'exec' is required: {kind, code}".into()))?;
    let kind = exec.kind.ok_or_else(|| Error::Invalid("'exec.kind' is required".into()))?;
    let exec = if kind == "sequence" {
        let components = exec
            .components
            .ok_or_else(|| Error::Invalid("a sequence needs 'exec.components', an array of action names".into()))?;
        let names = components.iter().map(|c| component(ns, c)).collect::<Result<Vec<_>>>()?;
        Exec::Sequence {
            kind: SequenceKind::Sequence,
            components: names.iter().map(|n| format!("/{ns}/{n}")).collect(),
        }
    } else {
        let parsed = Kind::parse(&kind).map_err(Error::Invalid)?;
        if parsed == Kind::Native {
            return Err(Error::Invalid("kind 'native' cannot be deployed over the API".into()));
        }
        let code = exec.code.ok_or_else(|| Error::Invalid("'exec.code' is required".into()))?;
        let main = exec.main.unwrap_or_else(|| "main".into());
        let binary = if parsed == Kind::Wasm {
            wasm_bytes(&code)?;
            true
        } else if exec.binary == Some(true) {
            return Err(Error::Invalid("binary (zip) actions are not supported yet; send the code as text".into()));
        } else {
            false
        };
        Exec::Code { kind: parsed.as_openwhisk().to_string(), code, main, binary }
    };
    let limits = ActionLimits::from_put(put.limits.as_ref())?;
    let parameters = to_map(&put.parameters.unwrap_or_default());
    let mut annotations = to_map(&put.annotations.unwrap_or_default());
    annotations.insert("exec".into(), exec.kind().into());
    Ok(Action {
        namespace: ns.to_string(),
        name: name.to_string(),
        version: VERSION.to_string(),
        publish: false,
        exec,
        limits,
        parameters: from_map(&parameters),
        annotations: from_map(&annotations),
        updated: epoch_ms(),
    })
}

/// Whether `name` is a function of `ns` as actions see it: deployed, and not shadowed by a sequence or workflow
/// of that name (a function that replaced a sequence is served through a function application; see [`deploy`]).
pub(crate) fn is_function(platform: &platform::Platform, ns: &str, name: &str) -> bool {
    platform.has_function(ns, name) && platform.app(ns, name).is_none_or(|a| a.form == Form::Function)
}

/// Whether `name` is a sequence or a workflow of `ns`.
fn is_app(platform: &platform::Platform, ns: &str, name: &str) -> bool {
    platform.app(ns, name).is_some_and(|a| a.form != Form::Function)
}

/// Deploys a stored action on the platform, in place of any deployed version (see the module's invariant).
/// `restoring` tells which names of `ns` are stored but not redeployed yet since the server started.
pub(crate) async fn deploy(
    platform: &platform::Platform,
    ns: &str,
    action: &Action,
    restoring: &(dyn Fn(&str) -> bool + Sync),
) -> Result<()> {
    let name = action.name.as_str();
    let (kind, code, main) = match &action.exec {
        Exec::Sequence { components, .. } => {
            let components: Vec<String> =
                components.iter().map(|c| c.rsplit('/').next().unwrap_or(c).to_string()).collect();
            if let Some(c) = components.iter().find(|c| restoring(c)) {
                return Err(Error::Restoring { what: "action", name: c.clone() });
            }
            if components.iter().any(|c| is_app(platform, ns, c)) {
                return Err(Error::Invalid("a sequence of sequences is not supported yet".into()));
            }
            let app = Application::sequence(name, &components, &|f| is_function(platform, ns, f))
                .map_err(|e| Error::Invalid(e.to_string()))?;
            if platform.has_function(ns, name) {
                // It replaces a function, which sequences and workflows name directly: unload it, so none of them
                // runs the old code. The platform has no call that swaps a function for an application in one
                // update, so an invocation landing between these two calls (no await apart) finds neither.
                platform.remove(ns, name);
            }
            platform.deploy_app(ns, app);
            return Ok(());
        }
        Exec::Code { kind, code, main, .. } => (kind, code, main),
    };
    let kind = Kind::parse(kind).map_err(Error::Invalid)?;
    let code = match kind {
        Kind::Wasm => Code::Wasm { bytes: wasm_bytes(code)?, main: main.clone() },
        _ => Code::Source { text: code.clone(), main: main.clone() },
    };
    let annotations = to_map(&action.annotations).into_iter().filter(|(k, _)| k != "exec").collect();
    let annotations = Annotations::from_map(annotations).map_err(Error::Invalid)?;
    let mut spec = FunctionSpec::new(name, kind, code, action.limits.to_model(), annotations)
        .map_err(|e| Error::Invalid(e.to_string()))?;
    spec.parameters = action.parameters.iter().map(|KeyValue { key, value }| (key.clone(), value.clone())).collect();
    // Loads the new version and swaps it in; on failure the old one is untouched.
    platform.deploy_function(ns, spec).await.map_err(|e| Error::Invalid(e.to_string()))?;
    if is_app(platform, ns, name) {
        // It replaces a sequence, which shadows functions: serve the new function through a function application,
        // swapped in place of the sequence in one update.
        let app = Application::function(name, name, &|f| platform.has_function(ns, f))
            .map_err(|e| Error::Internal(e.to_string()))?;
        platform.deploy_app(ns, app);
    }
    Ok(())
}
