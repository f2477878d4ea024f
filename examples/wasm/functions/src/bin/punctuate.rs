//! More exclamation marks for regulars.

use serde_json::{Value, json};

fn punctuate(input: Value) -> Result<Value, String> {
    let visits = input["visits"].as_u64().unwrap_or(1).min(5) as usize;
    Ok(json!({"mark": "!".repeat(visits)}))
}

specfaas::entry!(punctuate);
