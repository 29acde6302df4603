//! Loading a profile: the file first (with exact positions for syntax and type errors), then
//! `GATEWAYD_` environment overrides layered on top with figment, then semantic validation.
//!
//! Environment mapping: `GATEWAYD_<SECTION>__<KEY>[__<KEY>...]=value` sets `section.key...`;
//! for example `GATEWAYD_OBSERVE__LOG_LEVEL=debug` or `GATEWAYD_MEDIA__MAX_CALLS=200`. Values are
//! read as TOML-like scalars or arrays (`true`, `42`, `["a","b"]`). Variables without `__` are
//! not overrides (so `GATEWAYD_PROFILE` and friends never collide).

use std::path::{Path, PathBuf};

use figment::providers::{Format, Serialized, Toml};
use figment::value::Value;
use figment::Figment;
use sha2::{Digest, Sha256};

use super::diag::{Diagnostic, Diagnostics, SourceMap};
use super::validate::validate;
use super::Profile;

pub const ENV_PREFIX: &str = "GATEWAYD_";
pub const ENV_SEPARATOR: &str = "__";

/// A profile that parsed and validated, with where it came from.
#[derive(Debug, Clone)]
pub struct LoadedProfile {
    pub profile: Profile,
    /// The file it was read from.
    pub path: PathBuf,
    /// Directory that relative paths in the profile resolve against.
    pub dir: PathBuf,
    /// SHA-256 of the file's bytes, hex: tells which profile is in effect.
    pub sha256: String,
    /// Environment variables that overrode values, by name.
    pub overrides: Vec<String>,
    /// Set when this is the last good profile, run because the one at `path` kept failing to
    /// start (`system::last_good`).
    pub fallback: Option<ProfileFallback>,
}

/// Why a start runs the last good profile instead of the operator's.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ProfileFallback {
    /// The operator's profile that did not reach READY.
    pub failed_sha256: String,
    /// Its starts that did not reach READY.
    pub failed_starts: u32,
}

impl LoadedProfile {
    /// A path from the profile, resolved against the profile's directory.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        self.dir.join(p)
    }
}

/// Reads, overrides from the process environment, and validates the profile at `path`.
pub fn load(path: &Path) -> Result<LoadedProfile, Diagnostics> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Diagnostics(vec![Diagnostic {
            path: path.to_owned(),
            position: None,
            key: String::new(),
            message: format!("cannot read the profile: {e}"),
        }])
    })?;
    load_str(path, &text, std::env::vars())
}

/// Like [`load`] with the text and the environment given.
pub fn load_str(
    path: &Path,
    text: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<LoadedProfile, Diagnostics> {
    let map = SourceMap::new(path, text);
    check_file(&map, text)?;

    let mut figment = Figment::from(Toml::string(text));
    let mut overrides = Vec::new();
    for (name, value) in env {
        let Some(key) = override_key(&name) else { continue };
        let value: Value = value.parse().unwrap_or_else(|never| match never {});
        figment = figment.merge(Serialized::default(&key, value));
        overrides.push(name);
    }
    overrides.sort();
    let profile: Profile = figment.extract().map_err(|e| env_diagnostics(path, &overrides, e))?;

    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let dir = if dir.as_os_str().is_empty() { PathBuf::from(".") } else { dir };
    let mut problems = validate(&profile, &map, &dir);
    if !problems.is_empty() {
        problems.sort_by_key(|d| d.position.unwrap_or((usize::MAX, 0)));
        return Err(Diagnostics(problems));
    }
    let sha256 = text_sha256(text);
    Ok(LoadedProfile { profile, path: path.to_owned(), dir, sha256, overrides, fallback: None })
}

/// The SHA-256 (hex) that names a profile's text: `LoadedProfile::sha256`, `/health`.
pub fn text_sha256(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Syntax, types and unknown keys, with the position and key path of the first problem.
fn check_file(map: &SourceMap<'_>, text: &str) -> Result<(), Diagnostics> {
    let de = toml::de::Deserializer::parse(text).map_err(|e| {
        Diagnostics(vec![map.at_offset(e.span(), String::new(), clean(e.message()))])
    })?;
    match serde_path_to_error::deserialize::<_, Profile>(de) {
        Ok(_) => Ok(()),
        Err(e) => {
            let key = e.path().to_string();
            let key = if key == "." { String::new() } else { key };
            let inner = e.into_inner();
            Err(Diagnostics(vec![map.at_offset(inner.span(), key, clean(inner.message()))]))
        }
    }
}

fn clean(message: &str) -> String {
    message.trim().replace('\n', " ")
}

/// `GATEWAYD_MEDIA__MAX_CALLS` -> `media.max_calls`.
fn override_key(name: &str) -> Option<String> {
    let rest = name.strip_prefix(ENV_PREFIX)?;
    if !rest.contains(ENV_SEPARATOR) {
        return None;
    }
    let parts: Vec<String> = rest.split(ENV_SEPARATOR).map(str::to_ascii_lowercase).collect();
    if parts.iter().any(String::is_empty) {
        return None;
    }
    Some(parts.join("."))
}

fn env_diagnostics(path: &Path, overrides: &[String], e: figment::Error) -> Diagnostics {
    Diagnostics(
        e.into_iter()
            .map(|e| {
                let key = e.path.join(".");
                let var = overrides
                    .iter()
                    .find(|v| override_key(v).is_some_and(|k| key.starts_with(&k) || k.starts_with(&key)))
                    .map(|v| format!(" (from environment variable {v})"))
                    .unwrap_or_default();
                Diagnostic { path: path.to_owned(), position: None, key, message: format!("{}{var}", e.kind) }
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn override_keys_map_double_underscores_to_nesting() {
        assert_eq!(override_key("GATEWAYD_OBSERVE__LOG_LEVEL").as_deref(), Some("observe.log_level"));
        assert_eq!(override_key("GATEWAYD_SIP__REGISTRAR__MIN_EXPIRES").as_deref(), Some("sip.registrar.min_expires"));
        assert_eq!(override_key("GATEWAYD_PROFILE"), None);
        assert_eq!(override_key("OTHER_A__B"), None);
    }
}
