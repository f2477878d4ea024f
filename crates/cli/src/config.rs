//! `--config` files: the platform's settings and `[sandbox]` for `run`, plus `[namespace]` and `[server]` for
//! `serve`. Unknown
//! fields are refused by name, and table sizes past their maximum are refused naming the setting.

use std::path::PathBuf;

use anyhow::Context;

/// Platform limits and the `[sandbox]` table from a TOML file; defaults without one.
pub(crate) fn read_config(path: Option<PathBuf>) -> anyhow::Result<(platform::Config, runtime::sandbox::Config)> {
    let Some(path) = path else { return Ok(Default::default()) };
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut table: toml::Table =
        toml::from_str(&text).with_context(|| format!("{} is not valid TOML", path.display()))?;
    let sandbox = sandbox_table(&mut table, &path)?;
    let config: platform::Config =
        toml::Value::Table(table).try_into().with_context(|| format!("{} is not a valid config", path.display()))?;
    config.check().map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok((config, sandbox))
}

/// The `[sandbox]` table: how functions are confined (see README, "Security model").
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SandboxTable {
    mode: Option<runtime::sandbox::Mode>,
    /// Peers functions may reach although the defaults deny them: `"127.0.0.1:8080"`, `"10.1.0.0/16"`.
    #[serde(default)]
    allow: Vec<String>,
    /// Peers denied on top of the defaults.
    #[serde(default)]
    deny: Vec<String>,
    /// Host paths bound read-only into every sandbox.
    #[serde(default)]
    expose: Vec<PathBuf>,
    uid_base: Option<u32>,
}

fn sandbox_table(table: &mut toml::Table, path: &std::path::Path) -> anyhow::Result<runtime::sandbox::Config> {
    let t: SandboxTable = match table.remove("sandbox") {
        Some(v) => v.try_into().with_context(|| format!("{}: invalid [sandbox] table", path.display()))?,
        None => SandboxTable::default(),
    };
    let rules = |list: &[String], name: &str| -> anyhow::Result<Vec<runtime::sandbox::Rule>> {
        list.iter()
            .map(|r| r.parse().map_err(|e| anyhow::anyhow!("{}: [sandbox] {name}: {e}", path.display())))
            .collect()
    };
    let defaults = runtime::sandbox::Config::default();
    Ok(runtime::sandbox::Config {
        mode: t.mode.unwrap_or(defaults.mode),
        allow: rules(&t.allow, "allow")?,
        deny: rules(&t.deny, "deny")?,
        expose: t.expose,
        uid_base: t.uid_base.unwrap_or(defaults.uid_base),
    })
}

/// The `[server]` table of `serve`'s config file.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ServerTable {
    pub(crate) listen: Option<std::net::SocketAddr>,
    pub(crate) data_dir: Option<PathBuf>,
}

/// `serve`'s config file: the platform's settings, plus `[namespace]` (per-namespace invocation limits) and
/// `[server]` (listen address, data directory).
pub(crate) fn read_serve_config(
    path: Option<PathBuf>,
) -> anyhow::Result<(platform::Config, api::NamespaceLimits, ServerTable, runtime::sandbox::Config)> {
    let Some(path) = path else { return Ok(Default::default()) };
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut table: toml::Table =
        toml::from_str(&text).with_context(|| format!("{} is not valid TOML", path.display()))?;
    let limits = match table.remove("namespace") {
        Some(v) => v.try_into().with_context(|| format!("{}: invalid [namespace] limits", path.display()))?,
        None => api::NamespaceLimits::default(),
    };
    let server = match table.remove("server") {
        Some(v) => v.try_into().with_context(|| format!("{}: invalid [server] table", path.display()))?,
        None => ServerTable::default(),
    };
    let sandbox = sandbox_table(&mut table, &path)?;
    let config: platform::Config =
        toml::Value::Table(table).try_into().with_context(|| format!("{} is not a valid config", path.display()))?;
    config.check().map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok((config, limits, server, sandbox))
}
