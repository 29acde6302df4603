//! `gatewayd validate`, `schema` and `hash-password` as operators and CI run them.

mod common;

use common::{gatewayd, root};

#[test]
fn example_profiles_are_valid() {
    for name in ["lab", "dmz-genesys", "behind-nat"] {
        let path = format!("profiles/{name}.toml");
        let out = gatewayd().args(["validate", &path]).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), format!("ok: {path}\n"), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success());
    }
}

/// Each broken profile gets exactly the diagnostics in its `.expected` file, and exit code 1.
#[test]
fn broken_profiles_get_their_exact_messages() {
    let dir = root().join("tests/profiles/broken");
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 15, "expected the whole set of broken profiles, found {}", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let rel = case.strip_prefix(root()).unwrap().to_str().unwrap().to_owned();
        let expected = std::fs::read_to_string(case.with_extension("expected")).unwrap();
        let out = gatewayd().args(["validate", &rel]).output().unwrap();
        let got = String::from_utf8_lossy(&out.stdout);
        if got != expected || out.status.code() != Some(1) {
            failures.push(format!("{rel} (exit {:?})\n  expected: {expected}  got:      {got}", out.status.code()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The boot script runs only `system render`: an invalid profile must come out of it with the
/// same diagnostics as `validate` and its own exit status (65), a profile that validates with 0.
#[test]
fn system_render_validates_with_the_same_diagnostics_and_its_own_status() {
    let broken = "tests/profiles/broken/duplicate-dn.toml";
    let out_dir = std::env::temp_dir().join(format!("gatewayd-render-{}", std::process::id()));
    let out = out_dir.to_str().unwrap();
    let validate = gatewayd().args(["validate", broken]).output().unwrap();
    let render = gatewayd().args(["system", "render", "--profile", broken, "--out", out]).output().unwrap();
    assert_eq!(render.status.code(), Some(65), "{}", String::from_utf8_lossy(&render.stderr));
    assert_eq!(String::from_utf8_lossy(&render.stderr), String::from_utf8_lossy(&validate.stdout));
    assert!(!out_dir.exists(), "nothing written for an invalid profile");
    let render = gatewayd().args(["system", "render", "--profile", "profiles/lab.toml", "--out", out]).output().unwrap();
    let _ = std::fs::remove_dir_all(&out_dir);
    assert_eq!(render.status.code(), Some(0), "{}", String::from_utf8_lossy(&render.stderr));
}

#[test]
fn validate_reports_every_file_and_fails_if_any_is_invalid() {
    let out = gatewayd().args(["validate", "profiles/lab.toml", "tests/profiles/broken/duplicate-dn.toml"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("ok: profiles/lab.toml\n"), "{stdout}");
    assert!(stdout.contains("duplicate-dn.toml:"), "{stdout}");
    assert_eq!(out.status.code(), Some(1));
}

/// `--format json`: the same verdicts as the text lines, as one object tools can read.
#[test]
fn validate_json_gives_each_profile_its_verdict_checksum_and_problems() {
    let broken = "tests/profiles/broken/duplicate-dn.toml";
    let out = gatewayd().args(["validate", "--format", "json", "profiles/lab.toml", broken]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(report["valid"], false);
    let lab = &report["profiles"][0];
    assert_eq!(lab["path"], "profiles/lab.toml");
    assert_eq!(lab["valid"], true);
    assert_eq!(lab["problems"].as_array().unwrap().len(), 0);
    use sha2::Digest;
    let sha = sha2::Sha256::digest(std::fs::read(root().join("profiles/lab.toml")).unwrap());
    let hex: String = sha.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(lab["sha256"], hex.as_str());

    // Each problem is the text line's parts: file:line:col: key: message.
    let text = String::from_utf8_lossy(&gatewayd().args(["validate", broken]).output().unwrap().stdout).into_owned();
    let problems = report["profiles"][1]["problems"].as_array().unwrap();
    assert_eq!(report["profiles"][1]["valid"], false);
    assert_eq!(problems.len(), text.lines().count(), "{text}");
    for (p, line) in problems.iter().zip(text.lines()) {
        let rebuilt = format!("{}:{}:{}: {}: {}", p["file"].as_str().unwrap(), p["line"], p["column"], p["key"].as_str().unwrap(), p["message"].as_str().unwrap());
        assert_eq!(rebuilt, line);
    }

    let ok = gatewayd().args(["validate", "--format", "json", "profiles/lab.toml"]).output().unwrap();
    assert!(ok.status.success());
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&ok.stdout).unwrap()["valid"], true);
}

#[test]
fn missing_profile_is_reported() {
    let out = gatewayd().args(["validate", "tests/profiles/nowhere.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("tests/profiles/nowhere.toml: cannot read the profile:"));
}

#[test]
fn committed_schema_is_current() {
    let out = gatewayd().arg("schema").output().unwrap();
    assert!(out.status.success());
    let committed = std::fs::read_to_string(root().join("schemas/profile.schema.json")).unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout) == committed,
        "schemas/profile.schema.json is stale: run `just schema` (gatewayd schema > schemas/profile.schema.json)"
    );
}

#[test]
fn hash_password_prints_both_ha1s() {
    use std::io::Write;
    let mut child = gatewayd()
        .args(["hash-password", "--user", "5001", "--realm", "gatewayd-lab"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"pass5001\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    // Independently: md5("5001:gatewayd-lab:pass5001"), sha256 of the same.
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "ha1_md5 = \"b57f4ae4b1526d4d7c76995cad2590cc\"\nha1_sha256 = \"f2384924731b9bcce70844dd8f374b958117f03da1032f1605229f1e58976ea5\"\n"
    );
}

#[test]
fn committed_profile_reference_is_current() {
    let out = gatewayd().args(["schema", "--markdown"]).output().unwrap();
    assert!(out.status.success());
    let committed = std::fs::read_to_string(root().join("docs/profile-reference.md")).unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout) == committed,
        "docs/profile-reference.md is stale: run `just schema`"
    );
}
