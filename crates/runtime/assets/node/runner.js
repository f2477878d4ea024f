// specfaas Node.js runner: one warm process per function, handlers are worker threads.
//
// Node cannot fork, so the Initializer/Handler model maps onto worker_threads: this main thread is the
// Initializer, and each handler is a Worker whose isolate has loaded the code. When the platform asks (`spawn`),
// the main thread starts a worker; the worker opens its own connection to the platform and waits there for
// activations, one at a time, and is reused after a clean finish, as an OpenWhisk container is. Killing a handler
// is `worker.terminate()` on a `kill` message: V8 stops its JavaScript at once, even inside `while (true) {}`,
// and this process and the other workers stay warm. Each worker has its own heap limit (`resourceLimits`), which
// is how the memory limit is enforced for Node.js.
//
// Usage: node runner.js SOCKET CODE_FILE MAIN MEMORY_MB. Same line-delimited JSON protocol as runner.py.
'use strict';
const net = require('net');
const path = require('path');
const { Worker, isMainThread, parentPort, workerData, threadId } = require('worker_threads');

function lineReader(socket, onLine) {
  let buf = '';
  socket.setEncoding('utf8');
  socket.on('data', (chunk) => {
    buf += chunk;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      if (line) onLine(JSON.parse(line));
    }
  });
}

function send(socket, msg) {
  socket.write(JSON.stringify(msg) + '\n');
}

function loadMain(codeFile, mainName) {
  const fs = require('fs');
  const { createRequire } = require('module');
  const code = fs.readFileSync(codeFile, 'utf8');
  const mod = { exports: {} };
  const body = `${code}\n;return (typeof ${mainName} === 'function') ? ${mainName} : undefined;`;
  const factory = new Function('exports', 'require', 'module', '__filename', '__dirname', body);
  const local = factory(mod.exports, createRequire(codeFile), mod, codeFile, path.dirname(codeFile));
  const fn = local || (mod.exports && mod.exports[mainName]) || (typeof mod.exports === 'function' ? mod.exports : undefined);
  if (typeof fn !== 'function') throw new Error(`the code defines no function named '${mainName}'`);
  return fn;
}

if (isMainThread) {
  const [socketPath, codeFile, mainName, memoryMb] = process.argv.slice(2);
  const control = net.createConnection(socketPath);
  const workers = new Map(); // hid (threadId) -> worker
  let ready = false;
  const spawn = () => {
    const w = new Worker(__filename, {
      workerData: { socketPath, codeFile, mainName },
      resourceLimits: { maxOldGenerationSizeMb: Number(memoryMb) },
      stdout: false,
      stderr: false,
    });
    const hid = w.threadId;
    workers.set(hid, w);
    let reported = false;
    const exited = (fields) => {
      if (reported) return;
      reported = true;
      workers.delete(hid);
      send(control, Object.assign({ op: 'exited', hid }, fields));
    };
    w.on('message', (m) => {
      if (m.initError !== undefined) {
        if (!ready) send(control, { op: 'init_error', error: m.initError });
      } else if (m.ready && !ready) {
        ready = true;
        send(control, { op: 'ready' });
      }
    });
    w.on('error', (e) => exited({ reason: String((e && (e.code || e.message)) || e) }));
    w.on('exit', (code) => exited({ code }));
  };
  control.on('connect', () => {
    send(control, { op: 'hello', role: 'init', pid: process.pid });
    spawn(); // loads the code: its outcome is this process's ready or init_error
  });
  control.on('close', () => process.exit(0));
  lineReader(control, (msg) => {
    if (msg.op === 'spawn') {
      spawn();
    } else if (msg.op === 'kill') {
      const w = workers.get(msg.hid);
      if (w) w.terminate();
    }
  });
} else {
  const { socketPath, codeFile, mainName } = workerData;
  let main;
  try {
    main = loadMain(codeFile, mainName);
  } catch (e) {
    parentPort.postMessage({ initError: `${e.name}: ${e.message}` });
    process.exit(1);
  }
  const sdk = require('specfaas');
  const socket = net.createConnection(socketPath);
  let current = null; // the stream buffers of the running activation
  const capture = (stream) => (chunk, encoding, cb) => {
    if (current) {
      current[stream] += String(chunk);
      let i;
      while ((i = current[stream].indexOf('\n')) >= 0) {
        send(socket, { op: 'log', stream, line: current[stream].slice(0, i) });
        current[stream] = current[stream].slice(i + 1);
      }
    }
    if (typeof cb === 'function') cb();
    else if (typeof encoding === 'function') encoding();
    return true;
  };
  process.stdout.write = capture('stdout');
  process.stderr.write = capture('stderr');
  socket.on('connect', () => {
    send(socket, { op: 'hello', role: 'handler', hid: threadId });
    parentPort.postMessage({ ready: true });
  });
  socket.on('close', () => process.exit(0)); // the platform retired this handler
  const onRun = async (msg) => {
    current = { stdout: '', stderr: '' };
    Object.assign(process.env, msg.env || {});
    let outcome;
    try {
      let result = await main(msg.args || {});
      if (result === undefined || result === null) result = {};
      outcome = { op: 'result', value: result };
      JSON.stringify(outcome);
    } catch (e) {
      if (e instanceof Error) {
        process.stderr.write(`${e.stack}\n`);
        outcome = { op: 'error', message: `An error has occurred: ${e.name}: ${e.message}` };
      } else {
        // A rejected promise with a plain value is an application error, as in OpenWhisk.
        outcome = { op: 'result', value: { error: e === undefined ? 'rejected' : e } };
      }
    }
    for (const stream of ['stdout', 'stderr']) {
      if (current[stream]) send(socket, { op: 'log', stream, line: current[stream] });
    }
    current = null;
    try {
      send(socket, outcome);
    } catch (e) {
      send(socket, { op: 'error', message: `The action returned a value that is not JSON: ${e.message}` });
    }
  };
  sdk._attach(socket, lineReader, onRun);
}
