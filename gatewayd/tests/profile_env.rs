//! `GATEWAYD_` environment overrides layered over the profile file (figment).

mod common;

use gatewayd::profile::{load_str, AutoAnswer};

fn lab() -> (std::path::PathBuf, String) {
    let path = common::root().join("profiles/lab.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    (path, text)
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn nested_keys_are_overridden_with_typed_values() {
    let (path, text) = lab();
    let loaded = load_str(
        &path,
        &text,
        env(&[
            ("GATEWAYD_OBSERVE__LOG_LEVEL", "debug"),
            ("GATEWAYD_MEDIA__MAX_CALLS", "50"),
            ("GATEWAYD_SIP__REGISTRAR__MIN_EXPIRES", "2m"),
            ("GATEWAYD_WEB__ALLOWED_ORIGINS", "[\"https://crm.example.com\"]"),
            ("GATEWAYD_PROFILE", "ignored: not an override"),
            ("PATH", "/usr/bin"),
        ]),
    )
    .unwrap();
    let p = &loaded.profile;
    assert_eq!(p.observe.log_level, "debug");
    assert_eq!(p.media.max_calls, 50);
    assert_eq!(p.sip.registrar.min_expires.as_secs(), 120);
    assert_eq!(p.web.allowed_origins, ["https://crm.example.com"]);
    assert_eq!(p.agents[0].auto_answer, AutoAnswer::OnRequest, "untouched keys keep the file's values");
    assert_eq!(
        loaded.overrides,
        ["GATEWAYD_MEDIA__MAX_CALLS", "GATEWAYD_OBSERVE__LOG_LEVEL", "GATEWAYD_SIP__REGISTRAR__MIN_EXPIRES", "GATEWAYD_WEB__ALLOWED_ORIGINS"]
    );
}

#[test]
fn a_bad_override_names_the_variable() {
    let (path, text) = lab();
    let err = load_str(&path, &text, env(&[("GATEWAYD_MEDIA__MAX_CALLS", "lots")])).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("media.max_calls"), "{msg}");
    assert!(msg.contains("GATEWAYD_MEDIA__MAX_CALLS"), "{msg}");
}

#[test]
fn overrides_are_validated_like_the_file() {
    let (path, text) = lab();
    let err = load_str(&path, &text, env(&[("GATEWAYD_MEDIA__MAX_CALLS", "5000")])).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("media.public_ports: range 40000-40999 has 1000 ports but media.max_calls = 5000 needs 5000"), "{msg}");
}
