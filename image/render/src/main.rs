//! Renders the operating-system files of the appliance from a gatewayd profile: systemd-networkd
//! units, timesyncd and journal-upload settings, hostname, resolv.conf, SSH settings and the boot
//! firewall's SSH opening. It reads only `[system]` and `[management]`; the rest of the profile is
//! `gatewayd validate`'s business, which runs first at boot. It writes files into one directory and
//! touches nothing else; `/usr/lib/gatewayd/system-setup` puts them where the OS reads them.
//!
//! The output contract (the same one `gatewayd system render --profile P --out DIR` is to keep):
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
//!
//! Exit status 0 when written; 1 with `PATH: problem` on stderr when the profile cannot be read or
//! a value would not fit the files (a newline in a name, a relative path without a profile dir).

use serde::Deserialize;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, Default, Deserialize)]
struct Profile {
    #[serde(default)]
    system: System,
    management: Option<Management>,
}

#[derive(Debug, Default, Deserialize)]
struct System {
    hostname: Option<String>,
    #[serde(default)]
    ntp: Vec<String>,
    #[serde(default)]
    dns: Vec<IpAddr>,
    #[serde(default)]
    interfaces: Vec<Interface>,
    journal_upload: Option<JournalUpload>,
}

#[derive(Debug, Deserialize)]
struct Interface {
    name: String,
    addresses: Vec<String>,
    gateway: Option<IpAddr>,
}

#[derive(Debug, Deserialize)]
struct JournalUpload {
    url: String,
    ca: Option<PathBuf>,
    certificate: Option<PathBuf>,
    key: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
struct Management {
    address: IpAddr,
    #[serde(default)]
    allow_from: Vec<String>,
    #[serde(default)]
    ssh: bool,
    #[serde(default)]
    ssh_authorized_keys: Vec<String>,
}

/// One output file: its path relative to the output directory and its content.
type Rendered = Vec<(String, String)>;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (profile, out) = match args.as_slice() {
        [p, profile, o, out] if p == "--profile" && o == "--out" => (PathBuf::from(profile), PathBuf::from(out)),
        _ => {
            eprintln!("usage: gatewayd-system-render --profile PROFILE --out DIR");
            std::process::exit(2);
        }
    };
    if let Err(problem) = run(&profile, &out) {
        eprintln!("{}: {problem}", profile.display());
        std::process::exit(1);
    }
}

fn run(profile_path: &Path, out: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(profile_path).map_err(|e| format!("cannot read: {e}"))?;
    let profile: Profile = toml::from_str(&text).map_err(|e| e.to_string())?;
    let base = profile_path.parent().unwrap_or(Path::new("/"));
    let base = std::path::absolute(base).map_err(|e| e.to_string())?;
    for (name, content) in render(&profile, &base)? {
        let path = out.join(&name);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        std::fs::write(&path, content).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

/// Refuses values that would break out of a line in the generated files.
fn one_line<'a>(what: &str, value: &'a str) -> Result<&'a str, String> {
    if value.is_empty() || value.contains(['\n', '\r', '\0']) {
        return Err(format!("{what}: {value:?} must be one non-empty line"));
    }
    Ok(value)
}

fn interface_name(name: &str) -> Result<&str, String> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c));
    if ok {
        Ok(name)
    } else {
        Err(format!("system.interfaces: {name:?} is not an interface name"))
    }
}

fn render(profile: &Profile, base: &Path) -> Result<Rendered, String> {
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
        files.push((format!("network/50-{name}.network"), network_unit(interface)?));
    }
    let mut ntp = String::new();
    for server in &system.ntp {
        write!(ntp, " {}", one_line("system.ntp", server)?).unwrap();
    }
    // No fallback: a DMZ box talks only to the time servers its profile names.
    files.push(("timesyncd.conf".into(), format!("[Time]\nNTP={}\nFallbackNTP=\n", ntp.trim_start())));
    if let Some(upload) = &system.journal_upload {
        files.push(("journal-upload.conf".into(), journal_upload(upload, base)?));
    }
    if let Some(management) = profile.management.as_ref().filter(|m| m.ssh) {
        files.extend(ssh(management)?);
    }
    Ok(files)
}

fn network_unit(interface: &Interface) -> Result<String, String> {
    let mut unit = format!("[Match]\nName={}\n\n[Link]\n", interface.name);
    // Addresses exist as soon as the link is up, cable or not, so the gateway can always bind.
    unit.push_str("RequiredForOnline=no-carrier\n\n[Network]\n");
    // IPv6 neighbour discovery needs a link-local address; IPv4-only links get none.
    let ipv6 = interface.addresses.iter().any(|a| a.contains(':'));
    let link_local = if ipv6 { "ipv6" } else { "no" };
    unit.push_str("DHCP=no\nIPv6AcceptRA=no\nLLDP=no\nEmitLLDP=no\n");
    writeln!(unit, "LinkLocalAddressing={link_local}").unwrap();
    unit.push_str("ConfigureWithoutCarrier=yes\nIgnoreCarrierLoss=yes\n");
    for address in &interface.addresses {
        let address = one_line("system.interfaces.addresses", address)?;
        if !address.contains('/') {
            return Err(format!("system.interfaces.addresses: {address:?} needs a prefix length"));
        }
        writeln!(unit, "Address={address}").unwrap();
    }
    if let Some(gateway) = interface.gateway {
        writeln!(unit, "Gateway={gateway}").unwrap();
    }
    Ok(unit)
}

fn journal_upload(upload: &JournalUpload, base: &Path) -> Result<String, String> {
    let mut conf = format!("[Upload]\nURL={}\n", one_line("system.journal_upload.url", &upload.url)?);
    let files = [
        ("ServerKeyFile", &upload.key),
        ("ServerCertificateFile", &upload.certificate),
        ("TrustedCertificateFile", &upload.ca),
    ];
    for (key, path) in files {
        if let Some(path) = path {
            let path = base.join(path);
            let path = path.to_str().ok_or("system.journal_upload: path is not UTF-8")?;
            writeln!(conf, "{key}={}", one_line("system.journal_upload", path)?).unwrap();
        }
    }
    Ok(conf)
}

fn ssh(management: &Management) -> Result<Rendered, String> {
    let listen = match management.address {
        IpAddr::V4(a) => format!("{a}:22"),
        IpAddr::V6(a) => format!("[{a}]:22"),
    };
    let mut keys = String::new();
    for key in &management.ssh_authorized_keys {
        writeln!(keys, "{}", one_line("management.ssh_authorized_keys", key.trim())?).unwrap();
    }
    let family = if management.address.is_ipv4() { "ip" } else { "ip6" };
    let mut nft = String::new();
    for from in &management.allow_from {
        let from = one_line("management.allow_from", from)?;
        let from_family = if from.contains(':') { "ip6" } else { "ip" };
        if from_family == family {
            writeln!(
                nft,
                "add rule inet gatewayd_boot input {family} saddr {from} {family} daddr {} tcp dport 22 accept",
                management.address
            )
            .unwrap();
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

    fn rendered(toml_text: &str) -> Result<Rendered, String> {
        let profile: Profile = toml::from_str(toml_text).map_err(|e| e.to_string())?;
        render(&profile, Path::new("/etc/gatewayd"))
    }

    fn file<'a>(files: &'a Rendered, name: &str) -> Option<&'a str> {
        files.iter().find(|(n, _)| n == name).map(|(_, c)| c.as_str())
    }

    const FULL: &str = r#"
        [site]
        name = "x"
        [management]
        address = "10.20.0.54"
        allow_from = ["10.20.0.0/24", "fd00::/8"]
        ssh = true
        ssh_authorized_keys = ["ssh-ed25519 AAAA noc"]
        [system]
        hostname = "gw-dmz-1"
        ntp = ["192.168.210.1", "ntp.example.net"]
        dns = ["192.168.210.2"]
        interfaces = [
          { name = "ens192", addresses = ["203.0.113.10/24"], gateway = "203.0.113.1" },
          { name = "ens256", addresses = ["10.20.0.54/24"] },
        ]
        journal_upload = { url = "https://logs.example.net:19532", ca = "ca.pem", key = "/keys/k.pem" }
    "#;

    #[test]
    fn every_file_of_a_full_profile() {
        let files = rendered(FULL).unwrap();
        assert_eq!(file(&files, "hostname"), Some("gw-dmz-1\n"));
        assert_eq!(file(&files, "resolv.conf"), Some("nameserver 192.168.210.2\n"));
        let public = file(&files, "network/50-ens192.network").unwrap();
        assert!(public.contains("Name=ens192\n"));
        assert!(public.contains("Address=203.0.113.10/24\nGateway=203.0.113.1\n"));
        assert!(public.contains("LinkLocalAddressing=no\n"));
        assert!(!file(&files, "network/50-ens256.network").unwrap().contains("Gateway"));
        let v6 = rendered(&FULL.replace("\"10.20.0.54/24\"", "\"10.20.0.54/24\", \"2001:db8::54/64\"")).unwrap();
        let management = file(&v6, "network/50-ens256.network").unwrap();
        assert!(management.contains("Address=2001:db8::54/64\n"));
        assert!(management.contains("LinkLocalAddressing=ipv6\n"));
        assert_eq!(
            file(&files, "timesyncd.conf"),
            Some("[Time]\nNTP=192.168.210.1 ntp.example.net\nFallbackNTP=\n")
        );
        let upload = file(&files, "journal-upload.conf").unwrap();
        assert!(upload.contains("URL=https://logs.example.net:19532\n"));
        assert!(upload.contains("TrustedCertificateFile=/etc/gatewayd/ca.pem\n"));
        assert!(upload.contains("ServerKeyFile=/keys/k.pem\n"));
        assert!(!upload.contains("ServerCertificateFile"));
        assert_eq!(file(&files, "sshd.conf"), Some("ListenAddress 10.20.0.54:22\n"));
        assert_eq!(file(&files, "authorized_keys"), Some("ssh-ed25519 AAAA noc\n"));
        assert_eq!(
            file(&files, "firewall.nft"),
            Some("add rule inet gatewayd_boot input ip saddr 10.20.0.0/24 ip daddr 10.20.0.54 tcp dport 22 accept\n")
        );
    }

    #[test]
    fn no_system_section_means_only_time_without_fallback() {
        let files = rendered("[management]\naddress = \"10.0.0.1\"\nallow_from = []\n").unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(file(&files, "timesyncd.conf"), Some("[Time]\nNTP=\nFallbackNTP=\n"));
    }

    #[test]
    fn ssh_off_renders_no_ssh_files() {
        let files = rendered(&FULL.replace("ssh = true", "ssh = false")).unwrap();
        assert!(file(&files, "sshd.conf").is_none());
        assert!(file(&files, "firewall.nft").is_none());
    }

    #[test]
    fn values_that_would_break_a_file_are_refused() {
        let bad_name = FULL.replace("\"ens256\"", "\"ens256\\n[Network]\"");
        assert!(rendered(&bad_name).unwrap_err().contains("not an interface name"));
        let bad_host = FULL.replace("\"gw-dmz-1\"", "\"gw\\nx\"");
        assert!(rendered(&bad_host).unwrap_err().contains("system.hostname"));
        let no_prefix = FULL.replace("10.20.0.54/24", "10.20.0.54");
        assert!(rendered(&no_prefix).unwrap_err().contains("prefix length"));
    }
}
