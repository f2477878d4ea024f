//! ASL intrinsic functions for states that use the JSONPath query language: `States.Format('Hi {}', $.name)` and
//! the seventeen others. This module owns their syntax (the text of a `"key.$"` value that starts with `States.`),
//! the checks a deploy can make without data (function names, argument counts, literal types and values, nesting
//! depth) and their evaluation against a state's input and the context object.
//!
//! The semantics are those of the AWS Step Functions documentation ("Intrinsic functions for JSONPath states").
//! Where it is silent, the behaviour recorded against AWS itself is followed (how `States.Format` renders objects,
//! how `States.MathAdd` rounds, that `States.StringSplit` drops empty parts, that `States.StringToJson('')` is
//! `null`); each function's notes below say what was chosen.
//!
//! Evaluation is deterministic: no clock and no OS randomness. `States.UUID` and `States.MathRandom` draw from
//! SHA-256 of [`Env::seed`] and the call's position in its expression, so evaluating a call twice gives the same
//! value and two calls in one expression give different ones.
//!
//! Syntax: `States.Name(arg, ...)`, whitespace allowed around arguments. An argument is a string literal in single
//! quotes (escapes `\'`, `\{`, `\}`, `\\`; any other backslash is an error), a JSON number (`3`, `-1.5`, `2e3`),
//! `true`, `false`, `null`, a path into the input (`$`, `$.a.b[0]`, `$['odd key']`, AWS's `$.a.['odd key']`), a path
//! into the context object (`$$`, `$$.Execution.Id`) or a nested call. Workflow variables (`$name`) are not
//! supported.

use std::collections::HashSet;
use std::fmt::Display;

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde_json::{Map, Number, Value};
use sha2::Digest as _;

use crate::path::Path;

/// Deepest nesting of intrinsic calls inside one another that deploys accept by default, and the most a
/// configuration may allow. The outermost call is depth 1. The default is AWS's limit ("You can nest up to 10
/// intrinsic functions within a field"); the maximum keeps the recursive parser and evaluator far from any stack
/// limit. [`Intrinsic::parse`] treats a larger `nesting_max` as `NESTING_MAX`. (AWS's own example of the limit has
/// nine calls at most five deep and calls them "nine nested", so AWS may count calls rather than depth; this
/// module counts depth.)
pub const NESTING_DEFAULT: usize = 10;
pub const NESTING_MAX: usize = 32;

/// Most items `States.ArrayRange` may produce (AWS: "The new array can contain up to 1000 elements").
const RANGE_ITEMS_MAX: i128 = 1000;
/// Most characters the text argument of `States.Base64Encode`, `States.Base64Decode` and `States.Hash` may have.
const TEXT_CHARS_MAX: usize = 10_000;
/// The algorithms `States.Hash` accepts, spelled exactly as AWS spells them.
const HASH_ALGORITHMS: [&str; 5] = ["MD5", "SHA-1", "SHA-256", "SHA-384", "SHA-512"];

/// A parsed intrinsic function call, e.g. `States.Format('Hi {}', $.name)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Intrinsic {
    func: Func,
    args: Vec<Arg>,
    /// Pre-order index of this call in its expression, 0 for the outermost: `States.UUID` and `States.MathRandom`
    /// mix it into their draw so that two calls in one expression differ.
    position: u64,
    /// `States.Format` with a literal template: the text between its `{}` placeholders. An escaped `\{\}` is text
    /// here, which the decoded literal in `args[0]` can no longer tell apart from a placeholder.
    template: Option<Vec<String>>,
}

/// One argument.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    /// `'string'`, `123`, `-1.5`, `true`, `false`, `null`.
    Literal(Value),
    /// `$.a.b` / `$` (input) or `$$.Execution.Id` / `$$` (context object, `context: true`).
    Path {
        context: bool,
        path: Path,
    },
    Call(Box<Intrinsic>),
}

/// What an intrinsic is evaluated against.
pub struct Env<'a> {
    /// The state's input (what `$` refers to).
    pub input: &'a Value,
    /// The context object (what `$$` refers to).
    pub context: &'a Value,
    /// Seeds States.MathRandom and States.UUID: the same seed gives the same values, so that a walk evaluated
    /// twice (the engine re-derives walks) gives the same result. Combined with the call's position in the
    /// expression so that two UUID() calls in one expression differ. Calls in *different* fields of one template
    /// are separate expressions: give each field its own seed (e.g. mix in the field's key) to make them differ.
    pub seed: u64,
}

impl Intrinsic {
    /// Whether `text` looks like an intrinsic call (starts with `States.`), so a caller knows to parse it as one.
    pub fn is_intrinsic(text: &str) -> bool {
        text.trim_start().starts_with("States.")
    }

    /// Parses; the error says what is wrong: an unknown function name (listing the known ones), a wrong argument
    /// count ("States.ArrayGetItem takes 2 arguments, got 3"), a literal of the wrong type or value where that can
    /// be checked without data, bad quoting, nesting deeper than `nesting_max` (at most [`NESTING_MAX`]).
    pub fn parse(text: &str, nesting_max: usize) -> Result<Intrinsic, String> {
        let mut parser = Parser { text, pos: 0, nesting_max: nesting_max.min(NESTING_MAX), calls: 0 };
        parser.skip_ws();
        let call = parser.call(1)?;
        parser.skip_ws();
        if parser.pos < text.len() {
            return Err(parser.error_at(parser.pos, "unexpected text after the closing ')' of the call"));
        }
        Ok(call)
    }

    /// Evaluates; the error says which function failed and why (wrong argument type at run time, limits, bad
    /// base64, a path that selects nothing, ...). The caller reports it as `States.Runtime`.
    pub fn eval(&self, env: &Env) -> Result<Value, String> {
        let mut values = Vec::with_capacity(self.args.len());
        for (i, arg) in self.args.iter().enumerate() {
            values.push(self.arg_value(i, arg, env)?);
        }
        self.apply(values, env).map_err(|message| format!("{}: {message}", self.name()))
    }

    /// Every path this call reads, nested calls included, so a caller can tell whether the inputs are known.
    pub fn paths(&self) -> Vec<(bool /*context*/, &Path)> {
        let mut out = Vec::new();
        self.collect_paths(&mut out);
        out
    }

    /// The function's name, e.g. "States.Format".
    pub fn name(&self) -> &str {
        self.func.name()
    }

    /// The arguments as written.
    pub fn args(&self) -> &[Arg] {
        &self.args
    }

    fn collect_paths<'s>(&'s self, out: &mut Vec<(bool, &'s Path)>) {
        for arg in &self.args {
            match arg {
                Arg::Path { context, path } => out.push((*context, path)),
                Arg::Call(call) => call.collect_paths(out),
                Arg::Literal(_) => {}
            }
        }
    }

    fn arg_value(&self, index: usize, arg: &Arg, env: &Env) -> Result<Value, String> {
        match arg {
            Arg::Literal(value) => Ok(value.clone()),
            Arg::Call(call) => call.eval(env),
            Arg::Path { context, path } => {
                let (root, prefix, what) =
                    if *context { (env.context, "$", "context object") } else { (env.input, "", "input") };
                path.get(root).cloned().ok_or_else(|| {
                    format!(
                        "{}: argument {}: the path {prefix}{path} selects nothing in the {what}",
                        self.name(),
                        index + 1
                    )
                })
            }
        }
    }

    /// Builds a call from its parsed arguments and runs every check that needs no data.
    fn build(func: Func, parsed: Vec<ParsedArg>, position: u64) -> Result<Intrinsic, String> {
        func.check_arity(parsed.len())?;
        let template = match (func, parsed.first()) {
            (Func::Format, Some((_, Some(pieces)))) => Some(pieces.clone()),
            _ => None,
        };
        let args = parsed.into_iter().map(|(arg, _)| arg).collect();
        let call = Intrinsic { func, args, position, template };
        call.check_static().map_err(|message| format!("{}: {message}", call.name()))?;
        Ok(call)
    }

    /// Argument types (literals, and what nested calls return), literal values, the placeholder count of a literal
    /// `States.Format` template, and, when every argument is a literal, the whole call.
    fn check_static(&self) -> Result<(), String> {
        for (i, arg) in self.args.iter().enumerate() {
            let want = self.func.param(i);
            match arg {
                Arg::Literal(value) => {
                    if !want.accepts(Kind::of(value)) {
                        return Err(wrong_type(i + 1, want.described(), value));
                    }
                    self.check_literal(i, value)?;
                }
                Arg::Call(call) => {
                    let have = call.func.returns();
                    if !want.accepts(have) {
                        return Err(format!(
                            "argument {} must be {}, but {} returns {}",
                            i + 1,
                            want.described(),
                            call.name(),
                            have.described()
                        ));
                    }
                }
                Arg::Path { .. } => {}
            }
        }
        if let Some(pieces) = &self.template {
            check_placeholders(pieces.len() - 1, self.args.len() - 1)?;
        }
        if self.args.iter().all(|arg| matches!(arg, Arg::Literal(_))) {
            let env = Env { input: &Value::Null, context: &Value::Null, seed: 0 };
            self.apply(self.args.iter().map(|arg| self.literal(arg)).collect(), &env)?;
        }
        Ok(())
    }

    fn literal(&self, arg: &Arg) -> Value {
        match arg {
            Arg::Literal(value) => value.clone(),
            _ => Value::Null,
        }
    }

    /// The checks of one literal argument that do not depend on the other arguments.
    fn check_literal(&self, index: usize, value: &Value) -> Result<(), String> {
        let n = index + 1;
        match (self.func, index) {
            (Func::ArrayPartition, 1) => chunk_size(value).map(drop),
            (Func::ArrayRange, 0 | 1) | (Func::MathRandom, _) => integer(value, n).map(drop),
            (Func::ArrayRange, 2) => range_step(value).map(drop),
            (Func::ArrayGetItem, 1) => item_index(value).map(drop),
            (Func::Hash, 0) => limited_text(value, n).map(drop),
            (Func::Hash, 1) => hash_algorithm(value).map(drop),
            (Func::JsonMerge, 2) => shallow_flag(value),
            (Func::MathAdd, _) => add_operand(value, n).map(drop),
            _ => Ok(()),
        }
    }

    /// Runs the function on its argument values (their count is checked at parse time).
    fn apply(&self, values: Vec<Value>, env: &Env) -> Result<Value, String> {
        let v = values.as_slice();
        match self.func {
            Func::Format => self.format(v),
            Func::StringToJson => string_to_json(text(&v[0], 1)?),
            Func::JsonToString => serde_json::to_string(&v[0]).map(Value::String).map_err(|e| e.to_string()),
            Func::Array => Ok(Value::Array(values)),
            Func::ArrayPartition => Ok(array_partition(array(&v[0], 1)?, chunk_size(&v[1])?)),
            Func::ArrayContains => Ok(Value::Bool(array(&v[0], 1)?.contains(&v[1]))),
            Func::ArrayRange => array_range(integer(&v[0], 1)?, integer(&v[1], 2)?, range_step(&v[2])?),
            Func::ArrayGetItem => array_get_item(array(&v[0], 1)?, item_index(&v[1])?),
            Func::ArrayLength => Ok(Value::from(array(&v[0], 1)?.len())),
            Func::ArrayUnique => Ok(array_unique(array(&v[0], 1)?)),
            Func::Base64Encode => Ok(Value::String(base64_engine().encode(limited_text(&v[0], 1)?))),
            Func::Base64Decode => base64_decode(limited_text(&v[0], 1)?),
            Func::Hash => Ok(Value::String(hash(limited_text(&v[0], 1)?, hash_algorithm(&v[1])?))),
            Func::JsonMerge => json_merge(object(&v[0], 1)?, object(&v[1], 2)?, &v[2]),
            Func::MathRandom => self.math_random(v, env),
            Func::MathAdd => Ok(Value::from(add_operand(&v[0], 1)? + add_operand(&v[1], 2)?)),
            Func::StringSplit => Ok(string_split(text(&v[0], 1)?, text(&v[1], 2)?)),
            Func::Uuid => Ok(Value::String(self.uuid(env))),
        }
    }

    /// `States.Format(template, values...)`: each `{}` of the template replaced by the next value. A literal
    /// template's escaped `\{` / `\}` are text; a template read from a path has no escapes, every `{}` in it is a
    /// placeholder. Values of any type are accepted and rendered as AWS renders them: strings as they are, `null`,
    /// booleans and numbers as JSON, arrays as `[a, b]` and objects as `{key=value, other=value}` (recorded AWS
    /// behaviour; the documentation does not say).
    fn format(&self, values: &[Value]) -> Result<Value, String> {
        let pieces = match &self.template {
            Some(pieces) => pieces.clone(),
            None => text(&values[0], 1)?.split("{}").map(str::to_string).collect(),
        };
        let fills = &values[1..];
        check_placeholders(pieces.len() - 1, fills.len())?;
        let mut out = String::new();
        for (i, piece) in pieces.iter().enumerate() {
            out.push_str(piece);
            if let Some(value) = fills.get(i) {
                render(value, &mut out);
            }
        }
        Ok(Value::String(out))
    }

    /// `States.MathRandom(start, end[, seed])`: an integer with `start <= n < end` (both rounded to the nearest
    /// integer, as AWS documents). With a seed argument the value depends only on `start`, `end` and the seed (AWS:
    /// "if you use this function with the same seed value, it will return identical numbers"); without one, on
    /// [`Env::seed`] and the call's position.
    fn math_random(&self, values: &[Value], env: &Env) -> Result<Value, String> {
        let start = integer(&values[0], 1)?;
        let end = integer(&values[1], 2)?;
        if end <= start {
            return Err(format!(
                "the end (argument 2, exclusive) must be greater than the start (argument 1), got start {start} and \
                 end {end}"
            ));
        }
        let bytes = match values.get(2) {
            Some(seed) => draw(&[b"States.MathRandom seeded", &integer(seed, 3)?.to_le_bytes()]),
            None => self.draw_unseeded(b"States.MathRandom", env),
        };
        let mut word = [0u8; 8];
        word.copy_from_slice(&bytes[..8]);
        let span = (i128::from(end) - i128::from(start)) as u128;
        let offset = (u128::from(u64::from_le_bytes(word)) * span) >> 64;
        Ok(Value::from((i128::from(start) + offset as i128) as i64))
    }

    /// `States.UUID()`: a version 4 UUID, lowercase and hyphenated, from 16 bytes of the draw.
    fn uuid(&self, env: &Env) -> String {
        let bytes = self.draw_unseeded(b"States.UUID", env);
        let mut random = [0u8; 16];
        random.copy_from_slice(&bytes[..16]);
        uuid::Builder::from_random_bytes(random).into_uuid().hyphenated().to_string()
    }

    fn draw_unseeded(&self, domain: &[u8], env: &Env) -> [u8; 32] {
        draw(&[domain, &env.seed.to_le_bytes(), &self.position.to_le_bytes()])
    }
}

/// SHA-256 of length-prefixed parts: the deterministic source of `States.UUID` and `States.MathRandom`.
fn draw(parts: &[&[u8]]) -> [u8; 32] {
    let mut hasher = sha2::Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hasher.finalize().into()
}

// ---------------------------------------------------------------------------------------------------------------
// The functions: names, argument counts and types.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Func {
    Format,
    StringToJson,
    JsonToString,
    Array,
    ArrayPartition,
    ArrayContains,
    ArrayRange,
    ArrayGetItem,
    ArrayLength,
    ArrayUnique,
    Base64Encode,
    Base64Decode,
    Hash,
    JsonMerge,
    MathRandom,
    MathAdd,
    StringSplit,
    Uuid,
}

const FUNCS: [Func; 18] = [
    Func::Format,
    Func::StringToJson,
    Func::JsonToString,
    Func::Array,
    Func::ArrayPartition,
    Func::ArrayContains,
    Func::ArrayRange,
    Func::ArrayGetItem,
    Func::ArrayLength,
    Func::ArrayUnique,
    Func::Base64Encode,
    Func::Base64Decode,
    Func::Hash,
    Func::JsonMerge,
    Func::MathRandom,
    Func::MathAdd,
    Func::StringSplit,
    Func::Uuid,
];

impl Func {
    fn name(self) -> &'static str {
        match self {
            Func::Format => "States.Format",
            Func::StringToJson => "States.StringToJson",
            Func::JsonToString => "States.JsonToString",
            Func::Array => "States.Array",
            Func::ArrayPartition => "States.ArrayPartition",
            Func::ArrayContains => "States.ArrayContains",
            Func::ArrayRange => "States.ArrayRange",
            Func::ArrayGetItem => "States.ArrayGetItem",
            Func::ArrayLength => "States.ArrayLength",
            Func::ArrayUnique => "States.ArrayUnique",
            Func::Base64Encode => "States.Base64Encode",
            Func::Base64Decode => "States.Base64Decode",
            Func::Hash => "States.Hash",
            Func::JsonMerge => "States.JsonMerge",
            Func::MathRandom => "States.MathRandom",
            Func::MathAdd => "States.MathAdd",
            Func::StringSplit => "States.StringSplit",
            Func::Uuid => "States.UUID",
        }
    }

    /// The function whose full name is `name` (`States.Format`).
    fn from_name(name: &str) -> Option<Func> {
        FUNCS.iter().copied().find(|func| func.name() == name)
    }

    /// The fewest and the most arguments (`None`: no most).
    fn arity(self) -> (usize, Option<usize>) {
        match self {
            Func::Format => (1, None),
            Func::Array => (0, None),
            Func::Uuid => (0, Some(0)),
            Func::MathRandom => (2, Some(3)),
            Func::ArrayRange | Func::JsonMerge => (3, Some(3)),
            Func::ArrayPartition
            | Func::ArrayContains
            | Func::ArrayGetItem
            | Func::Hash
            | Func::MathAdd
            | Func::StringSplit => (2, Some(2)),
            Func::StringToJson
            | Func::JsonToString
            | Func::ArrayLength
            | Func::ArrayUnique
            | Func::Base64Encode
            | Func::Base64Decode => (1, Some(1)),
        }
    }

    fn check_arity(self, count: usize) -> Result<(), String> {
        let (min, max) = self.arity();
        if count >= min && max.is_none_or(|max| count <= max) {
            return Ok(());
        }
        let takes = match (min, max) {
            (0, Some(0)) => "no arguments".to_string(),
            (min, None) => format!("at least {}", arguments(min)),
            (min, Some(max)) if min == max => arguments(min),
            (min, Some(max)) if max == min + 1 => format!("{min} or {max} arguments"),
            (min, Some(max)) => format!("{min} to {max} arguments"),
        };
        Err(format!("{} takes {takes}, got {count}", self.name()))
    }

    /// What argument `index` must be.
    fn param(self, index: usize) -> Kind {
        use Kind::{Any, Array, Bool, Number, Object, String};
        let params: &[Kind] = match self {
            Func::Format => &[String],
            Func::StringToJson | Func::Base64Encode | Func::Base64Decode => &[String],
            Func::Hash | Func::StringSplit => &[String, String],
            Func::ArrayPartition | Func::ArrayGetItem => &[Array, Number],
            Func::ArrayContains => &[Array, Any],
            Func::ArrayLength | Func::ArrayUnique => &[Array],
            Func::ArrayRange | Func::MathRandom => &[Number, Number, Number],
            Func::MathAdd => &[Number, Number],
            Func::JsonMerge => &[Object, Object, Bool],
            Func::JsonToString | Func::Array | Func::Uuid => &[],
        };
        params.get(index).copied().unwrap_or(Any)
    }

    /// What the function returns.
    fn returns(self) -> Kind {
        match self {
            Func::Format | Func::JsonToString | Func::Base64Encode | Func::Base64Decode | Func::Hash | Func::Uuid => {
                Kind::String
            }
            Func::StringToJson | Func::ArrayGetItem => Kind::Any,
            Func::Array | Func::ArrayPartition | Func::ArrayRange | Func::ArrayUnique | Func::StringSplit => {
                Kind::Array
            }
            Func::ArrayContains => Kind::Bool,
            Func::ArrayLength | Func::MathRandom | Func::MathAdd => Kind::Number,
            Func::JsonMerge => Kind::Object,
        }
    }
}

fn arguments(count: usize) -> String {
    if count == 1 { "1 argument".to_string() } else { format!("{count} arguments") }
}

/// A JSON type, as far as it can be known before evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Any,
    Null,
    Bool,
    Number,
    String,
    Array,
    Object,
}

impl Kind {
    fn of(value: &Value) -> Kind {
        match value {
            Value::Null => Kind::Null,
            Value::Bool(_) => Kind::Bool,
            Value::Number(_) => Kind::Number,
            Value::String(_) => Kind::String,
            Value::Array(_) => Kind::Array,
            Value::Object(_) => Kind::Object,
        }
    }

    fn accepts(self, have: Kind) -> bool {
        self == Kind::Any || have == Kind::Any || self == have
    }

    fn described(self) -> &'static str {
        match self {
            Kind::Any => "any value",
            Kind::Null => "null",
            Kind::Bool => "a boolean",
            Kind::Number => "a number",
            Kind::String => "a string",
            Kind::Array => "an array",
            Kind::Object => "an object",
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Argument checks shared by parse-time checks of literals and by evaluation.

fn wrong_type(n: usize, want: &str, value: &Value) -> String {
    format!("argument {n} must be {want}, got {}", Kind::of(value).described())
}

fn text(value: &Value, n: usize) -> Result<&str, String> {
    value.as_str().ok_or_else(|| wrong_type(n, "a string", value))
}

fn array(value: &Value, n: usize) -> Result<&Vec<Value>, String> {
    value.as_array().ok_or_else(|| wrong_type(n, "an array", value))
}

fn object(value: &Value, n: usize) -> Result<&Map<String, Value>, String> {
    value.as_object().ok_or_else(|| wrong_type(n, "an object", value))
}

/// A string of at most [`TEXT_CHARS_MAX`] characters (Base64Encode, Base64Decode and Hash).
fn limited_text(value: &Value, n: usize) -> Result<&str, String> {
    let text = text(value, n)?;
    let chars = text.chars().count();
    if chars > TEXT_CHARS_MAX {
        return Err(format!("argument {n} has {chars} characters; at most {TEXT_CHARS_MAX} are allowed"));
    }
    Ok(text)
}

/// An integer argument. AWS rounds a non-integer to the nearest integer; halves round up, as AWS does
/// (`1.5` → 2, `-1.5` → -1, `-0.5` → 0).
fn integer(value: &Value, n: usize) -> Result<i64, String> {
    let number = value.as_number().ok_or_else(|| wrong_type(n, "an integer", value))?;
    if let Some(i) = number.as_i64() {
        return Ok(i);
    }
    let out_of_range = || format!("argument {n} ({number}) is out of the integer range");
    if number.is_u64() {
        return Err(out_of_range());
    }
    let rounded = round_half_up(number.as_f64().ok_or_else(out_of_range)?);
    // 2^63 is exactly representable; every f64 below it and at least -2^63 converts without loss of range.
    if !(-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0).contains(&rounded) {
        return Err(out_of_range());
    }
    Ok(rounded as i64)
}

fn round_half_up(x: f64) -> f64 {
    let floor = x.floor();
    if x - floor >= 0.5 { floor + 1.0 } else { floor }
}

/// `States.MathAdd` operands: integers (rounded) between -2147483648 and 2147483647, as AWS documents.
fn add_operand(value: &Value, n: usize) -> Result<i64, String> {
    let operand = integer(value, n)?;
    if i32::try_from(operand).is_err() {
        return Err(format!("argument {n} must be an integer between {} and {}, got {operand}", i32::MIN, i32::MAX));
    }
    Ok(operand)
}

/// `States.ArrayPartition` chunk size: a positive integer after rounding.
fn chunk_size(value: &Value) -> Result<usize, String> {
    let size = integer(value, 2)?;
    if size <= 0 {
        return Err(format!("the chunk size (argument 2) must be a positive integer, got {size}"));
    }
    Ok(usize::try_from(size).unwrap_or(usize::MAX))
}

/// `States.ArrayRange` step: a non-zero integer after rounding.
fn range_step(value: &Value) -> Result<i64, String> {
    let step = integer(value, 3)?;
    if step == 0 {
        return Err("the step (argument 3) must not be 0".to_string());
    }
    Ok(step)
}

/// `States.ArrayGetItem` index: a non-negative integer (not rounded: AWS documents no rounding here).
fn item_index(value: &Value) -> Result<usize, String> {
    let bad = || format!("the index (argument 2) must be a non-negative integer, got {value}");
    let number = value.as_number().ok_or_else(bad)?;
    if let Some(index) = number.as_u64() {
        return usize::try_from(index).map_err(|_| bad());
    }
    match number.as_f64() {
        Some(x) if x >= 0.0 && x.fract() == 0.0 && x < 9_007_199_254_740_992.0 => Ok(x as usize),
        _ => Err(bad()),
    }
}

/// `States.Hash` algorithm: exactly one of [`HASH_ALGORITHMS`].
fn hash_algorithm(value: &Value) -> Result<&'static str, String> {
    let name = text(value, 2)?;
    HASH_ALGORITHMS.iter().copied().find(|known| *known == name).ok_or_else(|| {
        format!("unsupported algorithm '{name}' (argument 2); the supported ones are {}", HASH_ALGORITHMS.join(", "))
    })
}

/// `States.JsonMerge` third argument: must be `false`, the only mode AWS supports.
fn shallow_flag(value: &Value) -> Result<(), String> {
    match value {
        Value::Bool(false) => Ok(()),
        Value::Bool(true) => Err("deep merge (argument 3 true) is not supported: Step Functions only supports the \
                                  shallow merging mode, so argument 3 must be false"
            .to_string()),
        other => Err(wrong_type(3, "the boolean false", other)),
    }
}

fn check_placeholders(placeholders: usize, values: usize) -> Result<(), String> {
    if placeholders == values {
        return Ok(());
    }
    Err(format!(
        "the template has {placeholders} {{}} placeholder{} but {values} value{} follow{} it",
        if placeholders == 1 { "" } else { "s" },
        if values == 1 { "" } else { "s" },
        if values == 1 { "s" } else { "" },
    ))
}

// ---------------------------------------------------------------------------------------------------------------
// The functions' bodies.

/// Renders a `States.Format` value (see [`Intrinsic::format`]).
fn render(value: &Value, out: &mut String) {
    match value {
        Value::String(s) => out.push_str(s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                render(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(key);
                out.push('=');
                render(item, out);
            }
            out.push('}');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// `States.StringToJson(text)`: the parsed JSON. Empty or blank text is `null`, as AWS answers.
fn string_to_json(text: &str) -> Result<Value, String> {
    if text.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(text).map_err(|e| format!("argument 1 is not valid JSON: {e}"))
}

/// `States.ArrayPartition(array, size)`: chunks of `size` items, the last one possibly shorter.
fn array_partition(items: &[Value], size: usize) -> Value {
    Value::Array(items.chunks(size).map(|chunk| Value::Array(chunk.to_vec())).collect())
}

/// `States.ArrayRange(first, last, step)`: `first, first + step, ...` up to and including `last` when a step
/// lands on it (`ArrayRange(0, 10, 3)` is `[0, 3, 6, 9]`). A step that moves away from `last` gives `[]`.
fn array_range(first: i64, last: i64, step: i64) -> Result<Value, String> {
    let span = i128::from(last) - i128::from(first);
    let step = i128::from(step);
    let count = if span != 0 && (span > 0) != (step > 0) { 0 } else { span / step + 1 };
    if count > RANGE_ITEMS_MAX {
        return Err(format!("the range would have {count} items; at most {RANGE_ITEMS_MAX} are allowed"));
    }
    // Every item lies between `first` and `last`, so it fits in an i64.
    Ok(Value::Array((0..count).map(|k| Value::from((i128::from(first) + k * step) as i64)).collect()))
}

fn array_get_item(items: &[Value], index: usize) -> Result<Value, String> {
    items.get(index).cloned().ok_or_else(|| {
        format!("index {index} (argument 2) is out of range for an array of {}", plural(items.len(), "item"))
    })
}

/// `States.ArrayUnique(array)`: the first occurrence of each value, in order; values compare as JSON (deeply, object
/// key order aside; `1` and `1.0` are different numbers).
fn array_unique(items: &[Value]) -> Value {
    let mut seen = HashSet::new();
    Value::Array(items.iter().filter(|item| seen.insert(crate::json::canonical(item))).cloned().collect())
}

fn plural(count: usize, noun: &str) -> String {
    if count == 1 { format!("1 {noun}") } else { format!("{count} {noun}s") }
}

/// Standard base64 (RFC 4648 alphabet, padded output). Decoding accepts missing padding.
fn base64_engine() -> GeneralPurpose {
    let config = GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    GeneralPurpose::new(&base64::alphabet::STANDARD, config)
}

/// `States.Base64Decode(text)`: the decoded bytes, which must be UTF-8 text. Line breaks and other ASCII whitespace
/// are skipped, as a MIME decoder does.
fn base64_decode(encoded: &str) -> Result<Value, String> {
    let compact: String = encoded.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let bytes = base64_engine().decode(compact).map_err(|e| format!("argument 1 is not valid base64: {e}"))?;
    String::from_utf8(bytes)
        .map(Value::String)
        .map_err(|_| "argument 1 decodes to bytes that are not UTF-8 text".to_string())
}

/// `States.Hash(text, algorithm)`: the digest of the text's UTF-8 bytes, lowercase hex.
fn hash(text: &str, algorithm: &str) -> String {
    let bytes = text.as_bytes();
    match algorithm {
        "MD5" => hex::encode(md5::Md5::digest(bytes)),
        "SHA-1" => hex::encode(sha1::Sha1::digest(bytes)),
        "SHA-256" => hex::encode(sha2::Sha256::digest(bytes)),
        "SHA-384" => hex::encode(sha2::Sha384::digest(bytes)),
        _ => hex::encode(sha2::Sha512::digest(bytes)),
    }
}

/// `States.JsonMerge(a, b, false)`: shallow merge, `b`'s keys replacing `a`'s (nested objects are not merged).
fn json_merge(first: &Map<String, Value>, second: &Map<String, Value>, deep: &Value) -> Result<Value, String> {
    shallow_flag(deep)?;
    let mut merged = first.clone();
    merged.extend(second.iter().map(|(key, value)| (key.clone(), value.clone())));
    Ok(Value::Object(merged))
}

/// `States.StringSplit(text, delimiters)`: splits at every character of `delimiters` and drops the empty parts, as
/// AWS does (`",,,,"` gives `[]`, `" , "` gives `[" ", " "]`).
fn string_split(text: &str, delimiters: &str) -> Value {
    let parts = text.split(|c: char| delimiters.contains(c)).filter(|part| !part.is_empty());
    Value::Array(parts.map(|part| Value::String(part.to_string())).collect())
}

// ---------------------------------------------------------------------------------------------------------------
// The parser.

/// A parsed argument and, for a string literal, its text split at its unescaped `{}` placeholders.
type ParsedArg = (Arg, Option<Vec<String>>);

struct Parser<'t> {
    text: &'t str,
    /// Byte offset of the next character.
    pos: usize,
    nesting_max: usize,
    /// Calls started so far: the next call's position.
    calls: u64,
}

impl Parser<'_> {
    fn rest(&self) -> &str {
        &self.text[self.pos..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn skip_ws(&mut self) {
        while let Some(c) = self.peek().filter(|c| c.is_whitespace()) {
            self.pos += c.len_utf8();
        }
    }

    fn error_at(&self, at: usize, message: impl Display) -> String {
        format!("{message} (at character {} of the intrinsic)", self.text[..at].chars().count() + 1)
    }

    /// `States.Name(args)`, the outermost call at `depth` 1.
    fn call(&mut self, depth: usize) -> Result<Intrinsic, String> {
        let start = self.pos;
        if !self.rest().starts_with("States.") {
            return Err(self.error_at(start, "an intrinsic function call must start with 'States.'"));
        }
        self.pos += "States.".len();
        while let Some(c) = self.peek().filter(|c| c.is_ascii_alphanumeric()) {
            self.pos += c.len_utf8();
        }
        let name = &self.text[start..self.pos];
        let func = Func::from_name(name).ok_or_else(|| unknown_function(name))?;
        if depth > self.nesting_max {
            return Err(self.error_at(
                start,
                format!("{name} is nested {depth} calls deep; at most {} are allowed", self.nesting_max),
            ));
        }
        self.skip_ws();
        if self.peek() != Some('(') {
            return Err(self.error_at(self.pos, format!("expected '(' after {name}")));
        }
        self.pos += 1;
        let position = self.calls;
        self.calls += 1;
        let args = self.arguments(depth)?;
        Intrinsic::build(func, args, position)
    }

    /// The arguments after `(`, through the closing `)`.
    fn arguments(&mut self, depth: usize) -> Result<Vec<ParsedArg>, String> {
        let mut args = Vec::new();
        self.skip_ws();
        if self.peek() == Some(')') {
            self.pos += 1;
            return Ok(args);
        }
        loop {
            self.skip_ws();
            args.push(self.argument(depth)?);
            self.skip_ws();
            match self.peek() {
                Some(',') => self.pos += 1,
                Some(')') => {
                    self.pos += 1;
                    return Ok(args);
                }
                Some(c) => {
                    return Err(self.error_at(self.pos, format!("expected ',' or ')' after an argument, found '{c}'")));
                }
                None => return Err(self.error_at(self.pos, "missing ')' at the end of the arguments")),
            }
        }
    }

    /// One argument; a string literal also gives its text split at its unescaped `{}` placeholders.
    fn argument(&mut self, depth: usize) -> Result<ParsedArg, String> {
        match self.peek() {
            Some('\'') => {
                let (value, pieces) = self.string()?;
                Ok((Arg::Literal(Value::String(value)), Some(pieces)))
            }
            Some('$') => Ok((self.path()?, None)),
            Some(c) if c == '-' || c.is_ascii_digit() => Ok((self.number()?, None)),
            Some(_) if self.rest().starts_with("States.") => Ok((Arg::Call(Box::new(self.call(depth + 1)?)), None)),
            Some(c) if c.is_alphabetic() => Ok((self.word()?, None)),
            Some(',' | ')') => Err(self.error_at(self.pos, "empty argument")),
            Some(c) => Err(self.error_at(self.pos, format!("unexpected '{c}' where an argument should start"))),
            None => Err(self.error_at(self.pos, "missing ')' at the end of the arguments")),
        }
    }

    /// `'text'` with the escapes `\'`, `\{`, `\}` and `\\`: the decoded text, and its pieces between unescaped `{}`.
    fn string(&mut self) -> Result<(String, Vec<String>), String> {
        let open = self.pos;
        self.pos += 1;
        let mut value = String::new();
        let mut pieces = vec![String::new()];
        loop {
            let at = self.pos;
            let Some(c) = self.peek() else {
                return Err(self.error_at(open, "unterminated string: missing the closing '"));
            };
            self.pos += c.len_utf8();
            match c {
                '\'' => return Ok((value, pieces)),
                '\\' => {
                    let escaped = match self.peek() {
                        Some(e @ ('\'' | '{' | '}' | '\\')) => e,
                        Some(other) => {
                            return Err(self.error_at(
                                at,
                                format!("invalid escape '\\{other}': only \\', \\{{, \\}} and \\\\ are escapes"),
                            ));
                        }
                        None => return Err(self.error_at(open, "unterminated string: missing the closing '")),
                    };
                    self.pos += 1;
                    value.push(escaped);
                    push_piece(&mut pieces, escaped);
                }
                '{' if self.peek() == Some('}') => {
                    self.pos += 1;
                    value.push_str("{}");
                    pieces.push(String::new());
                }
                c => {
                    value.push(c);
                    push_piece(&mut pieces, c);
                }
            }
        }
    }

    /// A JSON number.
    fn number(&mut self) -> Result<Arg, String> {
        let start = self.pos;
        while let Some(c) = self.peek().filter(|c| c.is_ascii_digit() || matches!(c, '-' | '+' | '.' | 'e' | 'E')) {
            self.pos += c.len_utf8();
        }
        let token = &self.text[start..self.pos];
        serde_json::from_str::<Number>(token)
            .map(|number| Arg::Literal(Value::Number(number)))
            .map_err(|_| self.error_at(start, format!("'{token}' is not a number")))
    }

    /// `true`, `false` or `null`.
    fn word(&mut self) -> Result<Arg, String> {
        let start = self.pos;
        while let Some(c) = self.peek().filter(|c| c.is_alphanumeric() || *c == '_' || *c == '.') {
            self.pos += c.len_utf8();
        }
        match &self.text[start..self.pos] {
            "true" => Ok(Arg::Literal(Value::Bool(true))),
            "false" => Ok(Arg::Literal(Value::Bool(false))),
            "null" => Ok(Arg::Literal(Value::Null)),
            word => Err(self.error_at(
                start,
                format!(
                    "unexpected '{word}': an argument is a 'quoted string', a number, true, false, null, a path \
                     ($..., $$...) or a call (States.Name(...))"
                ),
            )),
        }
    }

    /// A path, up to the `,` or `)` or whitespace that ends it (none of them count inside `[...]`).
    fn path(&mut self) -> Result<Arg, String> {
        let start = self.pos;
        let mut brackets = 0usize;
        let mut quote: Option<char> = None;
        while let Some(c) = self.peek() {
            match quote {
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None => match c {
                    '\'' | '"' if brackets > 0 => quote = Some(c),
                    '[' => brackets += 1,
                    ']' => brackets = brackets.saturating_sub(1),
                    ',' | ')' if brackets == 0 => break,
                    c if c.is_whitespace() && brackets == 0 => break,
                    _ => {}
                },
            }
            self.pos += c.len_utf8();
        }
        parse_path(&self.text[start..self.pos]).map_err(|message| self.error_at(start, message))
    }
}

fn push_piece(pieces: &mut [String], c: char) {
    if let Some(last) = pieces.last_mut() {
        last.push(c);
    }
}

fn unknown_function(name: &str) -> String {
    let known: Vec<&str> = FUNCS.iter().map(|func| func.name()).collect();
    format!("unknown intrinsic function {name}; the known ones are {}", known.join(", "))
}

/// `$...` (input) or `$$...` (context object) as an argument.
fn parse_path(token: &str) -> Result<Arg, String> {
    let (context, body) = match token.strip_prefix("$$") {
        Some(rest) => (true, rest),
        None => (false, token.strip_prefix('$').unwrap_or(token)),
    };
    if let Some(c) = body.chars().next().filter(|c| !matches!(c, '.' | '[')) {
        if c.is_alphanumeric() || c == '_' {
            return Err(format!("workflow variables (${body}) are not supported in intrinsic functions"));
        }
        return Err(format!("unexpected '{c}' in the path {token}"));
    }
    let path = Path::parse(&format!("${}", without_dot_before_bracket(body))).map_err(|e| e.to_string())?;
    Ok(Arg::Path { context, path })
}

/// AWS writes bracketed fields after a dot (`$.abc.['def ghi']`); [`Path`] wants `$.abc['def ghi']`.
fn without_dot_before_bracket(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut quote: Option<char> = None;
    let mut chars = path.chars().peekable();
    while let Some(c) = chars.next() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' => quote = Some(c),
            None if c == '.' && chars.peek() == Some(&'[') => continue,
            None => {}
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(text: &str) -> Intrinsic {
        Intrinsic::parse(text, NESTING_DEFAULT).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn eval_seeded(text: &str, input: &Value, seed: u64) -> Result<Value, String> {
        let context = json!({"Execution": {"Id": "arn:exec:1", "Name": "run-1"}, "StateMachine": {"Name": "sm-a-b"}});
        parse(text).eval(&Env { input, context: &context, seed })
    }

    fn eval(text: &str, input: &Value) -> Value {
        eval_seeded(text, input, 7).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn eval_err(text: &str, input: &Value) -> String {
        match eval_seeded(text, input, 7) {
            Ok(v) => panic!("{text}: expected an error, got {v}"),
            Err(e) => e,
        }
    }

    fn parse_err(text: &str) -> String {
        match Intrinsic::parse(text, NESTING_DEFAULT) {
            Ok(call) => panic!("{text}: expected a parse error, got {call:?}"),
            Err(e) => e,
        }
    }

    fn assert_contains(haystack: &str, needle: &str) {
        assert!(haystack.contains(needle), "{haystack:?} does not contain {needle:?}");
    }

    fn nine() -> Value {
        json!({"inputArray": [1, 2, 3, 4, 5, 6, 7, 8, 9], "lookingFor": 5, "index": 5})
    }

    // ---- AWS's documented examples -----------------------------------------------------------------------------

    #[test]
    fn doc_array() {
        assert_eq!(eval("States.Array($.Id)", &json!({"Id": 123456})), json!([123456]));
        assert_eq!(eval("States.Array()", &json!({})), json!([]));
        assert_eq!(
            eval("States.Array('a', 1, -2.5, true, false, null)", &json!({})),
            json!(["a", 1, -2.5, true, false, null])
        );
    }

    #[test]
    fn doc_array_partition() {
        assert_eq!(eval("States.ArrayPartition($.inputArray,4)", &nine()), json!([[1, 2, 3, 4], [5, 6, 7, 8], [9]]));
        assert_eq!(eval("States.ArrayPartition($.e, 3)", &json!({"e": []})), json!([]));
        // AWS rounds a non-integer chunk size to the nearest integer.
        assert_eq!(eval("States.ArrayPartition($.inputArray, 4.4)", &nine()), json!([[1, 2, 3, 4], [5, 6, 7, 8], [9]]));
    }

    #[test]
    fn doc_array_contains() {
        assert_eq!(eval("States.ArrayContains($.inputArray, $.lookingFor)", &nine()), json!(true));
        assert_eq!(eval("States.ArrayContains($.inputArray, 10)", &nine()), json!(false));
        // Deep equality, object key order aside.
        let input = json!({"a": [[1, 2, 3], 2, {"x": 1, "y": [null]}], "n": [1, 2, 3], "o": {"y": [null], "x": 1}});
        assert_eq!(eval("States.ArrayContains($.a, $.n)", &input), json!(true));
        assert_eq!(eval("States.ArrayContains($.a, $.o)", &input), json!(true));
        assert_eq!(eval("States.ArrayContains($.a, null)", &input), json!(false));
        assert_eq!(eval("States.ArrayContains($.e, $.e)", &json!({"e": []})), json!(false));
    }

    #[test]
    fn doc_array_range() {
        assert_eq!(eval("States.ArrayRange(1, 9, 2)", &json!({})), json!([1, 3, 5, 7, 9]));
        // Recorded AWS answers: the last item is the last step at or before the end.
        assert_eq!(eval("States.ArrayRange(0, 10, 3)", &json!({})), json!([0, 3, 6, 9]));
        assert_eq!(eval("States.ArrayRange(1, 9, 9)", &json!({})), json!([1]));
        assert_eq!(eval("States.ArrayRange(5, 1, -2)", &json!({})), json!([5, 3, 1]));
        assert_eq!(eval("States.ArrayRange(5, 5, 1)", &json!({})), json!([5]));
        assert_eq!(eval("States.ArrayRange(1, 5, -1)", &json!({})), json!([]));
        assert_eq!(eval("States.ArrayRange(0.6, 2.5, 1)", &json!({})), json!([1, 2, 3]));
    }

    #[test]
    fn doc_array_get_item_and_length() {
        assert_eq!(eval("States.ArrayGetItem($.inputArray, $.index)", &nine()), json!(6));
        assert_eq!(eval("States.ArrayLength($.inputArray)", &nine()), json!(9));
        let err = eval_err("States.ArrayGetItem($.inputArray, 9)", &nine());
        assert_contains(&err, "States.ArrayGetItem: index 9 (argument 2) is out of range for an array of 9 items");
        assert_contains(&parse_err("States.ArrayGetItem($.inputArray, -1)"), "non-negative integer");
        assert_contains(&parse_err("States.ArrayGetItem($.inputArray, 1.5)"), "non-negative integer");
        assert_contains(
            &eval_err("States.ArrayGetItem($.inputArray, $.i)", &json!({"inputArray": [], "i": "0"})),
            "got \"0\"",
        );
    }

    #[test]
    fn doc_array_unique() {
        assert_eq!(
            eval("States.ArrayUnique($.inputArray)", &json!({"inputArray": [1, 2, 3, 3, 3, 3, 3, 3, 4]})),
            json!([1, 2, 3, 4])
        );
        let input = json!({"a": [null, null, true, 1, 1, 1.1, "x", "x", [], [], [null], [null], {"a": 1, "b": 2}, {"b": 2, "a": 1}, {"a": 1}]});
        assert_eq!(
            eval("States.ArrayUnique($.a)", &input),
            json!([null, true, 1, 1.1, "x", [], [null], {"a": 1, "b": 2}, {"a": 1}])
        );
    }

    #[test]
    fn doc_base64() {
        assert_eq!(
            eval("States.Base64Encode($.input)", &json!({"input": "Data to encode"})),
            json!("RGF0YSB0byBlbmNvZGU=")
        );
        // The doc's decode example prints "Decoded data", but its input is the encode example's output.
        assert_eq!(
            eval("States.Base64Decode($.base64)", &json!({"base64": "RGF0YSB0byBlbmNvZGU="})),
            json!("Data to encode")
        );
        assert_eq!(eval("States.Base64Encode('')", &json!({})), json!(""));
        assert_eq!(eval("States.Base64Decode('')", &json!({})), json!(""));
        assert_eq!(eval("States.Base64Decode('RGF0YSB0\nbyBlbmNvZGU')", &json!({})), json!("Data to encode"));
        assert_eq!(eval("States.Base64Encode('héllo')", &json!({})), json!("aMOpbGxv"));
    }

    #[test]
    fn doc_hash() {
        // The doc prints a 39-digit value for SHA-1 (a digit is missing); this is the real digest, which AWS returns.
        let input = json!({"Data": "input data", "Algorithm": "SHA-1"});
        assert_eq!(eval("States.Hash($.Data, $.Algorithm)", &input), json!("aaff4a450a104cd177d28d18d74485e8cae074b7"));
        for (algorithm, digest) in [
            ("MD5", "812f45842bc6d66ee14572ce20db8e86"),
            ("SHA-256", "b4a697a057313163aee33cd8d40c66e9f0f177e00cac2de32475ffff6169c3e3"),
            (
                "SHA-384",
                "d28a7d5cf25a74f11a50a18452b75e04bb3d70c9dd0510d6123aa008c756511b87525bdc835ebb27e1fb9e9374a15562",
            ),
            (
                "SHA-512",
                "6ce4adb348546d4f449c4d25aad9a7c9cb711d9e91982d3f0b29ca2f3f47d4ce2deba23bf2954f0f1d593fc50283731a533d30d425402d4f91316d871303aac4",
            ),
        ] {
            assert_eq!(eval(&format!("States.Hash($.Data, '{algorithm}')"), &input), json!(digest), "{algorithm}");
        }
    }

    #[test]
    fn doc_json_merge() {
        let input = json!({"json1": {"a": {"a1": 1, "a2": 2}, "b": 2}, "json2": {"a": {"a3": 1, "a4": 2}, "c": 3}});
        assert_eq!(
            eval("States.JsonMerge($.json1, $.json2, false)", &input),
            json!({"a": {"a3": 1, "a4": 2}, "b": 2, "c": 3})
        );
        let err = parse_err("States.JsonMerge($.json1, $.json2, true)");
        assert_contains(&err, "States.JsonMerge: deep merge (argument 3 true) is not supported");
        let err =
            eval_err("States.JsonMerge($.json1, $.json2, $.deep)", &json!({"json1": {}, "json2": {}, "deep": true}));
        assert_contains(&err, "shallow merging mode");
        assert_contains(
            &parse_err("States.JsonMerge($.json1, $.json2, 0)"),
            "argument 3 must be a boolean, got a number",
        );
        assert_contains(
            &eval_err("States.JsonMerge($.json1, $.b, false)", &json!({"json1": {}, "b": [1]})),
            "argument 2 must be an object, got an array",
        );
        // A nested call that returns an object (recorded AWS example).
        let merged = eval(
            "States.JsonMerge(States.StringToJson('{\"constant_in_literal\": \"false\"}'), $$.Execution, false)",
            &json!({}),
        );
        assert_eq!(merged, json!({"constant_in_literal": "false", "Id": "arn:exec:1", "Name": "run-1"}));
    }

    #[test]
    fn doc_string_to_json_and_back() {
        let input = json!({"escapedJsonString": "{\"foo\": \"bar\"}", "unescapedJson": {"foo": "bar"}});
        assert_eq!(eval("States.StringToJson($.escapedJsonString)", &input), json!({"foo": "bar"}));
        assert_eq!(eval("States.JsonToString($.unescapedJson)", &input), json!("{\"foo\":\"bar\"}"));
        // Recorded AWS answers for the edges.
        assert_eq!(eval("States.StringToJson('')", &json!({})), Value::Null);
        assert_eq!(eval("States.StringToJson(' ')", &json!({})), Value::Null);
        assert_eq!(eval("States.StringToJson('[1, 2, \"x\"]')", &json!({})), json!([1, 2, "x"]));
        assert_eq!(eval("States.JsonToString($.n)", &json!({"n": null})), json!("null"));
        assert_eq!(eval("States.JsonToString($.n)", &json!({"n": [1, 2, "x"]})), json!("[1,2,\"x\"]"));
        assert_eq!(eval("States.JsonToString('x')", &json!({})), json!("\"x\""));
        assert_contains(
            &parse_err("States.StringToJson('{oops')"),
            "States.StringToJson: argument 1 is not valid JSON",
        );
        assert_contains(
            &eval_err("States.StringToJson($.n)", &json!({"n": 1})),
            "argument 1 must be a string, got a number",
        );
    }

    #[test]
    fn doc_math_random() {
        let input = json!({"start": 1, "end": 999});
        for seed in 0..200 {
            let n = eval_seeded("States.MathRandom($.start, $.end)", &input, seed).unwrap().as_i64().unwrap();
            assert!((1..999).contains(&n), "{n}");
        }
        // Start inclusive, end exclusive.
        for seed in 0..50 {
            assert_eq!(eval_seeded("States.MathRandom(5, 6)", &json!({}), seed).unwrap(), json!(5));
        }
        assert_contains(
            &parse_err("States.MathRandom(5, 5)"),
            "States.MathRandom: the end (argument 2, exclusive) must be greater",
        );
        assert_contains(&parse_err("States.MathRandom('1', 5)"), "argument 1 must be a number, got a string");
        let wide = eval("States.MathRandom(-9223372036854775808, 9223372036854775807)", &json!({}));
        assert!(wide.is_i64(), "{wide}");
    }

    #[test]
    fn doc_math_add() {
        assert_eq!(eval("States.MathAdd($.value1, $.step)", &json!({"value1": 111, "step": -1})), json!(110));
        // Non-integers round to the nearest integer, halves up (recorded AWS answers).
        for (a, b, sum) in [
            (1.49, 1.5, 3),
            (1.5, 1.51, 4),
            (-1.49, -1.5, -2),
            (-1.5, -1.51, -3),
            (-0.5, 0.0, 0),
            (-2.5, 0.0, -2),
            (2.5, 0.0, 3),
        ] {
            assert_eq!(eval("States.MathAdd($.a, $.b)", &json!({"a": a, "b": b})), json!(sum), "{a} + {b}");
        }
        assert_eq!(eval("States.MathAdd(2147483647, 2147483647)", &json!({})), json!(4294967294_i64));
        assert_contains(
            &parse_err("States.MathAdd(2147483648, 1)"),
            "States.MathAdd: argument 1 must be an integer between -2147483648 and 2147483647, got 2147483648",
        );
        assert_contains(
            &eval_err("States.MathAdd($.a, 1)", &json!({"a": -2147483649_i64})),
            "argument 1 must be an integer between",
        );
        assert_contains(
            &eval_err("States.MathAdd($.a, 1)", &json!({"a": "1"})),
            "argument 1 must be an integer, got a string",
        );
    }

    #[test]
    fn doc_string_split() {
        let input = json!({"inputString": "1,2,3,4,5", "splitter": ","});
        assert_eq!(eval("States.StringSplit($.inputString, $.splitter)", &input), json!(["1", "2", "3", "4", "5"]));
        let input = json!({"inputString": "This.is+a,test=string", "splitter": ".+,="});
        assert_eq!(
            eval("States.StringSplit($.inputString, $.splitter)", &input),
            json!(["This", "is", "a", "test", "string"])
        );
        // Empty parts are dropped (recorded AWS answers).
        for (text, parts) in
            [(" ", json!([" "])), (" , ", json!([" ", " "])), (", , ,", json!([" ", " "])), (",,,,", json!([]))]
        {
            assert_eq!(eval("States.StringSplit($.t, ',')", &json!({"t": text})), parts, "{text:?}");
        }
        assert_eq!(eval("States.StringSplit('Hello\nWorld', '\n')", &json!({})), json!(["Hello", "World"]));
        assert_eq!(eval("States.StringSplit('abc', '')", &json!({})), json!(["abc"]));
    }

    #[test]
    fn doc_uuid() {
        let uuid = eval("States.UUID()", &json!({}));
        let text = uuid.as_str().unwrap();
        let parsed = uuid::Uuid::parse_str(text).unwrap();
        assert_eq!(parsed.get_version_num(), 4);
        assert_eq!(parsed.get_variant(), uuid::Variant::RFC4122);
        assert_eq!(text, text.to_lowercase());
        assert_eq!(text.len(), 36);
    }

    #[test]
    fn doc_format() {
        let input = json!({"name": "Arnav", "template": "Hello, my name is {}."});
        assert_eq!(eval("States.Format('Hello, my name is {}.', $.name)", &input), json!("Hello, my name is Arnav."));
        assert_eq!(eval("States.Format($.template, $.name)", &input), json!("Hello, my name is Arnav."));
        assert_eq!(eval("States.Format('no placeholders')", &input), json!("no placeholders"));
    }

    #[test]
    fn doc_nested_example() {
        // The doc's `myArn` example, nine calls, five deep. As printed it has three placeholders for two values, so
        // it cannot run; with two placeholders it does.
        let input = json!({"ImageRecipe": {"Arn": "arn:aws:imagebuilder:us-east-1:123456789012:image-recipe/r/1.0.2"}});
        let tail = "States.ArrayGetItem(States.StringSplit(States.ArrayGetItem(States.StringSplit($.ImageRecipe.Arn, '/'), 2), '.'), 0), States.ArrayGetItem(States.StringSplit(States.ArrayGetItem(States.StringSplit($.ImageRecipe.Arn, '/'), 2), '.'), 1))";
        let err = parse_err(&format!("States.Format('{{}}.{{}}.{{}}', {tail}"));
        assert_contains(&err, "States.Format: the template has 3 {} placeholders but 2 values follow it");
        let call = parse(&format!("States.Format('{{}}.{{}}', {tail}"));
        assert_eq!(call.eval(&Env { input: &input, context: &Value::Null, seed: 0 }).unwrap(), json!("1.0"));
        assert_eq!(call.paths().len(), 2);
        // The recorded AWS example of a nested call on the context object.
        assert_eq!(
            eval("States.ArrayGetItem(States.StringSplit($$.StateMachine.Name, '-'), 0)", &json!({})),
            json!("sm")
        );
    }

    // ---- Format rendering and escapes ------------------------------------------------------------------------

    #[test]
    fn format_renders_values_as_aws_does() {
        for (value, text) in [
            (json!(null), "null"),
            (json!(1), "1"),
            (json!(1.1), "1.1"),
            (json!(true), "true"),
            (json!(""), ""),
            (json!("{\"Arg1\": 1}"), "{\"Arg1\": 1}"),
            (json!({"Arg1": 1, "Arg2": []}), "{Arg1=1, Arg2=[]}"),
            (json!(["a", [1, null], {"k": "v"}]), "[a, [1, null], {k=v}]"),
        ] {
            assert_eq!(eval("States.Format('<{}>', $.v)", &json!({"v": value})), json!(format!("<{text}>")), "{value}");
        }
        assert_eq!(eval("States.Format('{}{}', 1, States.Format('{}', 'x'))", &json!({})), json!("1x"));
    }

    #[test]
    fn format_placeholder_counts() {
        assert_contains(
            &parse_err("States.Format('{} and {}', 1)"),
            "the template has 2 {} placeholders but 1 value follows it",
        );
        assert_contains(
            &parse_err("States.Format('plain', 1)"),
            "the template has 0 {} placeholders but 1 value follows it",
        );
        let err = eval_err("States.Format($.t, 1)", &json!({"t": "a {} b {}"}));
        assert_contains(&err, "States.Format: the template has 2 {} placeholders but 1 value follows it");
        assert_contains(&parse_err("States.Format(1)"), "States.Format: argument 1 must be a string, got a number");
        assert_contains(&eval_err("States.Format($.t)", &json!({"t": 1})), "argument 1 must be a string, got a number");
    }

    #[test]
    fn escapes_in_string_literals() {
        let input = json!({"v": "test123"});
        assert_eq!(eval(r"States.Format('It\'s \{{}\} \\ ok', $.v)", &input), json!(r"It's {test123} \ ok"));
        // An escaped {} is text, not a placeholder (the case LocalStack got wrong).
        assert_eq!(eval(r#"States.Format('\{"key":"{}"\}', $.v)"#, &input), json!(r#"{"key":"test123"}"#));
        assert_eq!(eval(r"States.Format('\{\}')", &input), json!("{}"));
        assert_eq!(eval(r"States.StringSplit('a\'b,c', ',')", &input), json!(["a'b", "c"]));
        // Unescaped braces outside States.Format templates are plain text (AWS accepts them in StringToJson).
        assert_eq!(eval("States.StringToJson('{\"a\": {\"b\": 1}}')", &input), json!({"a": {"b": 1}}));
        // A template read from a path has no escapes: every {} in it is a placeholder.
        assert_eq!(eval("States.Format($.t, 'x')", &json!({"t": r"\{}"})), json!(r"\x"));
        // Commas, parentheses and "$" inside a string are text.
        assert_eq!(eval("States.Array('a, b)', '$.x')", &input), json!(["a, b)", "$.x"]));
    }

    #[test]
    fn bad_quoting() {
        assert_contains(&parse_err(r"States.Format('a\nb')"), r"invalid escape '\n'");
        assert_contains(&parse_err("States.Format('abc)"), "unterminated string");
        assert_contains(&parse_err(r"States.Format('abc\')"), "unterminated string");
        assert_contains(&parse_err("States.Format(\"abc\")"), "unexpected '\"'");
        assert_contains(&parse_err("States.Format('a' 'b')"), "expected ',' or ')' after an argument, found '''");
    }

    // ---- Syntax ----------------------------------------------------------------------------------------------

    #[test]
    fn whitespace_literals_and_trailing_text() {
        assert_eq!(eval("  States.MathAdd( 1 ,\n\t2 )  ", &json!({})), json!(3));
        assert_eq!(eval("States.Array (true,false , null)", &json!({})), json!([true, false, null]));
        assert_eq!(eval("States.Array(0, -0.5, 1e2, 2.5E-1)", &json!({})), json!([0, -0.5, 100.0, 0.25]));
        assert_contains(&parse_err("States.Array(1) x"), "unexpected text after the closing ')'");
        assert_contains(&parse_err("States.Array(1,,2)"), "empty argument");
        assert_contains(&parse_err("States.Array(1,)"), "empty argument");
        assert_contains(&parse_err("States.Array(1"), "missing ')'");
        assert_contains(&parse_err("States.Array(01)"), "'01' is not a number");
        assert_contains(&parse_err("States.Array(yes)"), "unexpected 'yes'");
        assert_contains(&parse_err("States.Array"), "expected '(' after States.Array");
        assert_contains(&parse_err("$.a"), "must start with 'States.'");
        assert!(Intrinsic::is_intrinsic("States.UUID()"));
        assert!(Intrinsic::is_intrinsic(" States.Array()"));
        assert!(!Intrinsic::is_intrinsic("$.States.x"));
    }

    #[test]
    fn unknown_function_lists_the_known_ones() {
        let err = parse_err("States.Fromat('x')");
        assert_contains(
            &err,
            "unknown intrinsic function States.Fromat; the known ones are States.Format, States.StringToJson",
        );
        assert_contains(&err, "States.UUID");
        assert_contains(&parse_err("States.Array(States.uuid())"), "unknown intrinsic function States.uuid");
        for func in FUNCS {
            assert!(err.contains(func.name()), "{}", func.name());
        }
    }

    #[test]
    fn argument_counts() {
        for (text, message) in [
            ("States.ArrayGetItem($.a, 1, 2)", "States.ArrayGetItem takes 2 arguments, got 3"),
            ("States.ArrayLength()", "States.ArrayLength takes 1 argument, got 0"),
            ("States.Format()", "States.Format takes at least 1 argument, got 0"),
            ("States.MathRandom(1)", "States.MathRandom takes 2 or 3 arguments, got 1"),
            ("States.MathRandom(1, 2, 3, 4)", "States.MathRandom takes 2 or 3 arguments, got 4"),
            ("States.UUID(1)", "States.UUID takes no arguments, got 1"),
            ("States.JsonMerge($.a, $.b)", "States.JsonMerge takes 3 arguments, got 2"),
            ("States.ArrayRange(1, 2)", "States.ArrayRange takes 3 arguments, got 2"),
            ("States.Hash('x')", "States.Hash takes 2 arguments, got 1"),
            ("States.StringToJson()", "States.StringToJson takes 1 argument, got 0"),
        ] {
            assert_contains(&parse_err(text), message);
        }
    }

    #[test]
    fn literal_and_call_types_checked_at_parse_time() {
        assert_contains(
            &parse_err("States.ArrayLength('abc')"),
            "States.ArrayLength: argument 1 must be an array, got a string",
        );
        assert_contains(
            &parse_err("States.ArrayLength(States.Format('x'))"),
            "argument 1 must be an array, but States.Format returns a string",
        );
        assert_contains(&parse_err("States.MathAdd(States.UUID(), 1)"), "but States.UUID returns a string");
        assert_contains(&parse_err("States.Base64Encode(null)"), "argument 1 must be a string, got null");
        assert_contains(
            &parse_err("States.Hash($.d, 'SHA-3')"),
            "States.Hash: unsupported algorithm 'SHA-3' (argument 2); the supported ones are MD5, SHA-1, SHA-256, SHA-384, SHA-512",
        );
        assert_contains(&parse_err("States.Hash($.d, 'sha-256')"), "unsupported algorithm 'sha-256'");
        // A call whose type is only known at run time is accepted.
        assert_eq!(eval("States.ArrayLength(States.StringToJson('[1, 2]'))", &json!({})), json!(2));
        assert_eq!(eval("States.ArrayLength(States.ArrayGetItem($.a, 0))", &json!({"a": [[1, 2, 3]]})), json!(3));
    }

    #[test]
    fn run_time_type_errors_name_the_function() {
        assert_eq!(
            eval_err("States.ArrayLength($.s)", &json!({"s": "x"})),
            "States.ArrayLength: argument 1 must be an array, got a string"
        );
        let err = eval_err("States.Format('{}', States.ArrayLength($.s))", &json!({"s": {}}));
        assert_eq!(err, "States.ArrayLength: argument 1 must be an array, got an object");
        assert_contains(
            &eval_err("States.Hash($.d, $.a)", &json!({"d": "x", "a": "SHA1"})),
            "unsupported algorithm 'SHA1'",
        );
    }

    // ---- Nesting ---------------------------------------------------------------------------------------------

    fn nested(depth: usize) -> String {
        let mut text = "1".to_string();
        for _ in 0..depth {
            text = format!("States.Array({text})");
        }
        text
    }

    #[test]
    fn nesting_limit() {
        let ten = parse(&nested(NESTING_DEFAULT));
        assert_eq!(
            ten.eval(&Env { input: &Value::Null, context: &Value::Null, seed: 0 }).unwrap(),
            json!([[[[[[[[[[1]]]]]]]]]])
        );
        let err = parse_err(&nested(NESTING_DEFAULT + 1));
        assert_contains(&err, "States.Array is nested 11 calls deep; at most 10 are allowed");
        assert!(Intrinsic::parse(&nested(3), 3).is_ok());
        assert_contains(&Intrinsic::parse(&nested(4), 3).unwrap_err(), "nested 4 calls deep; at most 3");
        // A configuration cannot go past NESTING_MAX, and a very deep text fails fast.
        assert!(Intrinsic::parse(&nested(NESTING_MAX), usize::MAX).is_ok());
        assert_contains(&Intrinsic::parse(&nested(NESTING_MAX + 1), usize::MAX).unwrap_err(), "at most 32 are allowed");
        assert_contains(&Intrinsic::parse(&nested(1000), usize::MAX).unwrap_err(), "at most 32 are allowed");
    }

    // ---- Limits ----------------------------------------------------------------------------------------------

    #[test]
    fn array_range_limits() {
        assert_eq!(eval("States.ArrayRange(1, 1000, 1)", &json!({})).as_array().unwrap().len(), 1000);
        assert_eq!(eval("States.ArrayRange(0, -999, -1)", &json!({})).as_array().unwrap().len(), 1000);
        assert_contains(
            &parse_err("States.ArrayRange(1, 1001, 1)"),
            "States.ArrayRange: the range would have 1001 items; at most 1000 are allowed",
        );
        assert_contains(
            &eval_err("States.ArrayRange(0, $.n, 1)", &json!({"n": 10_000_000_000_000_000_000_u64})),
            "out of the integer range",
        );
        assert_contains(
            &eval_err("States.ArrayRange(-9223372036854775808, $.n, 1)", &json!({"n": i64::MAX})),
            "at most 1000",
        );
        assert_contains(
            &parse_err("States.ArrayRange($.a, 9, 0)"),
            "States.ArrayRange: the step (argument 3) must not be 0",
        );
        assert_contains(&parse_err("States.ArrayRange($.a, 9, 0.4)"), "the step (argument 3) must not be 0");
        assert_contains(&eval_err("States.ArrayRange(1, 9, $.s)", &json!({"s": 0})), "must not be 0");
    }

    #[test]
    fn array_partition_limits() {
        assert_contains(
            &parse_err("States.ArrayPartition($.a, 0)"),
            "States.ArrayPartition: the chunk size (argument 2) must be a positive integer, got 0",
        );
        assert_contains(&parse_err("States.ArrayPartition($.a, -3)"), "got -3");
        assert_contains(
            &eval_err("States.ArrayPartition($.a, $.n)", &json!({"a": [1], "n": 0.3})),
            "must be a positive integer, got 0",
        );
        assert_contains(
            &eval_err("States.ArrayPartition($.a, 2)", &json!({"a": "x"})),
            "argument 1 must be an array, got a string",
        );
    }

    #[test]
    fn text_limits() {
        let long = "a".repeat(TEXT_CHARS_MAX);
        let longer = "é".repeat(TEXT_CHARS_MAX + 1);
        for func in ["Base64Encode", "Base64Decode"] {
            let text = format!("States.{func}($.s)");
            let err = eval_err(&text, &json!({"s": longer}));
            assert_eq!(err, format!("States.{func}: argument 1 has 10001 characters; at most 10000 are allowed"));
        }
        assert_eq!(eval("States.Base64Encode($.s)", &json!({"s": long})).as_str().unwrap().len(), 13_336);
        assert!(eval("States.Base64Decode($.s)", &json!({"s": "QUFB".repeat(2500)})).is_string());
        assert_eq!(eval("States.Hash($.s, 'MD5')", &json!({"s": long})).as_str().unwrap().len(), 32);
        assert_contains(
            &eval_err("States.Hash($.s, 'MD5')", &json!({"s": longer})),
            "States.Hash: argument 1 has 10001 characters",
        );
        assert_contains(
            &parse_err(&format!("States.Hash('{}', $.a)", "x".repeat(TEXT_CHARS_MAX + 1))),
            "has 10001 characters",
        );
    }

    #[test]
    fn bad_base64() {
        assert_contains(
            &parse_err("States.Base64Decode('not base64!')"),
            "States.Base64Decode: argument 1 is not valid base64",
        );
        assert_contains(&eval_err("States.Base64Decode($.s)", &json!({"s": "/w=="})), "not UTF-8 text");
    }

    // ---- Paths -----------------------------------------------------------------------------------------------

    #[test]
    fn paths_into_input_and_context() {
        let input = json!({"a": {"b": [10, 20]}, "odd key": "o", "def ghi": {"x,y": 5}});
        assert_eq!(eval("States.Array($.a.b[1], $['odd key'], $.['def ghi'].['x,y'])", &input), json!([20, "o", 5]));
        assert_eq!(eval("States.JsonToString($)", &json!({"k": 1})), json!("{\"k\":1}"));
        assert_eq!(eval("States.Format('{}', $$.Execution.Id)", &input), json!("arn:exec:1"));
        assert_eq!(eval("States.ArrayLength(States.StringSplit($$.Execution['Name'], '-'))", &input), json!(2));
        assert_eq!(eval("States.JsonToString($$.StateMachine)", &input), json!("{\"Name\":\"sm-a-b\"}"));
        let whole = eval("States.JsonMerge($$, $$.Execution, false)", &input);
        assert_eq!(whole["StateMachine"], json!({"Name": "sm-a-b"}));

        let call = parse("States.Format('{} {}', $.a, States.Array($$.Execution.Id, $))");
        let paths: Vec<(bool, String)> = call.paths().into_iter().map(|(c, p)| (c, p.to_string())).collect();
        assert_eq!(
            paths,
            vec![(false, "$.a".to_string()), (true, "$.Execution.Id".to_string()), (false, "$".to_string())]
        );
        assert!(parse("States.UUID()").paths().is_empty());
        assert_eq!(call.name(), "States.Format");
        assert_eq!(call.args().len(), 3);
    }

    #[test]
    fn paths_that_select_nothing_or_do_not_parse() {
        let err = eval_err("States.Format('{}', $.missing)", &json!({}));
        assert_eq!(err, "States.Format: argument 2: the path $.missing selects nothing in the input");
        let err = eval_err("States.Array($$.Nope)", &json!({}));
        assert_eq!(err, "States.Array: argument 1: the path $$.Nope selects nothing in the context object");
        assert_contains(&parse_err("States.Array($myVar)"), "workflow variables ($myVar) are not supported");
        assert_contains(&parse_err("States.Array($.a[*])"), "invalid path");
        assert_contains(&parse_err("States.Array($$$)"), "unexpected '$'");
    }

    // ---- Determinism -----------------------------------------------------------------------------------------

    #[test]
    fn uuid_is_deterministic_per_seed_and_position() {
        let input = json!({});
        let a = eval_seeded("States.UUID()", &input, 1).unwrap();
        assert_eq!(a, eval_seeded("States.UUID()", &input, 1).unwrap());
        assert_ne!(a, eval_seeded("States.UUID()", &input, 2).unwrap());
        // Two calls in one expression differ; the whole expression repeats.
        let pair = eval_seeded("States.Array(States.UUID(), States.UUID())", &input, 1).unwrap();
        assert_ne!(pair[0], pair[1]);
        assert_eq!(pair, eval_seeded("States.Array(States.UUID(), States.UUID())", &input, 1).unwrap());
        // The outermost call is position 0 whatever it is.
        assert_eq!(eval_seeded("States.Format('{}', States.UUID())", &input, 1).unwrap(), pair[0]);
    }

    #[test]
    fn math_random_is_deterministic() {
        let input = json!({});
        let draw = |text: &str, seed: u64| eval_seeded(text, &input, seed).unwrap();
        let unseeded = "States.MathRandom(0, 1000000000)";
        assert_eq!(draw(unseeded, 3), draw(unseeded, 3));
        assert_ne!(draw(unseeded, 3), draw(unseeded, 4));
        let pair = draw("States.Array(States.MathRandom(0, 1000000000), States.MathRandom(0, 1000000000))", 3);
        assert_ne!(pair[0], pair[1]);
        // With a seed argument, the value depends on the seed only: the same in every walk and at every position.
        let seeded = "States.MathRandom(0, 1000000000, 42)";
        assert_eq!(draw(seeded, 3), draw(seeded, 4));
        let pair = draw("States.Array(States.MathRandom(0, 1000000000, 42), States.MathRandom(0, 1000000000, 42))", 3);
        assert_eq!(pair[0], pair[1]);
        assert_eq!(pair[0], draw(seeded, 9));
        assert_ne!(draw(seeded, 3), draw("States.MathRandom(0, 1000000000, 43)", 3));
    }
}
