//! Greets someone and counts their visits in the store.

use serde_json::{Value, json};

fn greet(input: Value) -> Result<Value, specfaas::Error> {
    let name = input["name"].as_str().ok_or("the input needs a \"name\"")?;
    let key = format!("visits:{name}");
    let visits = specfaas::kv::get_as::<u64>(&key)?.unwrap_or(0) + 1;
    specfaas::kv::put(&key, &visits)?;
    println!("greeting {name}, visit {visits}");
    Ok(json!({"greeting": format!("Hello, {name}!"), "visits": visits}))
}

specfaas::entry!(greet);
