//! API keys: `uuid:key` credentials per namespace, as OpenWhisk's. Only a SHA-256 of each key is stored, in the
//! system namespace of the store (which no user namespace can name: user namespace names cannot contain NUL), and
//! keys are compared in constant time.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use storage::{Batch, Op, Store, Write};
use subtle::ConstantTimeEq;

use crate::error::{Error, Result};

/// The store namespace holding keys and deployed actions.
pub const SYSTEM: &str = "\u{0}system";

#[derive(Debug, Clone, PartialEq)]
pub struct Credential {
    pub uuid: String,
    pub key: String,
    pub namespace: String,
}

impl Credential {
    /// `uuid:key`, the form OpenWhisk clients take.
    pub fn auth(&self) -> String {
        format!("{}:{}", self.uuid, self.key)
    }
}

fn hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Creates a key for `namespace`.
pub async fn create(store: &dyn Store, namespace: &str) -> Result<Credential> {
    model::check_name(namespace).map_err(|e| Error::Invalid(format!("namespace: {e}")))?;
    let uuid = uuid::Uuid::new_v4().to_string();
    let key = hex::encode(uuid::Uuid::new_v4().as_bytes()) + &hex::encode(uuid::Uuid::new_v4().as_bytes());
    let record = json!({"namespace": namespace, "hash": hash(&key), "revoked": false});
    let batch = Batch {
        namespace: SYSTEM.into(),
        writes: vec![Write { key: format!("key:{uuid}"), op: Op::Put(record) }],
        expect: vec![],
    };
    store.apply(batch).await?;
    Ok(Credential { uuid, key, namespace: namespace.into() })
}

/// The namespace a `uuid:key` credential belongs to, if it is valid and not revoked.
pub async fn verify(store: &dyn Store, uuid: &str, key: &str) -> Option<String> {
    let record = store.get(SYSTEM, &format!("key:{uuid}")).await.ok()?.value?;
    let stored = record["hash"].as_str()?;
    let matches: bool = stored.as_bytes().ct_eq(hash(key).as_bytes()).into();
    (matches && record["revoked"] != Value::Bool(true)).then(|| record["namespace"].as_str().unwrap_or("").to_string())
}

/// Keys of `namespace`: (uuid, revoked).
pub async fn list(store: &dyn Store, namespace: &str) -> Result<Vec<(String, bool)>> {
    let keys = store.scan(SYSTEM, "key:").await?;
    Ok(keys
        .into_iter()
        .filter(|(_, v)| v["namespace"] == namespace)
        .map(|(k, v)| (k.trim_start_matches("key:").to_string(), v["revoked"] == Value::Bool(true)))
        .collect())
}

/// Revokes a key of `namespace`; whether it existed.
pub async fn revoke(store: &dyn Store, namespace: &str, uuid: &str) -> Result<bool> {
    let id = format!("key:{uuid}");
    let Some(mut record) = store.get(SYSTEM, &id).await?.value else { return Ok(false) };
    if record["namespace"] != namespace {
        return Ok(false);
    }
    record["revoked"] = json!(true);
    let batch =
        Batch { namespace: SYSTEM.into(), writes: vec![Write { key: id, op: Op::Put(record) }], expect: vec![] };
    store.apply(batch).await?;
    Ok(true)
}
