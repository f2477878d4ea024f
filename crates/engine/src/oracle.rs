//! What the engine asks before it speculates: four predictors, one small trait each, learned across invocations.
//!
//! - [`BranchPredictor`]: which way a `Choice` goes after a path, with what probability.
//! - [`Memo`]: the output a function gave last for an input (data speculation; a `pure` function is skipped).
//! - [`CalleePredictor`]: the implicit calls a function made last for an input, to launch them early; and for an
//!   input never seen, the next call on the path of calls made so far, its arguments made from the input and what
//!   earlier calls returned (see [`crate::paths`]).
//! - [`DependencePredictor`]: read-after-write squashes in a row for a producer, consumer and key; at a threshold
//!   the consumer's read waits for the producer instead.
//!
//! [`Oracle`] bundles one of each; each may be replaced alone (a test lies with one and learns with the others).
//! [`Nothing`] predicts nothing and learns nothing. The learning implementations are in [`crate::tables`].
//!
//! **Architecture invariant:** the engine trains the predictors only with non-speculative outcomes: branch targets
//! from concrete walks, memo rows and callees at commit, dependences from squashes and clean committed reads.

use std::sync::Arc;

use serde_json::Value;

/// Predicts `Choice` targets from the path taken so far.
pub trait BranchPredictor: Send + Sync {
    /// The most likely of `targets` for the `Choice` named `choice` after a path whose history hashes to
    /// `history`, with its probability.
    fn predict(&self, choice: &str, history: u64, targets: &[usize]) -> Option<(usize, f64)>;
    /// A concrete walk took `target`.
    fn train(&self, choice: &str, history: u64, target: usize);
}

/// Memoized outputs, by function, version and input.
pub trait Memo: Send + Sync {
    /// The output `function` (at `version`) gave last for this input. For most functions this is a prediction,
    /// checked when the function finishes; for a `pure` function it is trusted and the function is not run, which
    /// is sound because the engine trains the table with committed outputs only.
    fn lookup(&self, function: &str, version: &str, input: &Value) -> Option<Value>;
    /// For an input with no row: the output guessed field by field from what `function` returned on other inputs
    /// ([`crate::fields`]). Never trusted, not even for a `pure` function: only derived on, and validated.
    fn guess(&self, _function: &str, _version: &str, _input: &Value) -> Option<Guess> {
        None
    }
    fn train(&self, function: &str, version: &str, input: &Value, output: &Value);
}

/// An output guessed field by field: known values, objects of guesses, and parts nobody can guess.
#[derive(Debug, Clone, PartialEq)]
pub enum Guess {
    Value(Value),
    Object(Vec<(String, Guess)>),
    Unknown,
}

impl Guess {
    /// Whether any part is known.
    pub fn knows_something(&self) -> bool {
        match self {
            Guess::Value(_) => true,
            Guess::Object(fields) => fields.iter().any(|(_, g)| g.knows_something()),
            Guess::Unknown => false,
        }
    }

    /// The guessed value, with `unknown` in place of each part nobody can guess.
    pub fn fill(&self, unknown: &Value) -> Value {
        match self {
            Guess::Value(v) => v.clone(),
            Guess::Object(fields) => Value::Object(fields.iter().map(|(k, g)| (k.clone(), g.fill(unknown))).collect()),
            Guess::Unknown => unknown.clone(),
        }
    }
}

/// A call a function made (or is predicted to make), and what it returned when that is known.
#[derive(Debug, Clone, PartialEq)]
pub struct Called {
    pub callee: String,
    pub args: Value,
    pub result: Option<Value>,
}

/// What the next slot of a workflow was derived on, while a run's output was not known yet, as records show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputPrediction {
    /// A memo row: the output of this function on exactly this input.
    Exact,
    /// A field-by-field guess ([`crate::fields`]): some fields predicted, the rest unknown.
    Fields,
    /// Nothing: the output was unknown, so only what needs none of it was derived.
    None,
}

/// Why a callee was launched early, as records and metrics show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Prediction {
    /// The caller made this call the last time it ran on exactly this input.
    Exact,
    /// The caller's path of calls so far led to this callee before, and its arguments were made from the input and
    /// earlier results as this call's were.
    Path,
}

/// The implicit calls a function made, by function, version and input, and by path.
pub trait CalleePredictor: Send + Sync {
    /// The functions (with arguments) `function` (at `version`) called, in order, the last time it ran on this
    /// input: the callees to launch early.
    fn predict(&self, function: &str, version: &str, input: &Value) -> Option<Vec<(String, Value)>>;
    /// The call `function` (at `version`) is expected to make after `earlier` on `input` (whose results are given
    /// where known), if its path led to a confirmed template that resolves: see [`crate::paths`]. A result may be a
    /// guess whose unknown parts hold a marker only the engine knows: the engine launches no call whose arguments
    /// hold one.
    fn next(&self, _function: &str, _version: &str, _input: &Value, _earlier: &[Called]) -> Option<(String, Value)> {
        None
    }
    /// A committed run of `function` on `input` made these calls, in order, with these results.
    fn train(&self, function: &str, version: &str, input: &Value, calls: &[Called]);
}

/// Read-after-write dependences between functions, learned from squashes.
pub trait DependencePredictor: Send + Sync {
    /// Consecutive times a write by `producer` to `key` squashed `consumer` for reading it too early.
    fn streak(&self, producer: &str, consumer: &str, key: &str) -> u32;
    /// `producer`'s write to `key` squashed `consumer` once more.
    fn train_squash(&self, producer: &str, consumer: &str, key: &str);
    /// `consumer` committed having read `key` from committed state, with no older function writing it: the
    /// dependences predicted on it did not materialize, and their streaks end.
    fn train_clean_read(&self, consumer: &str, key: &str);
}

/// One predictor of each kind. Cloning is cheap: clones share the predictors.
#[derive(Clone)]
pub struct Oracle {
    pub branches: Arc<dyn BranchPredictor>,
    pub memo: Arc<dyn Memo>,
    pub callees: Arc<dyn CalleePredictor>,
    pub dependences: Arc<dyn DependencePredictor>,
}

impl Oracle {
    /// Predicts nothing and learns nothing: speculation then runs only what it can derive without predictions.
    pub fn nothing() -> Oracle {
        let nothing = Arc::new(Nothing);
        Oracle { branches: nothing.clone(), memo: nothing.clone(), callees: nothing.clone(), dependences: nothing }
    }
}

/// Predicts nothing and learns nothing.
pub struct Nothing;

impl BranchPredictor for Nothing {
    fn predict(&self, _: &str, _: u64, _: &[usize]) -> Option<(usize, f64)> {
        None
    }
    fn train(&self, _: &str, _: u64, _: usize) {}
}

impl Memo for Nothing {
    fn lookup(&self, _: &str, _: &str, _: &Value) -> Option<Value> {
        None
    }
    fn train(&self, _: &str, _: &str, _: &Value, _: &Value) {}
}

impl CalleePredictor for Nothing {
    fn predict(&self, _: &str, _: &str, _: &Value) -> Option<Vec<(String, Value)>> {
        None
    }
    fn train(&self, _: &str, _: &str, _: &Value, _: &[Called]) {}
}

impl DependencePredictor for Nothing {
    fn streak(&self, _: &str, _: &str, _: &str) -> u32 {
        0
    }
    fn train_squash(&self, _: &str, _: &str, _: &str) {}
    fn train_clean_read(&self, _: &str, _: &str) {}
}
