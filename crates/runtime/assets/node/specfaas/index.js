// The specfaas function SDK for Node.js.
//
//   const specfaas = require('specfaas');
//   await specfaas.kv.put('user:alice', { visits: 1 });
//   await specfaas.kv.get('user:alice');          // -> { visits: 1 }, or null if absent
//   await specfaas.kv.delete('user:alice');
//   await specfaas.invoke('other-function', { x: 1 });  // resolves to the callee's result
//   await specfaas.http({ url: 'https://example.com/hook', method: 'POST', body: '{}' });
//     // -> { status, headers, body }; an external effect, performed only once this function is non-speculative
//
// Every call goes to the platform over the activation's connection; the platform, not the function, talks to
// storage. Keys are strings and values are JSON. Calls return promises; one with a key that is not a string of
// valid Unicode (a lone surrogate) rejects with a TypeError.
'use strict';

class SpecfaasError extends Error {}
class InvokeError extends SpecfaasError {
  constructor(error) {
    super(typeof error === 'string' ? error : JSON.stringify(error));
    this.error = error;
  }
}

let conn = null;

// Called once per handler by the runner: replies go to waiting calls, `run` messages to `onRun`.
function _attach(socket, lineReader, onRun) {
  let nextRid = 0;
  const waiting = new Map();
  lineReader(socket, (msg) => {
    if (msg.op === 'run') {
      onRun(msg);
      return;
    }
    if (msg.op !== 'reply') return;
    const w = waiting.get(msg.rid);
    if (!w) return;
    waiting.delete(msg.rid);
    if (msg.ok) w.resolve(msg.value === undefined ? null : msg.value);
    else if (msg.kind === 'function') w.reject(new InvokeError(msg.error));
    else w.reject(new SpecfaasError(msg.error || 'platform call failed'));
  });
  conn = {
    call(call, fields) {
      const rid = ++nextRid;
      return new Promise((resolve, reject) => {
        waiting.set(rid, { resolve, reject });
        socket.write(JSON.stringify(Object.assign({}, fields, { op: 'call', rid, call })) + '\n');
      });
    },
  };
}

function call(name, fields) {
  if (!conn) return Promise.reject(new SpecfaasError('specfaas SDK calls are only allowed in a handler'));
  return conn.call(name, fields);
}

// A key as the platform takes it: a string of valid Unicode. Anything else is a TypeError at the call, which the
// function can catch; sent as is, it would break the connection's protocol and end the activation.
function badKey(key) {
  if (typeof key !== 'string') {
    return new TypeError(`specfaas.kv key must be a string, not ${key === null ? 'null' : typeof key}`);
  }
  if (/\p{Surrogate}/u.test(key)) return new TypeError('specfaas.kv key is not valid Unicode (a lone surrogate)');
  return null;
}

function kvCall(name, key, fields) {
  const bad = badKey(key);
  return bad ? Promise.reject(bad) : call(name, Object.assign({ key }, fields));
}

module.exports = {
  kv: {
    get: (key) => kvCall('kv.get', key, {}),
    put: (key, value) => kvCall('kv.put', key, { value }).then(() => undefined),
    delete: (key) => kvCall('kv.delete', key, {}).then(() => undefined),
  },
  invoke: (name, args) => call('invoke', { function: name, args: args === undefined ? {} : args }),
  http: (request) =>
    call('http', {
      request: Object.assign({ method: 'GET', headers: {}, body: null }, typeof request === 'string' ? { url: request } : request),
    }),
  Error: SpecfaasError,
  InvokeError,
  _attach,
};
