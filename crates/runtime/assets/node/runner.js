// specfaas Node.js runner: one warm process per function, one worker thread per running activation.
//
// Node cannot fork, so the Initializer/Handler model maps onto worker_threads: this main thread is the
// Initializer, and each activation runs in a Worker whose isolate has already loaded the code (a warm worker is
// kept ready). Killing an activation is `worker.terminate()`, which stops its JavaScript at once (V8
// TerminateExecution, even inside `while (true) {}`) and leaves this process and the other workers warm. A worker
// that finishes cleanly goes back to the idle pool, as an OpenWhisk container is reused. Each worker has its own
// heap limit (`resourceLimits`), which is how the memory limit is enforced for Node.js.
//
// Usage: node runner.js SOCKET CODE_FILE MAIN MEMORY_MB. Same line-delimited JSON protocol as runner.py; the
// worker opens its own connection to the platform for its activation.
'use strict';
const net = require('net');
const path = require('path');
const { Worker, isMainThread, parentPort, workerData } = require('worker_threads');

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
  const idle = [];
  const busy = new Map(); // activation id -> worker
  const spawn = () => new Promise((resolve, reject) => {
    const w = new Worker(__filename, {
      workerData: { socketPath, codeFile, mainName },
      resourceLimits: { maxOldGenerationSizeMb: Number(memoryMb) },
      stdout: false,
      stderr: false,
    });
    w.once('message', (m) => (m.ready ? resolve(w) : reject(new Error(m.error))));
    w.once('error', reject);
  });
  const replenish = () => {
    if (idle.length === 0) spawn().then((w) => idle.push(w), () => {});
  };
  control.on('connect', () => {
    send(control, { op: 'hello', role: 'init', pid: process.pid });
    spawn().then((w) => { idle.push(w); send(control, { op: 'ready' }); },
      (e) => { send(control, { op: 'init_error', error: String(e && e.message || e) }); control.end(); });
  });
  control.on('close', () => process.exit(0));
  lineReader(control, async (msg) => {
    if (msg.op === 'run') {
      let w = idle.pop();
      if (!w) {
        try { w = await spawn(); } catch (e) {
          send(control, { op: 'exited', id: msg.id, reason: `worker failed to start: ${e.message}` });
          return;
        }
      }
      busy.set(msg.id, w);
      let finished = false;
      const onExit = (code) => {
        if (finished) return;
        finished = true;
        busy.delete(msg.id);
        send(control, { op: 'exited', id: msg.id, code });
        replenish();
      };
      const onError = (e) => {
        if (finished) return;
        finished = true;
        busy.delete(msg.id);
        send(control, { op: 'exited', id: msg.id, reason: String(e && (e.code || e.message) || e) });
        w.terminate();
        replenish();
      };
      w.once('exit', onExit);
      w.once('error', onError);
      w.once('message', () => {
        // The activation is done; the worker is clean and goes back to the pool.
        if (finished) return;
        finished = true;
        w.off('exit', onExit);
        w.off('error', onError);
        busy.delete(msg.id);
        idle.push(w);
      });
      w.postMessage(msg);
    } else if (msg.op === 'kill') {
      const w = busy.get(msg.id);
      if (w) w.terminate();
    }
  });
} else {
  const { socketPath, codeFile, mainName } = workerData;
  let main;
  try {
    main = loadMain(codeFile, mainName);
  } catch (e) {
    parentPort.postMessage({ ready: false, error: `${e.name}: ${e.message}` });
    process.exit(1);
  }
  parentPort.postMessage({ ready: true });
  const sdk = require('specfaas');
  parentPort.on('message', (msg) => {
    const socket = net.createConnection(socketPath);
    socket.on('connect', async () => {
      send(socket, { op: 'hello', role: 'handler', id: msg.id });
      const pendingLog = { stdout: '', stderr: '' };
      const log = (stream) => (chunk, encoding, cb) => {
        pendingLog[stream] += String(chunk);
        let i;
        while ((i = pendingLog[stream].indexOf('\n')) >= 0) {
          send(socket, { op: 'log', stream, line: pendingLog[stream].slice(0, i) });
          pendingLog[stream] = pendingLog[stream].slice(i + 1);
        }
        if (typeof cb === 'function') cb();
        else if (typeof encoding === 'function') encoding();
        return true;
      };
      process.stdout.write = log('stdout');
      process.stderr.write = log('stderr');
      const savedEnv = Object.assign({}, process.env);
      Object.assign(process.env, msg.env || {});
      sdk._attach(socket, lineReader);
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
        if (pendingLog[stream]) send(socket, { op: 'log', stream, line: pendingLog[stream] });
      }
      sdk._detach();
      process.env = savedEnv;
      try {
        send(socket, outcome);
      } catch (e) {
        send(socket, { op: 'error', message: `The action returned a value that is not JSON: ${e.message}` });
      }
      socket.end(() => parentPort.postMessage({ done: msg.id }));
    });
  });
}
