//! Field guesses: the output of a function on an input it never ran on, predicted field by field.
//!
//! The memo table predicts an output only for an input it saw before. Yet many outputs are, field by field, either
//! a field of the input passed through (`{"user": args.user, ...}`, the first of a list of stores) or nearly always
//! the same value (`{"ok": true}`). A [`Fields`] model learns that for one function and code version, from
//! committed outputs on inputs that had no memo row, so that every figure it keeps is measured on the kind of input
//! it is asked about:
//! - the output's **shapes**: its nested object keys, with how often each shape came out;
//! - per **leaf** of a shape (a value that is not a non-empty object), up to [`CANDIDATES_MAX`] **candidates**,
//!   each an input path or a constant, with how often it was right.
//!
//! A [`Guess`] takes the most frequent shape and, per leaf, the candidate that was right at least [`CONFIDENCE`] of
//! at least [`SEEN_MIN`] times; any other leaf is unknown. A guess is a prediction like a memo row: what the engine
//! derives from it is validated against the real output, never trusted.

use serde_json::Value;

use crate::oracle::Guess;
use crate::paths::{Step, find_paths, select};

/// How often a candidate must have been right to be guessed.
pub const CONFIDENCE: f64 = 0.8;
/// How often a candidate (and a shape) must have been scored before it is guessed.
pub const SEEN_MIN: u32 = 4;
/// Candidates kept per leaf.
pub const CANDIDATES_MAX: usize = 5;
/// Shapes kept per function.
const SHAPES_MAX: usize = 4;
/// Leaves per shape; deeper or further parts of an output are one leaf each.
const LEAVES_MAX: usize = 32;
/// Object nesting a shape follows.
const DEPTH_MAX: usize = 8;
/// A constant bigger than this (as JSON) is not kept: a guess of it would rarely pay for its memory. So a model
/// holds at most 4 shapes × 32 leaves × 5 candidates of 256 bytes, beside its input paths.
const CONSTANT_BYTES_MAX: usize = 256;
/// Counts are halved when one reaches this, so the model follows a change of behaviour.
const COUNT_MAX: u32 = 64;

/// What one function's outputs looked like on inputs seen once.
#[derive(Debug, Default)]
pub struct Fields {
    shapes: Vec<Shape>,
}

#[derive(Debug)]
struct Shape {
    root: Node,
    seen: u32,
}

#[derive(Debug)]
enum Node {
    Object(Vec<(String, Node)>),
    Leaf(Vec<Candidate>),
}

#[derive(Debug)]
struct Candidate {
    source: Source,
    right: u32,
    seen: u32,
}

#[derive(Debug, PartialEq)]
enum Source {
    Input(Vec<Step>),
    Constant(Value),
}

impl Source {
    fn resolve<'a>(&'a self, input: &'a Value) -> Option<&'a Value> {
        match self {
            Source::Input(path) => select(input, path),
            Source::Constant(v) => Some(v),
        }
    }
}

impl Candidate {
    fn accuracy(&self) -> f64 {
        self.right as f64 / self.seen.max(1) as f64
    }

    /// Good enough to guess.
    fn trusted(&self) -> bool {
        self.seen >= SEEN_MIN && self.accuracy() >= CONFIDENCE
    }
}

/// The candidates that explain `value` for `input`: where it occurs in the input, and itself as a constant.
fn candidates(value: &Value, input: &Value) -> Vec<Candidate> {
    let mut paths = Vec::new();
    if !value.is_null() {
        find_paths(input, value, &mut paths);
    }
    let mut found: Vec<Candidate> =
        paths.into_iter().map(|p| Candidate { source: Source::Input(p), right: 1, seen: 1 }).collect();
    found.truncate(CANDIDATES_MAX - 1);
    if serde_json::to_string(value).is_ok_and(|s| s.len() <= CONSTANT_BYTES_MAX) {
        found.push(Candidate { source: Source::Constant(value.clone()), right: 1, seen: 1 });
    }
    found
}

impl Node {
    /// Whether [`Node::learn`] makes an object node of `value` at `depth` with `leaves` taken.
    fn splits(value: &Value, depth: usize, leaves: usize) -> bool {
        matches!(value, Value::Object(map) if !map.is_empty() && depth < DEPTH_MAX && leaves + map.len() <= LEAVES_MAX)
    }

    fn learn(value: &Value, input: &Value, depth: usize, leaves: &mut usize) -> Node {
        match value {
            Value::Object(map) if Self::splits(value, depth, *leaves) => {
                *leaves += map.len();
                let fields = map.iter().map(|(k, v)| (k.clone(), Node::learn(v, input, depth + 1, leaves))).collect();
                Node::Object(fields)
            }
            _ => Node::Leaf(candidates(value, input)),
        }
    }

    /// Object nodes in it: of two shapes an output fits, the one with more is the one it has.
    fn objects(&self) -> usize {
        match self {
            Node::Object(fields) => 1 + fields.iter().map(|(_, n)| n.objects()).sum::<usize>(),
            Node::Leaf(_) => 0,
        }
    }

    /// Whether `value` has this shape: the same keys at every object node (a leaf takes any value).
    fn fits(&self, value: &Value) -> bool {
        match (self, value) {
            (Node::Leaf(_), _) => true,
            (Node::Object(fields), Value::Object(map)) => {
                fields.len() == map.len() && fields.iter().all(|(k, n)| map.get(k).is_some_and(|v| n.fits(v)))
            }
            (Node::Object(_), _) => false,
        }
    }

    /// Scores every candidate against `value`; a leaf no candidate explained gains this value's candidates.
    fn observe(&mut self, value: &Value, input: &Value) {
        match self {
            Node::Object(fields) => {
                for (k, node) in fields {
                    if let Some(v) = value.get(k.as_str()) {
                        node.observe(v, input);
                    }
                }
            }
            Node::Leaf(cands) => {
                let mut explained = false;
                for c in cands.iter_mut() {
                    c.seen += 1;
                    if c.source.resolve(input) == Some(value) {
                        c.right += 1;
                        explained = true;
                    }
                    if c.seen >= COUNT_MAX {
                        // Rounded down, so that fading never lifts a candidate over the confidence it needs.
                        c.seen /= 2;
                        c.right /= 2;
                    }
                }
                if !explained {
                    for new in candidates(value, input) {
                        if cands.iter().any(|c| c.source == new.source) {
                            continue;
                        }
                        if cands.len() >= CANDIDATES_MAX {
                            // The least accurate goes, and of those the least seen; never one good enough to guess,
                            // so that one odd output cannot push out what explains the others.
                            let worst = cands
                                .iter()
                                .enumerate()
                                .filter(|(_, c)| !c.trusted())
                                .min_by(|(_, a), (_, b)| {
                                    a.accuracy().total_cmp(&b.accuracy()).then(a.seen.cmp(&b.seen))
                                })
                                .map(|(i, _)| i);
                            let Some(i) = worst else { break };
                            cands.swap_remove(i);
                        }
                        cands.push(new);
                    }
                }
            }
        }
    }

    fn guess(&self, input: &Value) -> Guess {
        match self {
            Node::Object(fields) => Guess::Object(fields.iter().map(|(k, n)| (k.clone(), n.guess(input))).collect()),
            Node::Leaf(cands) => cands
                .iter()
                .filter(|c| c.trusted())
                .filter_map(|c| Some((c, c.source.resolve(input)?)))
                .max_by(|(a, _), (b, _)| a.accuracy().total_cmp(&b.accuracy()).then(a.seen.cmp(&b.seen)))
                .map_or(Guess::Unknown, |(_, v)| Guess::Value(v.clone())),
        }
    }
}

impl Fields {
    /// A committed run on `input`, which had no memo row, returned `output`.
    pub fn train(&mut self, input: &Value, output: &Value) {
        // The most specific shape the output fits; a shape that is one leaf takes only outputs that are one leaf.
        let leaf = !Node::splits(output, 0, 0);
        let fitting = self
            .shapes
            .iter_mut()
            .filter(|s| matches!(s.root, Node::Leaf(_)) == leaf && s.root.fits(output))
            .max_by_key(|s| s.root.objects());
        match fitting {
            Some(shape) => {
                shape.seen += 1;
                shape.root.observe(output, input);
            }
            None => {
                if self.shapes.len() >= SHAPES_MAX
                    && let Some(i) = self.shapes.iter().enumerate().min_by_key(|(_, s)| s.seen).map(|(i, _)| i)
                {
                    self.shapes.swap_remove(i);
                }
                self.shapes.push(Shape { root: Node::learn(output, input, 0, &mut 0), seen: 1 });
            }
        }
        if self.shapes.iter().any(|s| s.seen >= COUNT_MAX) {
            self.shapes.iter_mut().for_each(|s| s.seen = s.seen.div_ceil(2));
        }
    }

    /// The output guessed for `input`: the most frequent shape, if it came out at least [`CONFIDENCE`] of the
    /// time, with each leaf guessed or unknown. `None` when no leaf can be guessed.
    pub fn guess(&self, input: &Value) -> Option<Guess> {
        let total: u32 = self.shapes.iter().map(|s| s.seen).sum();
        let shape = self.shapes.iter().max_by_key(|s| s.seen)?;
        if shape.seen < SEEN_MIN || (shape.seen as f64) < CONFIDENCE * total as f64 {
            return None;
        }
        let guess = shape.root.guess(input);
        guess.knows_something().then_some(guess)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn trained(pairs: &[(Value, Value)]) -> Fields {
        let mut f = Fields::default();
        for (input, output) in pairs {
            f.train(input, output);
        }
        f
    }

    #[test]
    fn passed_through_fields_and_steady_constants_are_guessed_and_the_rest_is_unknown() {
        // `user` passes through, `ok` is true 9 times in 10, `price` depends on data the model cannot see.
        let pairs: Vec<_> = (0..10)
            .map(|i| {
                let input = json!({"user": format!("u{i}"), "stores": [format!("s{i}"), "s9"]});
                (input, json!({"user": format!("u{i}"), "ok": i != 3, "price": i * 7, "store": format!("s{i}")}))
            })
            .collect();
        let f = trained(&pairs);
        let g = f.guess(&json!({"user": "new", "stores": ["s5", "s1"]})).unwrap();
        assert_eq!(g.fill(&json!("?")), json!({"user": "new", "ok": true, "price": "?", "store": "s5"}));
    }

    #[test]
    fn nothing_is_guessed_before_enough_outputs_or_when_nothing_is_steady() {
        let f = trained(&[(json!({"a": 1}), json!({"ok": true})), (json!({"a": 2}), json!({"ok": true}))]);
        assert_eq!(f.guess(&json!({"a": 3})), None, "seen twice only");
        let f = trained(&(0..20).map(|i| (json!({"a": i}), json!({"v": i * i + 1}))).collect::<Vec<_>>());
        assert_eq!(f.guess(&json!({"a": 3})), None, "no leaf is steady or passed through");
        let shapes: Vec<_> = (0..20)
            .map(|i| (json!({"a": i}), if i % 2 == 0 { json!({"ok": true}) } else { json!({"err": 1}) }))
            .collect();
        assert_eq!(trained(&shapes).guess(&json!({"a": 3})), None, "no shape is steady");
    }

    #[test]
    fn a_change_of_behaviour_is_followed() {
        let mut f = trained(&(0..10).map(|i| (json!({"a": i}), json!({"ok": true}))).collect::<Vec<_>>());
        let ok = |f: &Fields| f.guess(&json!({"a": 99})).map(|g| g.fill(&json!("?")));
        assert_eq!(ok(&f), Some(json!({"ok": true})));
        for i in 10..40 {
            f.train(&json!({"a": i}), &json!({"ok": false}));
        }
        assert_eq!(ok(&f), Some(json!({"ok": false})));
    }

    #[test]
    fn one_odd_output_does_not_push_out_what_explains_the_others() {
        // `v` is always 1; once, it is a value found in many input fields, which would bring many new candidates.
        let mut f = trained(&(0..10).map(|i| (json!({"a": i}), json!({"v": 1}))).collect::<Vec<_>>());
        f.train(&json!({"a": 7, "b": 7, "c": 7, "d": 7, "e": 7}), &json!({"v": 7}));
        let g = f.guess(&json!({"a": 99})).map(|g| g.fill(&json!("?")));
        assert_eq!(g, Some(json!({"v": 1})));
    }

    #[test]
    fn an_output_that_was_once_a_scalar_still_learns_its_object_shape() {
        let mut f = Fields::default();
        f.train(&json!({"a": 0}), &json!(null));
        for i in 1..10 {
            f.train(&json!({"a": i}), &json!({"a": i, "ok": true}));
        }
        let g = f.guess(&json!({"a": 42})).map(|g| g.fill(&json!("?")));
        assert_eq!(g, Some(json!({"a": 42, "ok": true})));
    }

    #[test]
    fn a_scalar_output_is_a_leaf_and_big_outputs_stay_bounded() {
        let f = trained(&(0..6).map(|i| (json!({"x": i}), json!(i))).collect::<Vec<_>>());
        assert_eq!(f.guess(&json!({"x": 41})), Some(Guess::Value(json!(41))));
        // Objects within objects, 10 × 10 keys, and deeper than DEPTH_MAX: the shape follows at most LEAVES_MAX keys
        // and DEPTH_MAX levels, and keeps the rest as single leaves.
        fn nodes(n: &Node, depth: usize) -> (usize, usize) {
            match n {
                Node::Leaf(_) => (1, depth),
                Node::Object(fields) => {
                    fields.iter().map(|(_, n)| nodes(n, depth + 1)).fold((0, depth), |(a, d), (b, e)| (a + b, d.max(e)))
                }
            }
        }
        let inner: serde_json::Map<String, Value> = (0..10).map(|i| (format!("i{i}"), json!(i))).collect();
        let wide: serde_json::Map<String, Value> =
            (0..10).map(|i| (format!("k{i}"), Value::Object(inner.clone()))).collect();
        let mut deep = json!(1);
        for _ in 0..20 {
            deep = json!({"d": deep});
        }
        for output in [Value::Object(wide), deep] {
            let mut f = Fields::default();
            f.train(&json!({}), &output);
            let (leaves, depth) = nodes(&f.shapes[0].root, 0);
            assert!(depth > 1, "the output is split into objects and leaves");
            assert!(depth <= DEPTH_MAX, "{depth} levels");
            assert!(leaves <= LEAVES_MAX, "{leaves} leaves");
        }
    }
}
