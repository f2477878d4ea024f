//! `--config` files: the platform's settings for `run`, plus `[namespace]` and `[server]` for `serve`. Unknown
//! fields are refused by name, and table sizes past their maximum are refused naming the setting.

use std::path::PathBuf;

use anyhow::Context;

/// Platform limits from a TOML file; defaults without one.
pub(crate) fn read_config(path: Option<PathBuf>) -> anyhow::Result<platform::Config> {
    let Some(path) = path else { return Ok(platform::Config::default()) };
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let config: platform::Config =
        toml::from_str(&text).with_context(|| format!("{} is not a valid config", path.display()))?;
    config.tables.check().map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(config)
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
) -> anyhow::Result<(platform::Config, api::NamespaceLimits, ServerTable)> {
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
    let config: platform::Config =
        toml::Value::Table(table).try_into().with_context(|| format!("{} is not a valid config", path.display()))?;
    config.tables.check().map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok((config, limits, server))
}
