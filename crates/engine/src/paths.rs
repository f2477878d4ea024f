//! Callee paths: the calls a function makes, predicted for inputs never seen, from where their arguments came from
//! before.
//!
//! The callee table ([`crate::tables::CalleeTable`]) predicts the calls a function made on exactly this input. A
//! **path** prediction generalizes it: the table [`PathTable`] is keyed by the function and the callees called so
//! far (the **path**, as the paper's sequence table is), and each row says which callee comes next and how its
//! arguments are made, as an argument **template**: each part of the arguments is a constant, a field of the
//! caller's input, or a field of what an earlier call returned. A template is learned from committed calls by
//! finding where each value of the arguments occurs, and is kept while every later call agrees with it; a part no
//! source explains stays a constant, and a template that stops explaining a call is learned again.
//!
//! A template is used only once it was **confirmed**: a committed call on another input than the one it was
//! learned from matched it. Resolving a template for a new input needs the results of the earlier calls it reads;
//! the engine supplies the real ones, a predicted run's, the memo table's, or a guess ([`crate::fields`]), and a
//! template it cannot resolve (a result not known, or a part of a guess nobody could guess) predicts nothing. Like
//! every prediction, a resolved call is only a guess: a predicted run is bound to a real call only on canonically
//! equal arguments.

use std::hash::{Hash, Hasher};

use serde_json::Value;

use crate::oracle::Called;
use crate::walk::contains_unknown;

/// Where a value is looked for: at most this many nodes of each JSON value searched.
const SEARCH_NODES_MAX: usize = 4096;
/// Sources kept per part of a template (besides the constant).
const SOURCES_MAX: usize = 4;
/// Parts of a template nest no deeper than this.
const DEPTH_MAX: usize = 8;

/// One step into a JSON value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Step {
    Key(String),
    Index(usize),
}

/// Where one part of a call's arguments comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// A field of the caller's input.
    Input(Vec<Step>),
    /// A field of what the caller's call `call` (counted from 0) returned.
    Result { call: usize, path: Vec<Step> },
    /// The same value every time.
    Constant(Value),
}

/// A call's arguments, part by part.
#[derive(Debug, Clone, PartialEq)]
pub enum Template {
    Object(Vec<(String, Template)>),
    Array(Vec<Template>),
    /// A value that comes from any of these sources (all agreed on every call seen since it was learned), the
    /// constant last: it is used only when no other source is left.
    Part(Vec<Source>),
}

pub(crate) fn select<'a>(mut value: &'a Value, path: &[Step]) -> Option<&'a Value> {
    for step in path {
        value = match step {
            Step::Key(k) => value.get(k.as_str())?,
            Step::Index(i) => value.get(*i)?,
        };
    }
    Some(value)
}

/// Paths in `root` where `wanted` occurs, appended to `found` (at most [`SOURCES_MAX`] in all).
pub(crate) fn find_paths(root: &Value, wanted: &Value, found: &mut Vec<Vec<Step>>) {
    let mut visited = 0;
    let mut stack: Vec<(Vec<Step>, &Value)> = vec![(Vec::new(), root)];
    while let Some((path, value)) = stack.pop() {
        visited += 1;
        if visited > SEARCH_NODES_MAX || found.len() >= SOURCES_MAX {
            return;
        }
        if value == wanted {
            found.push(path);
            continue;
        }
        if path.len() >= DEPTH_MAX {
            continue;
        }
        match value {
            // Pushed in reverse, so that earlier fields are found first.
            Value::Object(map) => {
                for (k, v) in map.iter().rev() {
                    let mut p = path.clone();
                    p.push(Step::Key(k.clone()));
                    stack.push((p, v));
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate().rev() {
                    let mut p = path.clone();
                    p.push(Step::Index(i));
                    stack.push((p, v));
                }
            }
            _ => {}
        }
    }
}

impl Source {
    fn resolve<'a>(&'a self, input: &'a Value, earlier: &'a [Called]) -> Option<&'a Value> {
        match self {
            Source::Input(path) => select(input, path),
            Source::Result { call, path } => select(earlier.get(*call)?.result.as_ref()?, path),
            Source::Constant(v) => Some(v),
        }
    }
}

impl Template {
    /// The template that explains `args`: each part found in the input or an earlier result, else constant.
    pub fn learn(args: &Value, input: &Value, earlier: &[Called]) -> Template {
        Self::learn_at(args, input, earlier, 0)
    }

    fn learn_at(args: &Value, input: &Value, earlier: &[Called], depth: usize) -> Template {
        let mut sources = Vec::new();
        if !args.is_null() {
            let mut paths = Vec::new();
            find_paths(input, args, &mut paths);
            sources.extend(paths.drain(..).map(Source::Input));
            for (call, c) in earlier.iter().enumerate() {
                if let Some(result) = &c.result {
                    find_paths(result, args, &mut paths);
                    sources.extend(paths.drain(..).map(|path| Source::Result { call, path }));
                }
            }
            sources.truncate(SOURCES_MAX);
        }
        if sources.is_empty() && depth < DEPTH_MAX {
            match args {
                Value::Object(map) if !map.is_empty() => {
                    let fields =
                        map.iter().map(|(k, v)| (k.clone(), Self::learn_at(v, input, earlier, depth + 1))).collect();
                    return Template::Object(fields);
                }
                Value::Array(items) if !items.is_empty() => {
                    return Template::Array(
                        items.iter().map(|v| Self::learn_at(v, input, earlier, depth + 1)).collect(),
                    );
                }
                _ => {}
            }
        }
        sources.push(Source::Constant(args.clone()));
        Template::Part(sources)
    }

    /// Keeps the sources that explain `args` too; false when the template cannot explain it any more (a part left
    /// with no source, or another shape).
    pub fn refine(&mut self, args: &Value, input: &Value, earlier: &[Called]) -> bool {
        match (self, args) {
            (Template::Part(sources), _) => {
                sources.retain(|s| s.resolve(input, earlier) == Some(args));
                !sources.is_empty()
            }
            (Template::Object(fields), Value::Object(map)) => {
                fields.len() == map.len()
                    && fields.iter_mut().all(|(k, t)| map.get(k).is_some_and(|v| t.refine(v, input, earlier)))
            }
            (Template::Array(items), Value::Array(values)) => {
                items.len() == values.len() && items.iter_mut().zip(values).all(|(t, v)| t.refine(v, input, earlier))
            }
            _ => false,
        }
    }

    /// The arguments for this input and these earlier calls, if every part resolves.
    pub fn resolve(&self, input: &Value, earlier: &[Called]) -> Option<Value> {
        match self {
            // A value that comes from data waits for that data; the constant is for values that come from none.
            Template::Part(sources) => match sources.as_slice() {
                [Source::Constant(v)] => Some(v.clone()),
                // A part of a guessed result that nobody could guess resolves nothing.
                _ => sources
                    .iter()
                    .filter(|s| !matches!(s, Source::Constant(_)))
                    .filter_map(|s| s.resolve(input, earlier))
                    .find(|v| !contains_unknown(v))
                    .cloned(),
            },
            Template::Object(fields) => {
                let mut map = serde_json::Map::new();
                for (k, t) in fields {
                    map.insert(k.clone(), t.resolve(input, earlier)?);
                }
                Some(Value::Object(map))
            }
            Template::Array(items) => items.iter().map(|t| t.resolve(input, earlier)).collect(),
        }
    }
}

/// The path key of the calls `earlier`: a hash of the callees' names, in order.
pub fn path_hash(earlier: &[Called]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for c in earlier {
        c.callee.hash(&mut h);
    }
    earlier.len().hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn called(callee: &str, args: Value, result: Option<Value>) -> Called {
        Called { callee: callee.into(), args, result }
    }

    #[test]
    fn a_template_finds_fields_of_the_input_and_of_earlier_results() {
        let input = json!({"from": "shanghai", "to": "beijing", "date": "2026-12-01"});
        let earlier = vec![
            called("station", json!({"name": "shanghai"}), Some(json!({"id": "sh"}))),
            called("station", json!({"name": "beijing"}), Some(json!({"id": "bj"}))),
        ];
        let args = json!({"from": "sh", "to": "bj", "date": "2026-12-01", "limit": 5});
        let t = Template::learn(&args, &input, &earlier);
        assert_eq!(t.resolve(&input, &earlier), Some(args));
        // A new request: other stations, whose results are known.
        let input2 = json!({"from": "wuhan", "to": "nanjing", "date": "2026-12-03"});
        let earlier2 = vec![
            called("station", json!({"name": "wuhan"}), Some(json!({"id": "wh"}))),
            called("station", json!({"name": "nanjing"}), Some(json!({"id": "nj"}))),
        ];
        assert_eq!(
            t.resolve(&input2, &earlier2),
            Some(json!({"from": "wh", "to": "nj", "date": "2026-12-03", "limit": 5}))
        );
        // An earlier result not known yet: nothing is predicted.
        let unknown = vec![earlier2[0].clone(), called("station", json!({"name": "nanjing"}), None)];
        assert_eq!(t.resolve(&input2, &unknown), None);
        // A guessed result: its known part resolves, its unknown part does not.
        let guessed = |id: Value| called("station", json!({"name": "nanjing"}), Some(json!({"id": id, "x": 1})));
        let partly = vec![earlier2[0].clone(), guessed(json!("nj"))];
        assert_eq!(t.resolve(&input2, &partly).unwrap()["to"], json!("nj"));
        let unknown_id = vec![earlier2[0].clone(), guessed(crate::walk::unknown())];
        assert_eq!(t.resolve(&input2, &unknown_id), None);
    }

    #[test]
    fn refining_keeps_only_the_sources_that_agree_and_fails_on_a_changed_constant() {
        // `x` equals both the input's `a` and `b` the first time; the second call tells them apart.
        let mut t = Template::learn(&json!({"x": 1, "k": "c"}), &json!({"a": 1, "b": 1}), &[]);
        assert!(t.refine(&json!({"x": 2, "k": "c"}), &json!({"a": 2, "b": 3}), &[]));
        assert_eq!(t.resolve(&json!({"a": 7, "b": 8}), &[]), Some(json!({"x": 7, "k": "c"})));
        assert!(!t.refine(&json!({"x": 4, "k": "d"}), &json!({"a": 4, "b": 3}), &[]), "a constant changed");
        assert!(
            !Template::learn(&json!([1]), &json!({}), &[]).refine(&json!([1, 2]), &json!({}), &[]),
            "another shape"
        );
    }

    #[test]
    fn whole_values_and_list_items_are_sources() {
        let earlier =
            vec![called("route", json!({"route": "r1"}), Some(json!({"stations": ["a", "b"], "km": [0, 9]})))];
        let t =
            Template::learn(&json!({"stations": ["a", "b"], "trip": "t2"}), &json!({"trips": ["t1", "t2"]}), &earlier);
        let earlier2 = vec![called("route", json!({"route": "r2"}), Some(json!({"stations": ["c"], "km": [0]})))];
        assert_eq!(
            t.resolve(&json!({"trips": ["t5", "t6"]}), &earlier2),
            Some(json!({"stations": ["c"], "trip": "t6"}))
        );
        assert_eq!(t.resolve(&json!({"trips": ["t5"]}), &earlier2), None, "no second trip: no call");
    }

    #[test]
    fn the_path_is_the_callees_in_order() {
        let a = called("a", json!(1), None);
        let b = called("b", json!(1), None);
        assert_ne!(path_hash(&[a.clone(), b.clone()]), path_hash(&[b.clone(), a.clone()]));
        assert_ne!(path_hash(&[]), path_hash(std::slice::from_ref(&a)));
        assert_eq!(path_hash(std::slice::from_ref(&a)), path_hash(&[called("a", json!(2), Some(json!(3)))]));
    }
}
