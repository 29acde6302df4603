//! Running `nft`: a JSON transaction on stdin (`nft -j -f -`), or a script (`nft -f -`), with
//! `-c` for a check that changes nothing.
//!
//! The nftables crate's `apply_ruleset_raw` pipes stdin and stdout but leaves stderr inherited,
//! so its `NftFailed { stderr }` is always empty and nft's explanation ends up on our stderr.
//! We need the explanation (and to tell "not permitted" apart), so the process is run here; the
//! payload still comes from the crate's types.

use std::process::Stdio;

use nftables::schema::Nftables;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// Why nft did not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("cannot run {program}: {source}")]
    Spawn { program: String, source: std::io::Error },
    #[error("nft is not permitted to change the ruleset (CAP_NET_ADMIN needed): {stderr}")]
    NotPermitted { stderr: String },
    #[error("nft refused the ruleset: {stderr}")]
    Refused { stderr: String },
}

/// How to invoke nft: the program and arguments before nft's own (`["nft"]`, or for a network
/// namespace `["ip", "netns", "exec", "NAME", "nft"]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nft {
    command: Vec<String>,
}

impl Default for Nft {
    fn default() -> Self {
        Self { command: vec!["nft".into()] }
    }
}

impl Nft {
    pub fn with_command(command: Vec<String>) -> Self {
        assert!(!command.is_empty(), "an nft command needs a program");
        Self { command }
    }

    /// Inside the network namespace `name` (`ip netns exec`).
    pub fn in_netns(name: &str) -> Self {
        Self::with_command(vec!["ip".into(), "netns".into(), "exec".into(), name.into(), "nft".into()])
    }

    /// Applies (or with `check`, only checks) a JSON transaction atomically.
    pub async fn json(&self, payload: &Nftables<'_>, check: bool) -> Result<String, NftError> {
        let text = serde_json::to_string(payload).expect("nftables commands serialize");
        let mut args = vec!["-j"];
        if check {
            args.push("-c");
        }
        args.extend(["-f", "-"]);
        self.run(&args, &text).await
    }

    /// Applies (or checks) an nft script atomically.
    pub async fn script(&self, script: &str, check: bool) -> Result<String, NftError> {
        let mut args = Vec::new();
        if check {
            args.push("-c");
        }
        args.extend(["-f", "-"]);
        self.run(&args, script).await
    }

    /// Any other nft invocation, e.g. `list table inet gatewayd`.
    pub async fn args(&self, args: &[&str]) -> Result<String, NftError> {
        self.run(args, "").await
    }

    async fn run(&self, args: &[&str], stdin: &str) -> Result<String, NftError> {
        let program = self.command.join(" ");
        let mut child = Command::new(&self.command[0])
            .args(&self.command[1..])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| NftError::Spawn { program: program.clone(), source })?;
        let mut input = child.stdin.take().expect("stdin is piped");
        input.write_all(stdin.as_bytes()).await.map_err(|source| NftError::Spawn { program: program.clone(), source })?;
        drop(input);
        let out = child.wait_with_output().await.map_err(|source| NftError::Spawn { program, source })?;
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        if stderr.contains("Operation not permitted") {
            Err(NftError::NotPermitted { stderr })
        } else {
            Err(NftError::Refused { stderr: if stderr.is_empty() { format!("exit status {}", out.status) } else { stderr } })
        }
    }
}

/// Whether this process holds CAP_NET_ADMIN (bit 12 of CapEff in /proc/self/status).
pub fn has_net_admin() -> bool {
    const CAP_NET_ADMIN: u32 = 12;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("CapEff:").map(|v| v.trim().to_owned())))
        .and_then(|hex| u64::from_str_radix(&hex, 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_NET_ADMIN) != 0)
}
