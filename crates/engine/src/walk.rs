//! [`Engine`]: walks one invocation's program, function by function, in program order.

use std::collections::HashMap;
use std::sync::Arc;

use model::workflow::{Graph, Next, StateId, StateKind, select_path};
use model::{Application, Program};
use serde_json::{Value, json};

use crate::buffer::DataBuffer;
use crate::{Action, Call, Catalog, Completion, Config, Event, Outcome, Reply, RequestId, RunId, Status};

/// Where a frame's graph sits: `(Parallel state, branch index)` pairs from the top-level graph down.
type GraphPath = Vec<(StateId, usize)>;

enum Frame {
    /// Walking a graph; `input` is the raw input of `state`.
    Graph { path: GraphPath, state: StateId, input: Value },
    /// Collecting branch outputs of the Parallel state the Graph frame below this one is at.
    Parallel { raw: Value, effective: Value, results: Vec<Value> },
}

struct Run {
    caller: Option<(RunId, RequestId)>,
    depth: u32,
    running: bool,
}

/// What the top level is waiting for.
enum Waiting {
    Nothing,
    /// A Task state's run, or the entry function of an implicit chain.
    Run(RunId),
    /// The commit of that run, then continue with its result.
    Commit(RunId, Value),
}

/// The state machine of one invocation. See the crate docs.
pub struct Engine {
    app: Arc<Application>,
    catalog: Arc<Catalog>,
    config: Config,
    buffer: DataBuffer,
    runs: Vec<Run>,
    frames: Vec<Frame>,
    waiting: Waiting,
    /// Outstanding store reads: request → run.
    reads: HashMap<RequestId, RunId>,
    steps: u32,
    path: Vec<String>,
    done: bool,
}

fn graph_at<'a>(root: &'a Graph, path: &[(StateId, usize)]) -> &'a Graph {
    path.iter().fold(root, |g, (state, branch)| match &g.states[*state].kind {
        StateKind::Parallel { branches, .. } => &branches[*branch],
        _ => unreachable!("graph paths only pass through Parallel states"),
    })
}

fn qualified(root: &Graph, path: &[(StateId, usize)], state: StateId) -> String {
    let mut name = String::new();
    let mut g = root;
    for (s, b) in path {
        name.push_str(&format!("{}/{b}/", g.states[*s].name));
        g = graph_at(g, &[(*s, *b)]);
    }
    name.push_str(&g.states[state].name);
    name
}

impl Engine {
    pub fn new(app: Arc<Application>, catalog: Arc<Catalog>, config: Config) -> Self {
        Engine {
            app,
            catalog,
            config,
            buffer: DataBuffer::default(),
            runs: Vec::new(),
            frames: Vec::new(),
            waiting: Waiting::Nothing,
            reads: HashMap::new(),
            steps: 0,
            path: Vec::new(),
            done: false,
        }
    }

    /// Whether the invocation has completed.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Applies one event; returns what the platform must do, in order.
    pub fn step(&mut self, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        if self.done {
            // Late events (a callee finishing after its caller failed) change nothing.
            if let Event::Call { run, request, .. } = event {
                out.push(Action::Reply { run, request, reply: Reply::Refused("the invocation is over".into()) });
            }
            return out;
        }
        match event {
            Event::Start { input } => self.start(input, &mut out),
            Event::Call { run, request, call } => self.call(run, request, call, &mut out),
            Event::StoreRead { run, request, value, .. } => {
                if self.reads.remove(&request).is_some() && self.is_running(run) {
                    out.push(Action::Reply { run, request, reply: Reply::Ok(value.unwrap_or(Value::Null)) });
                }
            }
            Event::Finished { run, outcome } => self.finished(run, outcome, &mut out),
            Event::Committed { run } => {
                if let Waiting::Commit(r, result) = std::mem::replace(&mut self.waiting, Waiting::Nothing) {
                    debug_assert_eq!(r, run);
                    self.after_run(result, &mut out);
                }
            }
            Event::CommitFailed { run, error } => {
                let error = json!(format!("committing the writes of run {run} failed: {error}"));
                self.complete(Status::InternalError, json!({ "error": error }), &mut out);
            }
        }
        out
    }

    fn is_running(&self, run: RunId) -> bool {
        self.runs.get(run as usize).is_some_and(|r| r.running)
    }

    /// The run and its callers, innermost first: the order in which its reads look through the buffer.
    fn chain(&self, run: RunId) -> Vec<RunId> {
        let mut chain = vec![run];
        let mut cur = run;
        while let Some((caller, _)) = self.runs[cur as usize].caller {
            chain.push(caller);
            cur = caller;
        }
        chain
    }

    fn start(&mut self, input: Value, out: &mut Vec<Action>) {
        let app = self.app.clone();
        match &app.program {
            Program::Workflow(g) => {
                self.frames.push(Frame::Graph { path: Vec::new(), state: g.start, input });
                self.advance(out);
            }
            Program::Function(f) => {
                if let Some(run) = self.launch(f, input, None, out) {
                    self.waiting = Waiting::Run(run);
                }
            }
        }
    }

    /// Launches a run; `None` (and the invocation failed) when the run budget is spent.
    fn launch(
        &mut self,
        function: &str,
        input: Value,
        caller: Option<(RunId, RequestId)>,
        out: &mut Vec<Action>,
    ) -> Option<RunId> {
        if self.runs.len() as u32 >= self.config.runs_max {
            let error =
                format!("the invocation exceeded its limit of {} function runs (runs_max)", self.config.runs_max);
            self.fail_runtime(error, out);
            return None;
        }
        let run = self.runs.len() as RunId;
        let depth = caller.map_or(0, |(c, _)| self.runs[c as usize].depth + 1);
        self.runs.push(Run { caller, depth, running: true });
        if matches!(self.app.program, Program::Function(_)) {
            self.path.push(function.to_string());
        }
        out.push(Action::Launch { run, function: function.to_string(), input, caller: caller.map(|c| c.0) });
        Some(run)
    }

    fn fail_runtime(&mut self, message: String, out: &mut Vec<Action>) {
        self.complete(Status::ApplicationError, json!({ "error": format!("States.Runtime: {message}") }), out);
    }

    fn complete(&mut self, status: Status, result: Value, out: &mut Vec<Action>) {
        for (i, r) in self.runs.iter_mut().enumerate() {
            if std::mem::replace(&mut r.running, false) {
                out.push(Action::Kill { run: i as RunId });
            }
        }
        self.done = true;
        out.push(Action::Complete(Completion { status, result, path: std::mem::take(&mut self.path) }));
    }

    fn call(&mut self, run: RunId, request: RequestId, call: Call, out: &mut Vec<Action>) {
        let refuse =
            |out: &mut Vec<Action>, m: String| out.push(Action::Reply { run, request, reply: Reply::Refused(m) });
        if !self.is_running(run) {
            return refuse(out, format!("run {run} is not running"));
        }
        let key_ok = |key: &str| -> Result<(), String> {
            if key.is_empty() || key.len() > self.config.key_bytes_max {
                return Err(format!("keys must be 1 to {} bytes long (key_bytes_max)", self.config.key_bytes_max));
            }
            Ok(())
        };
        match call {
            Call::Get { key } => {
                if let Err(m) = key_ok(&key) {
                    return refuse(out, m);
                }
                match self.buffer.read(self.chain(run), &key) {
                    Some(v) => {
                        out.push(Action::Reply { run, request, reply: Reply::Ok(v.clone().unwrap_or(Value::Null)) })
                    }
                    None => {
                        self.reads.insert(request, run);
                        out.push(Action::ReadStore { run, request, key });
                    }
                }
            }
            Call::Put { key, value } => {
                if let Err(m) = key_ok(&key) {
                    return refuse(out, m);
                }
                let size = serde_json::to_vec(&value).map_or(usize::MAX, |v| v.len());
                if size > self.config.value_bytes_max {
                    return refuse(
                        out,
                        format!(
                            "value of {size} bytes for key \"{key}\" is over the limit of {} bytes (value_bytes_max)",
                            self.config.value_bytes_max
                        ),
                    );
                }
                self.write(run, request, key, Some(value), out);
            }
            Call::Delete { key } => {
                if let Err(m) = key_ok(&key) {
                    return refuse(out, m);
                }
                self.write(run, request, key, None, out);
            }
            Call::Invoke { function, args } => {
                if !self.catalog.functions.contains_key(&function) {
                    return refuse(out, format!("function \"{function}\" does not exist"));
                }
                if self.runs[run as usize].depth + 1 > self.config.call_depth_max {
                    return refuse(
                        out,
                        format!("calls nest deeper than {} (call_depth_max)", self.config.call_depth_max),
                    );
                }
                if self.runs.len() as u32 >= self.config.runs_max {
                    return refuse(
                        out,
                        format!(
                            "the invocation reached its limit of {} function runs (runs_max)",
                            self.config.runs_max
                        ),
                    );
                }
                self.launch(&function, args, Some((run, request)), out);
            }
        }
    }

    fn write(&mut self, run: RunId, request: RequestId, key: String, value: Option<Value>, out: &mut Vec<Action>) {
        if !self.buffer.has_written(run, &key) && self.buffer.write_count(run) >= self.config.writes_max {
            let m =
                format!("a function may write at most {} keys before it commits (writes_max)", self.config.writes_max);
            out.push(Action::Reply { run, request, reply: Reply::Refused(m) });
            return;
        }
        self.buffer.write(run, key, value);
        out.push(Action::Reply { run, request, reply: Reply::Ok(Value::Null) });
    }

    fn finished(&mut self, run: RunId, outcome: Outcome, out: &mut Vec<Action>) {
        if !self.is_running(run) {
            return; // killed earlier; its late report changes nothing
        }
        self.runs[run as usize].running = false;
        debug_assert!(
            self.runs[run as usize].caller.is_some() || matches!(self.waiting, Waiting::Run(r) if r == run),
            "a top-level run finishes only while the engine waits for it"
        );
        // Callees still running under a finished run can no longer return anywhere.
        self.kill_callees_of(run, out);
        match (self.runs[run as usize].caller, outcome) {
            (Some((caller, request)), Outcome::Success(result)) => {
                self.buffer.merge_into(run, caller);
                out.push(Action::Reply { run: caller, request, reply: Reply::Ok(result) });
            }
            (Some((caller, request)), Outcome::Failure { error, .. }) => {
                self.buffer.take(run);
                out.push(Action::Reply { run: caller, request, reply: Reply::FunctionFailed(error) });
            }
            (None, Outcome::Success(result)) => {
                let writes = self.buffer.take(run);
                if writes.is_empty() {
                    self.waiting = Waiting::Nothing;
                    self.after_run(result, out);
                } else {
                    self.waiting = Waiting::Commit(run, result);
                    out.push(Action::Commit { run, writes });
                }
            }
            (None, Outcome::Failure { status, error }) => {
                self.buffer.take(run);
                self.complete(status, json!({ "error": error }), out);
            }
        }
    }

    fn kill_callees_of(&mut self, run: RunId, out: &mut Vec<Action>) {
        let mut doomed = vec![run];
        while let Some(parent) = doomed.pop() {
            for (i, r) in self.runs.iter_mut().enumerate() {
                if r.running && r.caller.is_some_and(|(c, _)| c == parent) {
                    r.running = false;
                    out.push(Action::Kill { run: i as RunId });
                    doomed.push(i as RunId);
                }
            }
        }
    }

    /// A top-level run succeeded and its writes committed: continue the program with its result.
    fn after_run(&mut self, result: Value, out: &mut Vec<Action>) {
        let app = self.app.clone();
        let Program::Workflow(root) = &app.program else {
            return self.complete(Status::Success, result, out);
        };
        let Some(Frame::Graph { path, state, input }) = self.frames.last() else {
            unreachable!("a task run finishes while its Graph frame is on top")
        };
        let StateKind::Task { io, next, .. } = &graph_at(root, path).states[*state].kind else {
            unreachable!("the top frame is at the Task state that launched the run")
        };
        match io.output(input, result) {
            Ok(output) => {
                self.goto(*next, output, out);
                self.advance(out);
            }
            Err(e) => self.fail_runtime(e, out),
        }
    }

    fn goto(&mut self, next: Next, output: Value, out: &mut Vec<Action>) {
        match next {
            Next::State(s) => {
                if let Some(Frame::Graph { state, input, .. }) = self.frames.last_mut() {
                    *state = s;
                    *input = output;
                }
            }
            Next::End => self.finish_frame(output, out),
        }
    }

    /// The top Graph frame ended with `output`.
    fn finish_frame(&mut self, output: Value, out: &mut Vec<Action>) {
        self.frames.pop();
        let app = self.app.clone();
        let Program::Workflow(root) = &app.program else { unreachable!("frames exist only for workflows") };
        match self.frames.last_mut() {
            None => self.complete(Status::Success, output, out),
            Some(Frame::Parallel { results, effective, .. }) => {
                results.push(output);
                let done = results.len();
                let effective = effective.clone();
                let Some(Frame::Graph { path, state, .. }) = self.frames.iter().rev().nth(1) else {
                    unreachable!("a Parallel frame sits on the Graph frame of its state")
                };
                let (path, state) = (path.clone(), *state);
                let StateKind::Parallel { branches, io, next } = &graph_at(root, &path).states[state].kind else {
                    unreachable!("the Graph frame under a Parallel frame is at that Parallel state")
                };
                if done < branches.len() {
                    let mut branch_path = path;
                    branch_path.push((state, done));
                    let start = branches[done].start;
                    self.frames.push(Frame::Graph { path: branch_path, state: start, input: effective });
                    return;
                }
                let Some(Frame::Parallel { raw, results, .. }) = self.frames.pop() else { unreachable!() };
                match io.output(&raw, Value::Array(results)) {
                    Ok(output) => self.goto(*next, output, out),
                    Err(e) => self.fail_runtime(e, out),
                }
            }
            Some(Frame::Graph { .. }) => {
                unreachable!("Graph frames nest only under Parallel frames")
            }
        }
    }

    /// Walks states until a function must run or the invocation completes.
    fn advance(&mut self, out: &mut Vec<Action>) {
        let app = self.app.clone();
        let Program::Workflow(root) = &app.program else {
            return;
        };
        while !self.done {
            let Some(Frame::Graph { path, state, input }) = self.frames.last() else {
                return;
            };
            self.steps += 1;
            if self.steps > self.config.steps_max {
                let m = format!(
                    "the invocation exceeded its limit of {} state transitions (steps_max)",
                    self.config.steps_max
                );
                return self.fail_runtime(m, out);
            }
            let (path, state, input) = (path.clone(), *state, input.clone());
            let graph = graph_at(root, &path);
            let st = &graph.states[state];
            self.path.push(qualified(root, &path, state));
            let in_state = |e: String| format!("{e} (state \"{}\")", st.name);
            match &st.kind {
                StateKind::Task { function, io, .. } => {
                    match io.effective_input(&input) {
                        Ok(effective) => {
                            if let Some(run) = self.launch(function, effective, None, out) {
                                self.waiting = Waiting::Run(run);
                            }
                        }
                        Err(e) => self.fail_runtime(in_state(e), out),
                    }
                    return;
                }
                StateKind::Choice { input_path, output_path, rules, default } => {
                    let effective = match select_path(input_path, &input, "InputPath") {
                        Ok(v) => v,
                        Err(e) => return self.fail_runtime(in_state(e), out),
                    };
                    let mut target = None;
                    for (rule, t) in rules {
                        match rule.eval(&effective) {
                            Ok(true) => {
                                target = Some(*t);
                                break;
                            }
                            Ok(false) => {}
                            Err(e) => return self.fail_runtime(in_state(e), out),
                        }
                    }
                    let Some(target) = target.or(*default) else {
                        let error = format!(
                            "States.NoChoiceMatched: no Choice rule matched and there is no Default (state \"{}\")",
                            st.name
                        );
                        return self.complete(Status::ApplicationError, json!({ "error": error }), out);
                    };
                    match select_path(output_path, &effective, "OutputPath") {
                        Ok(output) => self.goto(Next::State(target), output, out),
                        Err(e) => return self.fail_runtime(in_state(e), out),
                    }
                }
                StateKind::Pass { io, result, next } => {
                    let output = io
                        .effective_input(&input)
                        .and_then(|effective| io.output(&input, result.clone().unwrap_or(effective)));
                    match output {
                        Ok(output) => self.goto(*next, output, out),
                        Err(e) => return self.fail_runtime(in_state(e), out),
                    }
                }
                StateKind::Parallel { branches, io, .. } => {
                    let effective = match io.effective_input(&input) {
                        Ok(v) => v,
                        Err(e) => return self.fail_runtime(in_state(e), out),
                    };
                    let mut branch_path = path;
                    branch_path.push((state, 0));
                    let start = branches[0].start;
                    self.frames.push(Frame::Parallel { raw: input, effective: effective.clone(), results: Vec::new() });
                    self.frames.push(Frame::Graph { path: branch_path, state: start, input: effective });
                }
                StateKind::Succeed { input_path, output_path } => {
                    let output = select_path(input_path, &input, "InputPath")
                        .and_then(|v| select_path(output_path, &v, "OutputPath"));
                    match output {
                        Ok(output) => self.finish_frame(output, out),
                        Err(e) => return self.fail_runtime(in_state(e), out),
                    }
                }
                StateKind::Fail { error, cause } => {
                    return self.complete(Status::ApplicationError, json!({ "error": error, "cause": cause }), out);
                }
            }
        }
    }
}
