//! The profile: the one declarative TOML document that drives the whole appliance.
//!
//! Owns the Rust types of the profile (which also yield the JSON Schema and the reference docs),
//! loading (file, then `GATEWAYD_` environment overrides), validation with precise
//! `file:line:col` diagnostics, and the diff between two profiles on reload.
//! It must not start listeners or touch the system: it only describes and checks.
