#!/usr/bin/env node
// Reference ASL runner for specfaas differential tests.
//
// Reads ONE JSON document from stdin:
//   { "functions_dir": "/abs/dir", "normalize"?: true, "causes"?: "lambda" | "message",
//     "cases": [ { "id", "definition", "input", "context"? } ] }
// runs every case (sequentially, in order) on aws-local-stepfunctions and writes ONE JSON
// document to stdout:
//   { "results": [ { "id", "status": "SUCCEEDED", "output" }
//                | { "id", "status": "FAILED", "error", "cause" }
//                | { "id", "status": "TIMED_OUT", "error": "States.Timeout", "cause" }
//                | { "id", "status": "INVALID", "message" }
//                | { "id", "status": "UNSUPPORTED", "message" } ] }
// Exit code is 0 unless the harness itself is broken (bad stdin, etc.): then non-zero and a
// message on stderr. See README.md for the contract and the package's deviations from AWS.

import { createRequire } from 'node:module';
import fs from 'node:fs';
import path from 'node:path';

// aws-local-stepfunctions 3.x declares node >= 22 and uses Promise.withResolvers (Node 22+).
if (typeof Promise.withResolvers !== 'function') {
  Promise.withResolvers = function withResolvers() {
    let resolve;
    let reject;
    const promise = new this((res, rej) => {
      resolve = res;
      reject = rej;
    });
    return { promise, resolve, reject };
  };
}

// Imported dynamically so the polyfill above is in place first.
const { StateMachine, ExecutionError, ExecutionTimeoutError } = await import('aws-local-stepfunctions');

const require = createRequire(import.meta.url);

// stdout carries exactly one JSON document: anything a function prints (console.log, ...) goes
// to stderr instead.
const writeStdout = process.stdout.write.bind(process.stdout);
process.stdout.write = process.stderr.write.bind(process.stderr);

const LAMBDA_INVOKE = 'arn:aws:states:::lambda:invoke';
// arn:aws:lambda:REGION:ACCOUNT:function:NAME[:VERSION|ALIAS]
const LAMBDA_ARN_RE = /^arn:aws[a-zA-Z-]*:lambda:[^:]*:[^:]*:function:([^:]+)(?::([^:]+))?$/;
// ACCOUNT:function:NAME[:QUALIFIER] (partial ARN accepted by Lambda's FunctionName)
const PARTIAL_ARN_RE = /^[0-9]+:function:([^:]+)(?::([^:]+))?$/;

function die(message) {
  process.stderr.write(`reference.mjs: ${message}\n`);
  process.exit(2);
}

function jsonClone(value) {
  // What crossing Lambda's JSON boundary does to a value: undefined -> null, Dates -> strings, ...
  if (value === undefined) return null;
  const text = JSON.stringify(value);
  return text === undefined ? null : JSON.parse(text);
}

/** Parse a Lambda FunctionName (full ARN, partial ARN, NAME or NAME:QUALIFIER). */
function parseFunctionName(fn) {
  if (typeof fn !== 'string' || fn.length === 0) return null;
  let m = LAMBDA_ARN_RE.exec(fn) || PARTIAL_ARN_RE.exec(fn);
  if (m) return { name: m[1], qualifier: m[2] ?? null };
  if (fn.includes(':') && fn.startsWith('arn:')) return null;
  const [name, qualifier, ...rest] = fn.split(':');
  if (rest.length > 0 || !name) return null;
  return { name, qualifier: qualifier ?? null };
}

function lambdaArn(name, qualifier) {
  return `arn:aws:lambda:us-east-1:123456789012:function:${name}${qualifier ? `:${qualifier}` : ''}`;
}

/** An Error whose name/message become the ASL Error/Cause of the failing state. */
function taskError(name, cause) {
  const err = new Error(cause);
  err.name = name;
  return err;
}

/**
 * The error document AWS Lambda's Node.js runtime (aws-lambda-nodejs-runtime-interface-client,
 * Errors.js toRapidResponse) reports for a thrown value, minus its "trace" (stack lines).
 */
function lambdaErrorPayload(thrown) {
  const errorLike =
    thrown &&
    typeof thrown.name === 'string' && thrown.name &&
    typeof thrown.message === 'string' && thrown.message &&
    typeof thrown.stack === 'string' && thrown.stack;
  if (thrown instanceof Error || errorLike) {
    return { errorType: String(thrown.name), errorMessage: String(thrown.message) };
  }
  try {
    return { errorType: typeof thrown, errorMessage: String(thrown) };
  } catch {
    return { errorType: 'handled', errorMessage: 'callback called with Error argument, but there was a problem while retrieving one or more of its message, name, and stack' };
  }
}

function makeInvoker(functionsDir, causes) {
  const modules = new Map();
  function load(name) {
    if (!/^[A-Za-z0-9_.-]+$/.test(name) || name.startsWith('.')) return null;
    const file = path.join(functionsDir, `${name}.js`);
    if (modules.has(file)) return modules.get(file);
    let mod = null;
    if (fs.existsSync(file)) {
      try {
        mod = require(file);
      } catch (thrown) {
        // What Lambda's Node.js runtime reports when the handler module cannot be loaded.
        const errorType = thrown instanceof SyntaxError ? 'Runtime.UserCodeSyntaxError' : 'Runtime.ImportModuleError';
        mod = { loadError: { errorType, errorMessage: `${thrown && thrown.name}: ${thrown && thrown.message}` } };
      }
    }
    modules.set(file, mod);
    return mod;
  }
  /** Invoke function `name` like Lambda would: JSON in, JSON out, errors as errorType/errorMessage. */
  return async function invoke(name, qualifier, payload) {
    const mod = load(name);
    if (!mod) {
      throw taskError('Lambda.ResourceNotFoundException', `Function not found: ${lambdaArn(name, qualifier)}`);
    }
    if (mod.loadError) throw taskError(mod.loadError.errorType, JSON.stringify(mod.loadError));
    if (typeof mod.main !== 'function') {
      throw taskError(
        'Runtime.HandlerNotFound',
        JSON.stringify({ errorType: 'Runtime.HandlerNotFound', errorMessage: `${name}.main is undefined or not exported` })
      );
    }
    let result;
    try {
      result = await mod.main(jsonClone(payload));
    } catch (thrown) {
      const p = lambdaErrorPayload(thrown);
      // "causes": "message" gives the message alone as the Cause, as specfaas reports it.
      throw taskError(p.errorType, causes === 'message' ? p.errorMessage : JSON.stringify(p));
    }
    return jsonClone(result);
  };
}

/** Handler for one Task state, chosen by its Resource. */
function makeTaskHandler(resource, invoke) {
  if (typeof resource === 'string') {
    const m = LAMBDA_ARN_RE.exec(resource);
    if (m) {
      const [, name, qualifier] = m;
      return (input) => invoke(name, qualifier ?? null, input);
    }
    if (resource === LAMBDA_INVOKE) {
      // Optimized integration: the state's effective input is the (already resolved) Parameters,
      // i.e. { FunctionName, Payload, ... }. AWS calls the function with Payload and returns the
      // Invoke API response; we return it minus SdkHttpMetadata/SdkResponseMetadata.
      return async (input) => {
        const fnName = input && typeof input === 'object' && !Array.isArray(input) ? input.FunctionName : undefined;
        const parsed = parseFunctionName(fnName);
        if (!parsed) {
          throw taskError(
            'States.Runtime',
            `arn:aws:states:::lambda:invoke needs Parameters.FunctionName (a Lambda ARN or name), got ${JSON.stringify(fnName ?? null)}`
          );
        }
        const payload = input.Payload === undefined ? {} : input.Payload;
        const result = await invoke(parsed.name, parsed.qualifier, payload);
        const executedVersion = parsed.qualifier && /^[0-9]+$/.test(parsed.qualifier) ? parsed.qualifier : '$LATEST';
        return { ExecutedVersion: executedVersion, Payload: result, StatusCode: 200 };
      };
    }
  }
  return () => {
    throw taskError('States.Runtime', `reference runner: unsupported Task Resource ${JSON.stringify(resource)}`);
  };
}

/** Every (sub)state machine of a definition: the top level, Parallel branches, Map processors. */
function machinesOf(def, out = []) {
  if (!def || typeof def !== 'object' || !def.States || typeof def.States !== 'object') return out;
  out.push(def);
  for (const state of Object.values(def.States)) {
    if (!state || typeof state !== 'object') continue;
    if (state.Type === 'Parallel' && Array.isArray(state.Branches)) {
      for (const b of state.Branches) machinesOf(b, out);
    }
    if (state.Type === 'Map') {
      machinesOf(state.ItemProcessor, out);
      machinesOf(state.Iterator, out);
    }
  }
  return out;
}

function usesJsonata(value) {
  if (Array.isArray(value)) return value.some(usesJsonata);
  if (value && typeof value === 'object') {
    if (value.QueryLanguage === 'JSONata') return true;
    return Object.values(value).some(usesJsonata);
  }
  return false;
}

const TYPE_TESTS = ['IsNull', 'IsPresent', 'IsNumeric', 'IsString', 'IsBoolean', 'IsTimestamp'];

/** `{Variable, IsNull: false}` -> `{Not: {Variable, IsNull: true}}` (the package never matches `false`). */
function normalizeChoiceRule(rule) {
  if (!rule || typeof rule !== 'object') return rule;
  if (Array.isArray(rule.And)) rule.And = rule.And.map(normalizeChoiceRule);
  if (Array.isArray(rule.Or)) rule.Or = rule.Or.map(normalizeChoiceRule);
  if (rule.Not) rule.Not = normalizeChoiceRule(rule.Not);
  for (const op of TYPE_TESTS) {
    if (rule[op] === false && typeof rule.Variable === 'string') {
      const { Next, Comment } = rule;
      const out = { Not: { Variable: rule.Variable, [op]: true } };
      if (Next !== undefined) out.Next = Next;
      if (Comment !== undefined) out.Comment = Comment;
      return out;
    }
  }
  return rule;
}

function normalizeResultPath(holder) {
  if (holder.ResultPath === '$') delete holder.ResultPath;
  else if (typeof holder.ResultPath === 'string' && holder.ResultPath.startsWith('$[')) {
    holder.ResultPath = `$.${holder.ResultPath.slice(1)}`;
  }
}

/**
 * Rewrite a (validated) definition into an AWS-equivalent one that avoids package bugs whose
 * AWS meaning is unambiguous (see README "Normalizations"). Disabled by `"normalize": false`.
 */
function normalizeDefinition(definition) {
  const def = structuredClone(definition);
  for (const m of machinesOf(def)) {
    for (const state of Object.values(m.States)) {
      if (!state || typeof state !== 'object') continue;
      // ResultPath "$" is AWS's default (result replaces the input); the package instead stores
      // the result under a key literally named "$". It also only strips a leading "$.", so
      // "$['a b']" would land under "$" too: "$.['a b']" is what its path setter understands.
      normalizeResultPath(state);
      for (const c of Array.isArray(state.Catch) ? state.Catch : []) if (c) normalizeResultPath(c);
      // Pass with a falsy Result (0, false, "", null) passes its input through on the package.
      if (state.Type === 'Pass' && 'Result' in state && !state.Result) {
        state.Parameters = state.Result;
        delete state.Result;
      }
      if (state.Type === 'Choice' && Array.isArray(state.Choices)) {
        state.Choices = state.Choices.map(normalizeChoiceRule);
      }
    }
  }
  return def;
}

/**
 * aws-local-stepfunctions keys every override by *state name*, and passes the same overrides to
 * every nested machine (Parallel branches, Map processors). Its validator, like AWS, rejects
 * duplicate state names anywhere in a definition, so a name identifies one Task state.
 */
function overridesFor(definition, invoke) {
  const taskResourceLocalHandlers = {};
  const waitTimeOverrides = {};
  const retryIntervalOverrides = {};
  for (const m of machinesOf(definition)) {
    for (const [name, state] of Object.entries(m.States)) {
      if (!state || typeof state !== 'object') continue;
      if (state.Type === 'Task') taskResourceLocalHandlers[name] = makeTaskHandler(state.Resource, invoke);
      // Every Wait takes 0 ms (the override replaces Seconds/Timestamp/SecondsPath/TimestampPath).
      if (state.Type === 'Wait') waitTimeOverrides[name] = 0;
      // Every retry back-off takes 0 ms (otherwise IntervalSeconds * BackoffRate^n is slept for real).
      if (Array.isArray(state.Retry)) retryIntervalOverrides[name] = 0;
    }
  }
  return { taskResourceLocalHandlers, waitTimeOverrides, retryIntervalOverrides };
}

async function runCase(c, invoke, normalize) {
  const id = c.id;
  if (usesJsonata(c.definition)) {
    return { id, status: 'UNSUPPORTED', message: 'QueryLanguage JSONata is not evaluated by aws-local-stepfunctions' };
  }
  try {
    // Validate the definition exactly as given.
    new StateMachine(c.definition);
  } catch (err) {
    return { id, status: 'INVALID', message: String(err && err.message ? err.message : err) };
  }
  const def = normalize ? normalizeDefinition(c.definition) : c.definition;
  const machine = new StateMachine(def, { validationOptions: { noValidate: true } });
  const runOptions = { overrides: overridesFor(def, invoke) };
  if (c.context !== undefined && c.context !== null) runOptions.context = c.context;
  const input = c.input === undefined ? {} : c.input;
  try {
    const output = await machine.run(input, runOptions).result;
    return { id, status: 'SUCCEEDED', output: output === undefined ? null : output };
  } catch (err) {
    if (err instanceof ExecutionTimeoutError) {
      return { id, status: 'TIMED_OUT', error: 'States.Timeout', cause: err.message };
    }
    const cause = err instanceof ExecutionError ? err.cause : err;
    return {
      id,
      status: 'FAILED',
      error: cause && cause.name !== undefined ? String(cause.name) : 'Error',
      cause: cause && cause.message !== undefined ? String(cause.message) : String(cause),
    };
  }
}

async function main() {
  let text;
  try {
    text = fs.readFileSync(0, 'utf8');
  } catch (err) {
    die(`cannot read stdin: ${err.message}`);
  }
  let doc;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    die(`stdin is not JSON: ${err.message}`);
  }
  if (!doc || typeof doc !== 'object' || !Array.isArray(doc.cases)) die('input must be an object with a "cases" array');
  if (typeof doc.functions_dir !== 'string') die('input must have a "functions_dir" string');
  const invoke = makeInvoker(path.resolve(doc.functions_dir), doc.causes);
  const normalize = doc.normalize !== false;

  // A stray rejection from an abandoned branch must not kill the run (Node 20 would exit 1).
  process.on('unhandledRejection', (reason) => {
    process.stderr.write(`reference.mjs: ignored unhandled rejection: ${reason && reason.stack ? reason.stack : reason}\n`);
  });

  const results = [];
  for (const c of doc.cases) {
    if (!c || typeof c !== 'object' || !('id' in c)) die('every case needs an "id"');
    results.push(await runCase(c, invoke, normalize));
  }
  const out = JSON.stringify({ results }) + '\n';
  // Exit explicitly: a timed-out Task's function may still hold timers.
  writeStdout(out, () => process.exit(0));
}

main().catch((err) => die(err && err.stack ? err.stack : String(err)));
