//! `Choice` rules of the Amazon States Language: every comparison operator (and its `...Path` form), the type tests
//! (`IsNull`, `IsPresent`, ...) and `And` / `Or` / `Not`. Parsing and evaluation both live here so that the
//! validator and the engine agree on one definition.
//!
//! Semantics follow AWS Step Functions: a comparison whose `Variable` is missing is a runtime error (use
//! `IsPresent` to test for it); a comparison between values of the wrong type is simply false.

use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    String,
    Numeric,
    Boolean,
    Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    Equals,
    LessThan,
    GreaterThan,
    LessThanEquals,
    GreaterThanEquals,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypeTest {
    IsNull,
    IsPresent,
    IsNumeric,
    IsString,
    IsBoolean,
    IsTimestamp,
}

/// The right-hand side of a comparison: a literal, or another path into the input (`...Path` operators).
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    Literal(Value),
    Path(Path),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Rule {
    And(Vec<Rule>),
    Or(Vec<Rule>),
    Not(Box<Rule>),
    Compare {
        variable: Path,
        family: Family,
        relation: Relation,
        operand: Operand,
    },
    /// `StringMatches`: `*` matches any run of characters; `\*` and `\\` are literal.
    Matches {
        variable: Path,
        pattern: String,
    },
    Test {
        variable: Path,
        test: TypeTest,
        expect: bool,
    },
}

const FAMILIES: [(&str, Family); 4] = [
    ("String", Family::String),
    ("Numeric", Family::Numeric),
    ("Boolean", Family::Boolean),
    ("Timestamp", Family::Timestamp),
];
const RELATIONS: [(&str, Relation); 5] = [
    ("Equals", Relation::Equals),
    ("LessThanEquals", Relation::LessThanEquals),
    ("GreaterThanEquals", Relation::GreaterThanEquals),
    ("LessThan", Relation::LessThan),
    ("GreaterThan", Relation::GreaterThan),
];
const TESTS: [(&str, TypeTest); 6] = [
    ("IsNull", TypeTest::IsNull),
    ("IsPresent", TypeTest::IsPresent),
    ("IsNumeric", TypeTest::IsNumeric),
    ("IsString", TypeTest::IsString),
    ("IsBoolean", TypeTest::IsBoolean),
    ("IsTimestamp", TypeTest::IsTimestamp),
];

/// Parses one rule object. `top_level` rules carry `Next` (checked by the caller); nested ones must not.
pub fn parse_rule(obj: &Map<String, Value>, top_level: bool) -> Result<Rule, String> {
    let mut operators: Vec<&str> =
        obj.keys().map(String::as_str).filter(|k| !matches!(*k, "Variable" | "Next" | "Comment")).collect();
    if !top_level && obj.contains_key("Next") {
        return Err("\"Next\" is only allowed on top-level Choice rules".into());
    }
    if operators.len() != 1 {
        operators.sort();
        return Err(if operators.is_empty() {
            "a Choice rule needs exactly one operator (e.g. StringEquals, And)".into()
        } else {
            format!("a Choice rule needs exactly one operator, found {}", operators.join(", "))
        });
    }
    let op = operators[0];
    let arg = &obj[op];
    let sub_rules = |arg: &Value| -> Result<Vec<Rule>, String> {
        let items = arg.as_array().ok_or(format!("\"{op}\" needs an array of rules"))?;
        if items.is_empty() {
            return Err(format!("\"{op}\" needs at least one rule"));
        }
        items
            .iter()
            .map(|r| parse_rule(r.as_object().ok_or(format!("\"{op}\" entries must be objects"))?, false))
            .collect()
    };
    match op {
        "And" | "Or" => {
            if obj.contains_key("Variable") {
                return Err(format!("\"{op}\" must not have a Variable"));
            }
            let rules = sub_rules(arg)?;
            return Ok(if op == "And" { Rule::And(rules) } else { Rule::Or(rules) });
        }
        "Not" => {
            if obj.contains_key("Variable") {
                return Err("\"Not\" must not have a Variable".into());
            }
            let inner = arg.as_object().ok_or("\"Not\" needs one rule object")?;
            return Ok(Rule::Not(Box::new(parse_rule(inner, false)?)));
        }
        _ => {}
    }
    let variable_text = obj
        .get("Variable")
        .ok_or(format!("\"{op}\" needs a \"Variable\""))?
        .as_str()
        .ok_or("\"Variable\" must be a path string")?;
    let variable = Path::parse(variable_text).map_err(|e| e.to_string())?;
    if op == "StringMatches" {
        let pattern = arg.as_str().ok_or("\"StringMatches\" needs a string pattern")?;
        return Ok(Rule::Matches { variable, pattern: pattern.to_string() });
    }
    if let Some((_, test)) = TESTS.iter().find(|(name, _)| *name == op) {
        let expect = arg.as_bool().ok_or(format!("\"{op}\" needs true or false"))?;
        return Ok(Rule::Test { variable, test: *test, expect });
    }
    let (base, is_path) = match op.strip_suffix("Path") {
        Some(base) => (base, true),
        None => (op, false),
    };
    for (family_name, family) in FAMILIES {
        let Some(relation_name) = base.strip_prefix(family_name) else {
            continue;
        };
        let Some((_, relation)) = RELATIONS.iter().find(|(name, _)| *name == relation_name) else {
            continue;
        };
        if family == Family::Boolean && *relation != Relation::Equals {
            continue;
        }
        let operand = if is_path {
            let text = arg.as_str().ok_or(format!("\"{op}\" needs a path string"))?;
            Operand::Path(Path::parse(text).map_err(|e| e.to_string())?)
        } else {
            let ok = match family {
                Family::String => arg.is_string(),
                Family::Numeric => arg.is_number(),
                Family::Boolean => arg.is_boolean(),
                Family::Timestamp => arg.as_str().is_some_and(|s| parse_timestamp(s).is_some()),
            };
            if !ok {
                return Err(format!("\"{op}\" needs a {} operand, got {arg}", family_name.to_lowercase()));
            }
            Operand::Literal(arg.clone())
        };
        return Ok(Rule::Compare { variable, family, relation: *relation, operand });
    }
    Err(format!("unknown Choice operator \"{op}\""))
}

fn parse_timestamp(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text, &Rfc3339).ok()
}

fn ordering(family: Family, left: &Value, right: &Value) -> Option<std::cmp::Ordering> {
    match family {
        Family::String => Some(left.as_str()?.cmp(right.as_str()?)),
        Family::Numeric => left.as_f64()?.partial_cmp(&right.as_f64()?),
        Family::Boolean => (left.as_bool()? == right.as_bool()?).then_some(std::cmp::Ordering::Equal),
        Family::Timestamp => Some(parse_timestamp(left.as_str()?)?.cmp(&parse_timestamp(right.as_str()?)?)),
    }
}

/// Matches `text` against an ASL `StringMatches` pattern.
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    // Tokenize: literal chars and stars.
    let mut tokens: Vec<Option<char>> = Vec::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => tokens.push(Some(chars.next().unwrap_or('\\'))),
            '*' => tokens.push(None),
            c => tokens.push(Some(c)),
        }
    }
    let text: Vec<char> = text.chars().collect();
    // Classic greedy matcher with backtracking to the last star.
    let (mut t, mut p) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match tokens.get(p) {
            Some(Some(c)) if *c == text[t] => {
                t += 1;
                p += 1;
            }
            Some(None) => {
                star = Some((p, t));
                p += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    tokens[p..].iter().all(Option::is_none)
}

impl Rule {
    /// Every path the rule reads: variables and `...Path` operands.
    pub fn paths(&self) -> Vec<&Path> {
        match self {
            Rule::And(rules) | Rule::Or(rules) => rules.iter().flat_map(Rule::paths).collect(),
            Rule::Not(rule) => rule.paths(),
            Rule::Compare { variable, operand: Operand::Path(p), .. } => vec![variable, p],
            Rule::Compare { variable, .. } | Rule::Matches { variable, .. } | Rule::Test { variable, .. } => {
                vec![variable]
            }
        }
    }

    /// Evaluates the rule against the Choice state's effective input.
    pub fn eval(&self, input: &Value) -> Result<bool, String> {
        let lookup =
            |path: &Path| path.get(input).ok_or_else(|| format!("Choice Variable {path} is not present in the input"));
        Ok(match self {
            Rule::And(rules) => {
                for r in rules {
                    if !r.eval(input)? {
                        return Ok(false);
                    }
                }
                true
            }
            Rule::Or(rules) => {
                for r in rules {
                    if r.eval(input)? {
                        return Ok(true);
                    }
                }
                false
            }
            Rule::Not(rule) => !rule.eval(input)?,
            Rule::Test { variable, test, expect } => {
                let node = variable.get(input);
                let actual = match test {
                    TypeTest::IsPresent => node.is_some(),
                    TypeTest::IsNull => node.is_some_and(Value::is_null),
                    TypeTest::IsNumeric => node.is_some_and(Value::is_number),
                    TypeTest::IsString => node.is_some_and(Value::is_string),
                    TypeTest::IsBoolean => node.is_some_and(Value::is_boolean),
                    TypeTest::IsTimestamp => node.and_then(Value::as_str).and_then(parse_timestamp).is_some(),
                };
                actual == *expect
            }
            Rule::Matches { variable, pattern } => {
                lookup(variable)?.as_str().is_some_and(|s| wildcard_match(pattern, s))
            }
            Rule::Compare { variable, family, relation, operand } => {
                let left = lookup(variable)?;
                let right = match operand {
                    Operand::Literal(v) => v,
                    Operand::Path(p) => lookup(p)?,
                };
                use std::cmp::Ordering::*;
                match ordering(*family, left, right) {
                    None => false,
                    Some(o) => match relation {
                        Relation::Equals => o == Equal,
                        Relation::LessThan => o == Less,
                        Relation::GreaterThan => o == Greater,
                        Relation::LessThanEquals => o != Greater,
                        Relation::GreaterThanEquals => o != Less,
                    },
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(rule: Value, input: Value, expect: Result<bool, &str>) {
        let parsed = parse_rule(rule.as_object().unwrap(), true).unwrap();
        match (parsed.eval(&input), expect) {
            (Ok(got), Ok(want)) => assert_eq!(got, want, "{rule} on {input}"),
            (Err(got), Err(want)) => assert!(got.contains(want), "{got}"),
            (got, want) => panic!("{rule} on {input}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn every_operator_family() {
        let input = json!({"s": "bob", "n": 5, "m": 7, "b": true, "t": "2024-01-02T00:00:00Z",
                           "u": "2024-01-01T00:00:00Z", "z": null});
        check(json!({"Variable": "$.s", "StringEquals": "bob"}), input.clone(), Ok(true));
        check(json!({"Variable": "$.s", "StringLessThan": "carl"}), input.clone(), Ok(true));
        check(json!({"Variable": "$.s", "StringGreaterThanEquals": "bob"}), input.clone(), Ok(true));
        check(json!({"Variable": "$.s", "StringMatches": "b*"}), input.clone(), Ok(true));
        check(json!({"Variable": "$.s", "StringMatches": "*x"}), input.clone(), Ok(false));
        check(json!({"Variable": "$.n", "NumericLessThanPath": "$.m"}), input.clone(), Ok(true));
        check(json!({"Variable": "$.n", "NumericGreaterThan": 5}), input.clone(), Ok(false));
        check(json!({"Variable": "$.n", "NumericGreaterThanEquals": 5}), input.clone(), Ok(true));
        check(json!({"Variable": "$.n", "NumericLessThanEquals": 4.5}), input.clone(), Ok(false));
        check(json!({"Variable": "$.n", "NumericEquals": 5}), input.clone(), Ok(true));
        check(json!({"Variable": "$.b", "BooleanEquals": true}), input.clone(), Ok(true));
        check(json!({"Variable": "$.b", "BooleanEqualsPath": "$.b"}), input.clone(), Ok(true));
        check(json!({"Variable": "$.t", "TimestampGreaterThanPath": "$.u"}), input.clone(), Ok(true));
        check(json!({"Variable": "$.t", "TimestampEquals": "2024-01-02T00:00:00Z"}), input.clone(), Ok(true));
        check(json!({"Variable": "$.s", "NumericEquals": 5}), input.clone(), Ok(false)); // type mismatch
        check(json!({"Variable": "$.z", "IsNull": true}), input.clone(), Ok(true));
        check(json!({"Variable": "$.q", "IsPresent": false}), input.clone(), Ok(true));
        check(json!({"Variable": "$.n", "IsNumeric": true}), input.clone(), Ok(true));
        check(json!({"Variable": "$.s", "IsString": true}), input.clone(), Ok(true));
        check(json!({"Variable": "$.b", "IsBoolean": true}), input.clone(), Ok(true));
        check(json!({"Variable": "$.t", "IsTimestamp": true}), input.clone(), Ok(true));
        check(json!({"Variable": "$.q", "StringEquals": "x"}), input.clone(), Err("not present"));
    }

    #[test]
    fn boolean_combinators() {
        let input = json!({"a": 1, "b": "x"});
        let and = json!({"And": [{"Variable": "$.a", "NumericEquals": 1}, {"Variable": "$.b", "StringEquals": "y"}]});
        check(and, input.clone(), Ok(false));
        let or = json!({"Or": [{"Variable": "$.a", "NumericEquals": 2}, {"Variable": "$.b", "StringEquals": "x"}]});
        check(or, input.clone(), Ok(true));
        check(json!({"Not": {"Variable": "$.a", "NumericEquals": 1}}), input, Ok(false));
    }

    #[test]
    fn malformed_rules_say_why() {
        for (rule, needle) in [
            (json!({"Variable": "$.a"}), "exactly one operator"),
            (json!({"Variable": "$.a", "StringEquals": 3}), "needs a string operand"),
            (json!({"Variable": "$.a", "NumericFoo": 3}), "unknown Choice operator"),
            (json!({"And": []}), "at least one rule"),
            (json!({"Variable": "$.a", "StringEquals": "x", "NumericEquals": 1}), "found NumericEquals, StringEquals"),
            (json!({"Not": {"Variable": "$.a", "IsNull": true, "Next": "x"}}), "only allowed on top-level"),
        ] {
            let err = parse_rule(rule.as_object().unwrap(), true).unwrap_err();
            assert!(err.contains(needle), "{rule}: {err}");
        }
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_match("*.log", "a.log"));
        assert!(wildcard_match("a*b*c", "aXXbYc"));
        assert!(!wildcard_match("a*b", "ac"));
        assert!(wildcard_match(r"a\*", "a*"));
        assert!(!wildcard_match(r"a\*", "ab"));
    }
}
