//! Shouts a greeting, asking another function for the punctuation: typed input and output.

use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct Greeting {
    greeting: String,
    visits: u64,
}

#[derive(Serialize)]
struct Shout {
    shout: String,
}

fn shout(g: Greeting) -> Result<Shout, specfaas::Error> {
    let mark = specfaas::invoke("punctuate", &serde_json::json!({"visits": g.visits}))?;
    Ok(Shout { shout: format!("{}{}", g.greeting.to_uppercase(), mark["mark"].as_str().unwrap_or("!")) })
}

specfaas::entry!(shout);
