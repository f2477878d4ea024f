use std::sync::Arc;

use model::{FunctionSpec, Kind, Limits};
use runtime::Runtime;
use runtime::conformance::{Behaviour, Fixture};

pub struct Python;

impl Fixture for Python {
    fn runtime(&self) -> Arc<dyn Runtime> {
        crate::process_runtime()
    }

    fn spec(&self, behaviour: Behaviour, limits: Limits) -> FunctionSpec {
        let code = match behaviour {
            Behaviour::Echo => "def main(args):\n    args['echoed'] = True\n    return args\n",
            Behaviour::Logs => {
                "import sys\ndef main(args):\n    print('out-line')\n    print('err-line', file=sys.stderr)\n    return {}\n"
            }
            Behaviour::AppError => "def main(args):\n    return {'error': 'bad input'}\n",
            Behaviour::Throw => "def main(args):\n    raise ValueError('boom')\n",
            Behaviour::Kv => {
                "import specfaas
def main(args):
    specfaas.kv.put('k', {'v': args['n']})
    got = specfaas.kv.get('k')
    missing = specfaas.kv.get('nope')
    specfaas.kv.delete('k')
    return {'got': got, 'missing': missing}
"
            }
            Behaviour::Invoke => {
                "import specfaas
def main(args):
    r = specfaas.invoke('callee', {'x': 1})
    try:
        specfaas.invoke('failing', {})
        caught = None
    except specfaas.InvokeError as e:
        caught = e.error
    return {'r': r, 'caught': caught}
"
            }
            Behaviour::Sleep => {
                "import time\ndef main(args):\n    time.sleep(args['ms'] / 1000)\n    return {'slept': args['ms']}\n"
            }
        };
        crate::source(&format!("py-{behaviour:?}").to_lowercase(), Kind::Python, code, limits)
    }
}

runtime::runtime_conformance_tests!(Python);
