//! The operating-system files of the appliance, rendered from a profile's `[system]` and
//! `[management]`: systemd-networkd units, timesyncd and journal-upload settings, hostname,
//! resolv.conf, SSH settings and the boot firewall's SSH opening. It writes files into one
//! directory and touches nothing else; the image's `system-setup` puts them where the OS reads them.
//!
//! The output contract of `gatewayd system render --profile P --out DIR`:
//!
//! | file | present when | content |
//! |---|---|---|
//! | `hostname` | `system.hostname` | the name and a newline |
//! | `resolv.conf` | `system.dns` | one `nameserver ADDR` line per resolver |
//! | `network/50-NAME.network` | per `system.interfaces` entry | static addresses, gateway, no DHCP/RA |
//! | `timesyncd.conf` | always | `[Time]`, `NTP=` the servers (may be empty), `FallbackNTP=` empty |
//! | `journal-upload.conf` | `system.journal_upload` | `[Upload]` URL and absolute TLS file paths |
//! | `sshd.conf` | `management.ssh` | `ListenAddress` of the management address, port 22 |
//! | `authorized_keys` | `management.ssh` | `management.ssh_authorized_keys`, one per line |
//! | `firewall.nft` | `management.ssh` | rules for table `inet gatewayd_boot` letting `allow_from` reach SSH |
//! | `keepalived.conf` | `[ha]` | VRRP instances of both sides in one sync group (see `keepalived`); mode 0600 when it holds `ha.vrrp_auth` |

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::Path;
use std::process::ExitCode;

use crate::profile::{Interface, JournalUpload, ManagementSide, Profile};

mod keepalived;

/// What keepalived's scripts run: this gatewayd binary.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub gatewayd: std::path::PathBuf,
}

impl Default for Invocation {
    fn default() -> Self {
        Self { gatewayd: "/usr/bin/gatewayd".into() }
    }
}

/// Output files: each path relative to the output directory, and its content.
pub type Rendered = Vec<(String, String)>;

/// Exit status of `system render` for a profile that does not validate (EX_DATAERR), so the
/// boot script tells "the profile is invalid" from "its settings cannot be written" without
/// running `validate` first.
pub const EXIT_INVALID_PROFILE: u8 = 65;

/// `gatewayd system render`: loads (and so validates, with the diagnostics `validate` prints)
/// the profile, then writes the files.
pub fn cli_render(profile_path: &Path, out: &Path) -> ExitCode {
    let loaded = match crate::profile::load(profile_path) {
        Ok(l) => l,
        Err(diagnostics) => {
            eprintln!("{diagnostics}");
            return ExitCode::from(EXIT_INVALID_PROFILE);
        }
    };
    let base = std::path::absolute(&loaded.dir).unwrap_or_else(|_| loaded.dir.clone());
    let invocation = std::env::current_exe().map(|gatewayd| Invocation { gatewayd }).unwrap_or_default();
    let written = render_for(&loaded.profile, &base, &invocation).and_then(|files| write_all(out, &files));
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(problem) => {
            eprintln!("{}: {problem}", profile_path.display());
            ExitCode::FAILURE
        }
    }
}

fn write_all(out: &Path, files: &Rendered) -> Result<(), String> {
    for (name, content) in files {
        let path = out.join(name);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        if holds_secret(name, content) {
            crate::system::write_private_file(&path, content.as_bytes()).map_err(|e| format!("{}: {e}", path.display()))?;
        } else {
            std::fs::write(&path, content).map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    Ok(())
}

/// Files that carry a secret are written readable by their owner only.
fn holds_secret(name: &str, content: &str) -> bool {
    name == "keepalived.conf" && content.contains("auth_pass")
}

/// Refuses values that would break out of a line in the generated files.
fn one_line<'a>(what: &str, value: &'a str) -> Result<&'a str, String> {
    if value.is_empty() || value.contains(['\n', '\r', '\0']) {
        return Err(format!("{what}: {value:?} must be one non-empty line"));
    }
    Ok(value)
}

fn interface_name(name: &str) -> Result<&str, String> {
    let ok = !name.is_empty() && name.len() <= 15 && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c));
    if ok {
        Ok(name)
    } else {
        Err(format!("system.interfaces: {name:?} is not an interface name"))
    }
}

/// Every file for `profile`; relative TLS paths resolve against `base` (the profile's directory).
pub fn render(profile: &Profile, base: &Path) -> Result<Rendered, String> {
    render_for(profile, base, &Invocation::default())
}

/// Like [`render`], with keepalived's scripts running `invocation`'s binary.
pub fn render_for(profile: &Profile, base: &Path, invocation: &Invocation) -> Result<Rendered, String> {
    let system = &profile.system;
    let mut files = Rendered::new();
    if let Some(hostname) = &system.hostname {
        files.push(("hostname".into(), format!("{}\n", one_line("system.hostname", hostname)?)));
    }
    if !system.dns.is_empty() {
        let lines: String = system.dns.iter().map(|a| format!("nameserver {a}\n")).collect();
        files.push(("resolv.conf".into(), lines));
    }
    for interface in &system.interfaces {
        let name = interface_name(&interface.name)?;
        files.push((format!("network/50-{name}.network"), network_unit(interface)));
    }
    let mut ntp = String::new();
    for server in &system.ntp {
        let _ = write!(ntp, " {}", one_line("system.ntp", server)?);
    }
    // No fallback: a DMZ box talks only to the time servers its profile names.
    files.push(("timesyncd.conf".into(), format!("[Time]\nNTP={}\nFallbackNTP=\n", ntp.trim_start())));
    if let Some(upload) = &system.journal_upload {
        files.push(("journal-upload.conf".into(), journal_upload(upload, base)?));
    }
    if profile.management.ssh {
        files.extend(ssh(&profile.management)?);
    }
    if let Some(ha) = &profile.ha {
        files.push(("keepalived.conf".into(), keepalived::config(profile, ha, invocation)?));
    }
    Ok(files)
}

fn network_unit(interface: &Interface) -> String {
    let mut unit = format!("[Match]\nName={}\n\n[Link]\n", interface.name);
    // Addresses exist as soon as the link is up, cable or not, so the gateway can always bind.
    unit.push_str("RequiredForOnline=no-carrier\n\n[Network]\n");
    // IPv6 neighbour discovery needs a link-local address; IPv4-only links get none.
    let ipv6 = interface.addresses.iter().any(|a| a.0.addr().is_ipv6());
    let link_local = if ipv6 { "ipv6" } else { "no" };
    unit.push_str("DHCP=no\nIPv6AcceptRA=no\nLLDP=no\nEmitLLDP=no\n");
    let _ = writeln!(unit, "LinkLocalAddressing={link_local}");
    unit.push_str("ConfigureWithoutCarrier=yes\nIgnoreCarrierLoss=yes\n");
    for address in &interface.addresses {
        let _ = writeln!(unit, "Address={address}");
    }
    if let Some(gateway) = interface.gateway {
        let _ = writeln!(unit, "Gateway={gateway}");
    }
    unit
}

fn journal_upload(upload: &JournalUpload, base: &Path) -> Result<String, String> {
    let mut conf = format!("[Upload]\nURL={}\n", one_line("system.journal_upload.url", &upload.url)?);
    let files = [("ServerKeyFile", &upload.key), ("ServerCertificateFile", &upload.certificate), ("TrustedCertificateFile", &upload.ca)];
    for (key, path) in files {
        if let Some(path) = path {
            let path = base.join(path);
            let path = path.to_str().ok_or("system.journal_upload: path is not UTF-8")?;
            let _ = writeln!(conf, "{key}={}", one_line("system.journal_upload", path)?);
        }
    }
    Ok(conf)
}

fn ssh(management: &ManagementSide) -> Result<Rendered, String> {
    let listen = match management.address {
        IpAddr::V4(a) => format!("{a}:22"),
        IpAddr::V6(a) => format!("[{a}]:22"),
    };
    let mut keys = String::new();
    for key in &management.ssh_authorized_keys {
        let _ = writeln!(keys, "{}", one_line("management.ssh_authorized_keys", key.trim())?);
    }
    let family = if management.address.is_ipv4() { "ip" } else { "ip6" };
    let mut nft = String::new();
    for from in &management.allow_from {
        let from_family = if from.0.addr().is_ipv4() { "ip" } else { "ip6" };
        if from_family == family {
            let _ = writeln!(nft, "add rule inet gatewayd_boot input {family} saddr {from} {family} daddr {} tcp dport 22 accept", management.address);
        }
    }
    Ok(vec![
        ("sshd.conf".into(), format!("ListenAddress {listen}\n")),
        ("authorized_keys".into(), keys),
        ("firewall.nft".into(), nft),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lab profile with `[system]` and management changes spliced in, loaded for real.
    fn rendered(system: &str, management_extra: &str) -> Result<Rendered, String> {
        let lab = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../profiles/lab.toml")).unwrap();
        let text = lab.replace("allow_from = [\"127.0.0.0/8\"]\n", &format!("allow_from = [\"127.0.0.0/8\", \"fd00::/8\"]\n{management_extra}")) + system;
        let loaded = crate::profile::load_str(Path::new("/etc/gatewayd/profile.toml"), &text, std::iter::empty()).map_err(|d| d.to_string())?;
        render(&loaded.profile, Path::new("/etc/gatewayd"))
    }

    fn file<'a>(files: &'a Rendered, name: &str) -> Option<&'a str> {
        files.iter().find(|(n, _)| n == name).map(|(_, c)| c.as_str())
    }

    const SYSTEM: &str = r#"
[system]
hostname = "gw-dmz-1"
ntp = ["192.168.210.1", "ntp.example.net"]
dns = ["192.168.210.2"]
interfaces = [
  { name = "ens192", addresses = ["203.0.113.10/24"], gateway = "203.0.113.1" },
  { name = "ens256", addresses = ["10.20.0.54/24", "2001:db8::54/64"] },
]
journal_upload = { url = "https://logs.example.net:19532", ca = "ca.pem", key = "/keys/k.pem" }
"#;
    const SSH: &str = "ssh = true\nssh_authorized_keys = [\"ssh-ed25519 AAAA noc\"]\n";

    #[test]
    fn every_file_of_a_full_profile() {
        let files = rendered(SYSTEM, SSH).unwrap();
        assert_eq!(file(&files, "hostname"), Some("gw-dmz-1\n"));
        assert_eq!(file(&files, "resolv.conf"), Some("nameserver 192.168.210.2\n"));
        let public = file(&files, "network/50-ens192.network").unwrap();
        assert!(public.contains("Name=ens192\n"));
        assert!(public.contains("Address=203.0.113.10/24\nGateway=203.0.113.1\n"), "the host's own address, not its network: {public}");
        assert!(public.contains("LinkLocalAddressing=no\n"));
        let management = file(&files, "network/50-ens256.network").unwrap();
        assert!(!management.contains("Gateway"));
        assert!(management.contains("Address=2001:db8::54/64\n"));
        assert!(management.contains("LinkLocalAddressing=ipv6\n"));
        assert_eq!(file(&files, "timesyncd.conf"), Some("[Time]\nNTP=192.168.210.1 ntp.example.net\nFallbackNTP=\n"));
        let upload = file(&files, "journal-upload.conf").unwrap();
        assert!(upload.contains("URL=https://logs.example.net:19532\n"));
        assert!(upload.contains("TrustedCertificateFile=/etc/gatewayd/ca.pem\n"));
        assert!(upload.contains("ServerKeyFile=/keys/k.pem\n"));
        assert!(!upload.contains("ServerCertificateFile"));
        assert_eq!(file(&files, "sshd.conf"), Some("ListenAddress 127.0.0.1:22\n"));
        assert_eq!(file(&files, "authorized_keys"), Some("ssh-ed25519 AAAA noc\n"));
        assert_eq!(file(&files, "firewall.nft"), Some("add rule inet gatewayd_boot input ip saddr 127.0.0.0/8 ip daddr 127.0.0.1 tcp dport 22 accept\n"));
    }

    #[test]
    fn no_system_section_means_only_time_without_fallback() {
        let files = rendered("", "").unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(file(&files, "timesyncd.conf"), Some("[Time]\nNTP=\nFallbackNTP=\n"));
    }

    #[test]
    fn values_that_would_break_a_file_are_refused() {
        let bad_name = SYSTEM.replace("\"ens256\"", "\"ens256\\n[Network]\"");
        assert!(rendered(&bad_name, "").unwrap_err().contains("not an interface name"));
        let bad_host = SYSTEM.replace("\"gw-dmz-1\"", "\"gw\\nx\"");
        assert!(rendered(&bad_host, "").unwrap_err().contains("system.hostname"));
        let no_prefix = SYSTEM.replace("10.20.0.54/24", "10.20.0.54");
        assert!(rendered(&no_prefix, "").unwrap_err().contains("prefix length"));
    }

    #[test]
    fn writes_the_files_under_the_output_directory() {
        let dir = std::env::temp_dir().join(format!("gatewayd-render-{}", std::process::id()));
        write_all(&dir, &rendered(SYSTEM, SSH).unwrap()).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("network/50-ens192.network")).unwrap().lines().next(), Some("[Match]"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
