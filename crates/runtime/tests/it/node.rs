use std::sync::Arc;

use model::{FunctionSpec, Kind, Limits};
use runtime::Runtime;
use runtime::conformance::{Behaviour, Fixture};

pub struct Node;

impl Fixture for Node {
    fn runtime(&self) -> Arc<dyn Runtime> {
        crate::process_runtime()
    }

    fn spec(&self, behaviour: Behaviour, limits: Limits) -> FunctionSpec {
        let code = match behaviour {
            Behaviour::Echo => "function main(params) { params.echoed = true; return params; }",
            Behaviour::Logs => "function main() { console.log('out-line'); console.error('err-line'); return {}; }",
            // The `exports.main` form of OpenWhisk actions.
            Behaviour::AppError => "exports.main = () => ({ error: 'bad input' });",
            Behaviour::Throw => "function main() { throw new Error('boom'); }",
            Behaviour::Kv => {
                "const specfaas = require('specfaas');
async function main(p) {
  await specfaas.kv.put('k', { v: p.n });
  const got = await specfaas.kv.get('k');
  const missing = await specfaas.kv.get('nope');
  await specfaas.kv.delete('k');
  return { got, missing };
}"
            }
            Behaviour::Invoke => {
                "const specfaas = require('specfaas');
async function main() {
  const r = await specfaas.invoke('callee', { x: 1 });
  let caught = null;
  try { await specfaas.invoke('failing', {}); } catch (e) { caught = e.error; }
  return { r, caught };
}"
            }
            Behaviour::Sleep => {
                "function main(p) { return new Promise((resolve) => setTimeout(() => resolve({ slept: p.ms }), p.ms)); }"
            }
        };
        crate::source(&format!("js-{behaviour:?}").to_lowercase(), Kind::Node, code, limits)
    }
}

runtime::runtime_conformance_tests!(Node);
