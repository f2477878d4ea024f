// specfaas Node.js runner: one handler process.
//
// Started by the platform as `node --max-old-space-size=MEMORY_MB runner.js CODE_FILE MAIN`, with its channel to
// the platform on fd 3 (one end of a socket pair the platform made: no one else can reach it). It loads the code,
// reports `ready` (or `init_error`), then runs one activation at a time, and is reused after a clean finish, as an
// OpenWhisk container is. The platform keeps a spare handler started, so loading stays off the invocation's path.
// Killing a handler is SIGKILL from the platform (the whole sandbox goes with it), which stops even
// `while (true) {}`. Same line-delimited JSON protocol as runner.py.
'use strict';
const net = require('net');
const path = require('path');

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

const [codeFile, mainName] = process.argv.slice(2);
const socket = new net.Socket({ fd: 3, readable: true, writable: true });
let main;
try {
  main = loadMain(codeFile, mainName);
} catch (e) {
  socket.end(JSON.stringify({ op: 'init_error', error: `${e.name}: ${e.message}` }) + '\n', () => process.exit(1));
  return;
}
const sdk = require('specfaas');
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
send(socket, { op: 'ready', pid: process.pid });
socket.on('close', () => process.exit(0)); // the platform retired this handler
const env = process.env;
const onRun = async (msg) => {
  current = { stdout: '', stderr: '' };
  for (const [name, value] of Object.entries(msg.env || {})) {
    if (env[name] !== value) env[name] = value;
  }
  let line; // the outcome, serialized once: a result that is not JSON is the action's error
  try {
    let result = await main(msg.args || {});
    if (result === undefined || result === null) result = {};
    line = JSON.stringify({ op: 'result', value: result });
  } catch (e) {
    if (e instanceof Error) {
      process.stderr.write(`${e.stack}\n`);
      // The name and message go up as Lambda reports them, for a workflow's Retry and Catch.
      line = JSON.stringify({
        op: 'error',
        message: `An error has occurred: ${e.name}: ${e.message}`,
        name: String(e.name),
        cause: String(e.message),
      });
    } else {
      // A rejected promise with a plain value is an application error, as in OpenWhisk.
      try {
        line = JSON.stringify({ op: 'result', value: { error: e === undefined ? 'rejected' : e } });
      } catch (err) {
        line = JSON.stringify({ op: 'error', message: `The action returned a value that is not JSON: ${err.message}` });
      }
    }
  }
  for (const stream of ['stdout', 'stderr']) {
    if (current[stream]) send(socket, { op: 'log', stream, line: current[stream] });
  }
  current = null;
  socket.write(line + '\n');
};
sdk._attach(socket, lineReader, onRun);
