//! ASL data-flow primitives: reference paths (`$`, `$.a.b`, `$.items[0]`, `$['odd key']`) and `Parameters` /
//! `ResultSelector` templates (`{"user.$": "$.name", "fixed": 1}`).
//!
//! Reference paths select exactly one node; wildcards, filters and slices are rejected at parse time, as in AWS
//! Step Functions. In a template, a `.$` value may also be a context-object path (`$$.Execution.Id`) or an
//! intrinsic function (`States.Format('{}', $.a)`, see [`crate::intrinsics`]); a plain [`Path`] is always on the
//! state's input.

use serde_json::{Map, Value};

use crate::Error;
use crate::intrinsics::{Env, Intrinsic};

/// One step of a reference path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Field(String),
    Index(usize),
}

/// A parsed reference path. The empty path is `$`, the whole document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    pub segments: Vec<Segment>,
    text: String,
}

impl std::fmt::Display for Path {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl Path {
    /// `$`: the whole document.
    pub fn root() -> Path {
        Path { segments: Vec::new(), text: "$".into() }
    }

    pub fn parse(text: &str) -> Result<Path, Error> {
        let fail = |message: &str| Error::Path { path: text.to_string(), message: message.to_string() };
        if text.starts_with("$$") {
            return Err(fail(
                "the context object ($$) can be read only in Parameters, ResultSelector and ItemSelector",
            ));
        }
        if text.starts_with("States.") {
            return Err(fail(
                "an intrinsic function (States.*) can be used only as a \".$\" value in a template, or as ErrorPath/CausePath",
            ));
        }
        let rest = text.strip_prefix('$').ok_or_else(|| fail("a path must start with '$'"))?;
        let bytes: Vec<char> = rest.chars().collect();
        let mut segments = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                '.' => {
                    let start = i + 1;
                    let mut end = start;
                    while end < bytes.len() && bytes[end] != '.' && bytes[end] != '[' {
                        end += 1;
                    }
                    let field: String = bytes[start..end].iter().collect();
                    if field.is_empty() {
                        return Err(fail("empty field name after '.'"));
                    }
                    if field == "*" || field.contains(['*', '?', '@', '(', ')', ',', ':']) {
                        return Err(fail("only plain field names and [index] are allowed in a reference path"));
                    }
                    segments.push(Segment::Field(field));
                    i = end;
                }
                '[' => {
                    let close = bytes[i..].iter().position(|c| *c == ']').ok_or_else(|| fail("missing ']'"))? + i;
                    let inner: String = bytes[i + 1..close].iter().collect();
                    let quoted = inner
                        .strip_prefix('\'')
                        .and_then(|s| s.strip_suffix('\''))
                        .or_else(|| inner.strip_prefix('"').and_then(|s| s.strip_suffix('"')));
                    if let Some(field) = quoted {
                        segments.push(Segment::Field(field.to_string()));
                    } else if let Ok(index) = inner.parse::<usize>() {
                        segments.push(Segment::Index(index));
                    } else {
                        return Err(fail("only [N] and ['field'] are allowed in brackets"));
                    }
                    i = close + 1;
                }
                c => return Err(fail(&format!("unexpected '{c}'"))),
            }
        }
        Ok(Path { segments, text: text.to_string() })
    }

    /// The node the path selects, if present.
    pub fn get<'a>(&self, value: &'a Value) -> Option<&'a Value> {
        let mut node = value;
        for segment in &self.segments {
            node = match (segment, node) {
                (Segment::Field(f), Value::Object(map)) => map.get(f)?,
                (Segment::Index(i), Value::Array(items)) => items.get(*i)?,
                _ => return None,
            };
        }
        Some(node)
    }

    /// Writes `new` at the path inside `target`, creating objects on the way (ASL `ResultPath` semantics).
    pub fn set(&self, target: &mut Value, new: Value) -> Result<(), String> {
        let mut node = target;
        for segment in &self.segments {
            node = match segment {
                Segment::Field(f) => {
                    if node.is_null() {
                        *node = Value::Object(Map::new());
                    }
                    match node {
                        Value::Object(map) => map.entry(f.clone()).or_insert(Value::Null),
                        other => {
                            return Err(format!(
                                "ResultPath {}: cannot set field \"{f}\" inside a {}",
                                self.text,
                                type_name(other)
                            ));
                        }
                    }
                }
                Segment::Index(i) => match node {
                    Value::Array(items) if *i < items.len() => &mut items[*i],
                    _ => {
                        return Err(format!("ResultPath {}: index {i} does not exist", self.text));
                    }
                },
            };
        }
        *node = new;
        Ok(())
    }
}

pub fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A `Parameters` or `ResultSelector` template: literals, plus `"key.$"` entries whose value is a path on the
/// input, a path on the context object, or an intrinsic function.
#[derive(Debug, Clone, PartialEq)]
pub enum Template {
    Literal(Value),
    Path(Path),
    /// `$$...`: a path on the context object.
    Context(Path),
    Intrinsic(Box<Intrinsic>),
    Object(Vec<(String, Template)>),
    Array(Vec<Template>),
}

/// What a template is evaluated against besides the input: the context object, and the seed of its
/// `States.MathRandom` and `States.UUID` (see [`Env::seed`]).
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    pub context: &'a Value,
    pub seed: u64,
    /// Values no intrinsic function may compute on: an intrinsic whose input path selects one fails. A speculative
    /// walk marks data not known yet this way, so that no intrinsic turns it into a value that looks known.
    pub opaque: Option<fn(&Value) -> bool>,
}

impl Scope<'_> {
    /// For evaluations that have no context object (tests, and data flow outside a workflow).
    pub const EMPTY: Scope<'static> = Scope { context: &Value::Null, seed: 0, opaque: None };
}

/// Parses the value of a `"key.$"` entry, or an `ErrorPath`: an input path, a context path or an intrinsic whose
/// calls nest at most `nesting_max` deep.
pub fn parse_dynamic(text: &str, nesting_max: usize) -> Result<Template, Error> {
    if Intrinsic::is_intrinsic(text) {
        let intrinsic =
            Intrinsic::parse(text, nesting_max).map_err(|message| Error::Path { path: text.to_string(), message })?;
        return Ok(Template::Intrinsic(Box::new(intrinsic)));
    }
    if let Some(rest) = text.strip_prefix('$')
        && rest.starts_with('$')
    {
        return Ok(Template::Context(Path::parse(rest)?));
    }
    Ok(Template::Path(Path::parse(text)?))
}

impl Template {
    /// Parses a template whose intrinsic calls nest at most [`crate::intrinsics::NESTING_DEFAULT`] deep.
    pub fn parse(value: &Value) -> Result<Template, Error> {
        Template::parse_within(value, crate::intrinsics::NESTING_DEFAULT)
    }

    /// Parses a template whose intrinsic calls nest at most `nesting_max` deep.
    pub fn parse_within(value: &Value, nesting_max: usize) -> Result<Template, Error> {
        Ok(match value {
            Value::Object(map) => {
                let mut entries = Vec::with_capacity(map.len());
                for (key, v) in map {
                    if let Some(name) = key.strip_suffix(".$") {
                        let text = v.as_str().ok_or_else(|| Error::Path {
                            path: key.clone(),
                            message: "a key ending in \".$\" needs a path string as its value".into(),
                        })?;
                        entries.push((name.to_string(), parse_dynamic(text, nesting_max)?));
                    } else {
                        entries.push((key.clone(), Template::parse_within(v, nesting_max)?));
                    }
                }
                Template::Object(entries)
            }
            Value::Array(items) => {
                Template::Array(items.iter().map(|v| Template::parse_within(v, nesting_max)).collect::<Result<_, _>>()?)
            }
            other => Template::Literal(other.clone()),
        })
    }

    /// Instantiates the template against `input`. A path that selects nothing is an error, as in Step Functions.
    pub fn eval(&self, input: &Value, scope: Scope) -> Result<Value, String> {
        self.eval_at(input, scope, 0)
    }

    /// `at` numbers the intrinsic calls of one template, so that two `States.UUID()` in it differ.
    fn eval_at(&self, input: &Value, scope: Scope, at: u64) -> Result<Value, String> {
        Ok(match self {
            Template::Literal(v) => v.clone(),
            Template::Path(p) => {
                p.get(input).cloned().ok_or_else(|| format!("the path {p} selects nothing in the input"))?
            }
            Template::Context(p) => p
                .get(scope.context)
                .cloned()
                .ok_or_else(|| format!("the path ${p} selects nothing in the context object"))?,
            Template::Intrinsic(f) => {
                if let Some(opaque) = scope.opaque
                    && f.paths().into_iter().any(|(context, p)| !context && p.get(input).is_some_and(opaque))
                {
                    return Err(format!("{} reads a value not known yet", f.name()));
                }
                let seed = scope.seed ^ at.wrapping_mul(0x9e37_79b9_7f4a_7c15);
                f.eval(&Env { input, context: scope.context, seed })?
            }
            Template::Object(entries) => {
                let mut map = Map::new();
                for (i, (k, t)) in entries.iter().enumerate() {
                    map.insert(k.clone(), t.eval_at(input, scope, at.wrapping_mul(31).wrapping_add(i as u64 + 1))?);
                }
                Value::Object(map)
            }
            Template::Array(items) => Value::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, t)| t.eval_at(input, scope, at.wrapping_mul(31).wrapping_add(i as u64 + 1)))
                    .collect::<Result<_, _>>()?,
            ),
        })
    }

    /// Whether evaluating it reads the context object's `field` (e.g. `"State"`): a walk that does not know that
    /// part of the context yet cannot evaluate it.
    pub fn reads_context(&self, field: &str) -> bool {
        let reads = |p: &Path| match p.segments.first() {
            None => true,
            Some(Segment::Field(f)) => f == field,
            Some(Segment::Index(_)) => false,
        };
        match self {
            Template::Literal(_) | Template::Path(_) => false,
            Template::Context(p) => reads(p),
            Template::Intrinsic(f) => f.paths().into_iter().any(|(context, p)| context && reads(p)),
            Template::Object(entries) => entries.iter().any(|(_, t)| t.reads_context(field)),
            Template::Array(items) => items.iter().any(|t| t.reads_context(field)),
        }
    }

    /// Whether evaluating it reads the context object at all.
    pub fn uses_context(&self) -> bool {
        match self {
            Template::Literal(_) | Template::Path(_) => false,
            Template::Context(_) => true,
            Template::Intrinsic(f) => f.paths().into_iter().any(|(context, _)| context),
            Template::Object(entries) => entries.iter().any(|(_, t)| t.uses_context()),
            Template::Array(items) => items.iter().any(Template::uses_context),
        }
    }

    /// Every input path it reads, intrinsic arguments included.
    pub fn input_paths(&self) -> Vec<&Path> {
        match self {
            Template::Literal(_) | Template::Context(_) => Vec::new(),
            Template::Path(p) => vec![p],
            Template::Intrinsic(f) => f.paths().into_iter().filter(|(c, _)| !c).map(|(_, p)| p).collect(),
            Template::Object(entries) => entries.iter().flat_map(|(_, t)| t.input_paths()).collect(),
            Template::Array(items) => items.iter().flat_map(|t| t.input_paths()).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parse_and_get() {
        let doc = json!({"a": {"b": [10, {"c": "x"}]}, "odd key": 1});
        for (path, expect) in [
            ("$", Some(doc.clone())),
            ("$.a.b[0]", Some(json!(10))),
            ("$.a.b[1].c", Some(json!("x"))),
            ("$['odd key']", Some(json!(1))),
            ("$.a.missing", None),
            ("$.a.b[7]", None),
        ] {
            assert_eq!(Path::parse(path).unwrap().get(&doc).cloned(), expect, "{path}");
        }
    }

    #[test]
    fn rejects_what_asl_rejects() {
        for (path, needle) in [
            ("a.b", "must start with '$'"),
            ("$.a[*]", "brackets"),
            ("$..a", "empty field"),
            ("$$.Execution.Id", "context object"),
            ("States.Format('x')", "intrinsic"),
            ("$.a.*", "plain field"),
        ] {
            let err = Path::parse(path).unwrap_err().to_string();
            assert!(err.contains(needle), "{path}: {err}");
        }
    }

    #[test]
    fn set_creates_objects() {
        let mut doc = json!({"x": 1});
        Path::parse("$.r.s").unwrap().set(&mut doc, json!(true)).unwrap();
        assert_eq!(doc, json!({"x": 1, "r": {"s": true}}));
        let err = Path::parse("$.x.y").unwrap().set(&mut doc, json!(1)).unwrap_err();
        assert!(err.contains("inside a number"), "{err}");
    }

    #[test]
    fn templates() {
        let t = Template::parse(&json!({"u.$": "$.user", "k": [1, {"n.$": "$.n"}]})).unwrap();
        assert_eq!(
            t.eval(&json!({"user": "al", "n": 3}), Scope::EMPTY).unwrap(),
            json!({"u": "al", "k": [1, {"n": 3}]})
        );
        assert!(t.eval(&json!({"user": "al"}), Scope::EMPTY).unwrap_err().contains("$.n"));
        let context = json!({"Execution": {"Id": "e1"}});
        let scope = Scope { context: &context, seed: 7, opaque: None };
        let t = Template::parse(
            &json!({"id.$": "$$.Execution.Id", "both.$": "States.Format('{}-{}', $.n, $$.Execution.Id)"}),
        )
        .unwrap();
        assert_eq!(t.eval(&json!({"n": 3}), scope).unwrap(), json!({"id": "e1", "both": "3-e1"}));
        assert!(t.reads_context("Execution") && !t.reads_context("State"));
        let err = Template::parse(&json!({"x.$": "States.Nope(1)"})).unwrap_err().to_string();
        assert!(err.contains("States.Nope"), "{err}");
    }

    #[test]
    fn no_intrinsic_computes_on_an_opaque_value() {
        fn opaque(v: &Value) -> bool {
            v == "?" || v.as_array().is_some_and(|items| items.iter().any(opaque))
        }
        let scope = Scope { context: &Value::Null, seed: 0, opaque: Some(opaque) };
        let input = json!({"known": "a", "unknown": "?", "list": ["x", "?"]});
        for f in ["States.Format('{}', $.unknown)", "States.Hash($.unknown, 'SHA-256')", "States.ArrayLength($.list)"] {
            let t = Template::parse(&json!({"v.$": f})).unwrap();
            let err = t.eval(&input, scope).unwrap_err();
            assert!(err.contains("not known yet"), "{f}: {err}");
            assert!(t.eval(&json!({"unknown": "b", "list": ["x"]}), scope).is_ok(), "{f} on known data");
        }
        // A path passes the opaque value on as it is, for the caller to see.
        let t = Template::parse(&json!({"v.$": "$.unknown", "k.$": "States.Format('{}', $.known)"})).unwrap();
        assert_eq!(t.eval(&input, scope).unwrap(), json!({"v": "?", "k": "a"}));
    }
}
