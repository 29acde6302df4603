//! keepalived.conf from `[ha]`: one VRRP instance per side (public and internal), both in one
//! sync group so the two virtual addresses always move together. VRRPv3 with 500 ms adverts,
//! sent unicast to the peer's own address on each side; VRRPv2 with a simple password only when
//! `ha.vrrp_auth` asks (VRRPv3 has no authentication). A health script asks this node's
//! gatewayd for `/health` every second: a dead gatewayd faults the group and the peer takes
//! over. Leaving MASTER runs `gatewayd ha standby`, which ends the calls still held here.

use std::fmt::Write as _;

use super::{interface_name, Invocation};
use crate::profile::{Ha, HaSide, Profile};

/// Advertisement interval: the standby declares the master dead after about three of them.
const ADVERT_INTERVAL: &str = "0.5";

pub(super) fn config(profile: &Profile, ha: &Ha, invocation: &Invocation) -> Result<String, String> {
    let exe = invocation.gatewayd.to_str().ok_or("the gatewayd path is not UTF-8")?;
    if exe.contains(['"', '\n', ' ']) {
        return Err(format!("the gatewayd path {exe:?} cannot be quoted in keepalived.conf"));
    }
    let admin = profile.observe.admin;
    let version = if ha.vrrp_auth.is_some() { 2 } else { 3 };
    let mut c = String::from("# Rendered by gatewayd from the profile's [ha]; edit the profile, not this file.\n");
    let _ = writeln!(c, "global_defs {{\n    router_id gatewayd-{}\n    vrrp_version {version}\n    script_user root\n    enable_script_security\n    vrrp_garp_master_delay 1\n    vrrp_garp_master_repeat 3\n}}\n", sanitize(&profile.site.name));
    let _ = writeln!(
        c,
        "vrrp_script gatewayd_alive {{\n    script \"{exe} ha check --admin {admin}\"\n    interval 1\n    timeout 1\n    fall 1\n    rise 2\n}}\n"
    );
    let _ = writeln!(
        c,
        "vrrp_sync_group gatewayd {{\n    group {{\n        public\n        internal\n    }}\n    notify_backup \"{exe} ha standby --admin {admin}\"\n    notify_fault \"{exe} ha standby --admin {admin}\"\n}}\n"
    );
    let public = profile.public.interface.as_deref().ok_or("[ha] needs public.interface")?;
    let internal = profile.internal.interface.as_deref().ok_or("[ha] needs internal.interface")?;
    instance(&mut c, "public", interface_name(public)?, &ha.public, ha);
    instance(&mut c, "internal", interface_name(internal)?, &ha.internal, ha);
    Ok(c)
}

fn instance(c: &mut String, name: &str, interface: &str, side: &HaSide, ha: &Ha) {
    let _ = writeln!(c, "vrrp_instance {name} {{");
    // Both start as BACKUP: the priorities decide, and a node that restarts does not first
    // claim the address it may not hold.
    let _ = writeln!(c, "    state BACKUP\n    interface {interface}\n    virtual_router_id {}\n    priority {}", side.virtual_router_id, ha.priority);
    let _ = writeln!(c, "    advert_int {ADVERT_INTERVAL}");
    let _ = writeln!(c, "    unicast_peer {{\n        {}\n    }}", side.peer);
    if let Some(pass) = &ha.vrrp_auth {
        let _ = writeln!(c, "    authentication {{\n        auth_type PASS\n        auth_pass {pass}\n    }}");
    }
    let _ = writeln!(c, "    virtual_ipaddress {{\n        {} dev {interface}\n    }}", side.virtual_address);
    let _ = writeln!(c, "    track_script {{\n        gatewayd_alive\n    }}\n}}\n");
}

/// keepalived's router_id is a bare word.
fn sanitize(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' }).collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::{render_for, Invocation};

    const NODE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../profiles/ha-pair-a.toml");

    fn rendered(edit: impl Fn(String) -> String) -> String {
        let text = edit(std::fs::read_to_string(NODE).unwrap());
        let loaded = crate::profile::load_str(Path::new(NODE), &text, std::iter::empty()).map_err(|d| d.to_string()).unwrap();
        let files = render_for(&loaded.profile, Path::new("/etc/gatewayd"), &Invocation { gatewayd: "/usr/bin/gatewayd".into() }).unwrap();
        files.into_iter().find(|(n, _)| n == "keepalived.conf").map(|(_, c)| c).expect("keepalived.conf")
    }

    #[test]
    fn both_sides_in_one_group_with_vrrpv3_unicast_and_health() {
        let c = rendered(|t| t);
        assert!(c.contains("vrrp_version 3\n"), "{c}");
        assert!(c.contains("vrrp_instance public {\n    state BACKUP\n    interface ens192\n    virtual_router_id 51\n    priority 150\n    advert_int 0.5\n    unicast_peer {\n        203.0.113.12\n    }\n"), "{c}");
        assert!(c.contains("virtual_ipaddress {\n        203.0.113.10/24 dev ens192\n    }"), "{c}");
        assert!(c.contains("vrrp_instance internal {\n    state BACKUP\n    interface ens224\n    virtual_router_id 52\n"), "{c}");
        assert!(c.contains("group {\n        public\n        internal\n    }"), "{c}");
        assert!(c.contains("script \"/usr/bin/gatewayd ha check --admin 10.20.0.11:9090\""), "{c}");
        assert!(c.contains("notify_fault \"/usr/bin/gatewayd ha standby --admin 10.20.0.11:9090\""), "{c}");
        assert!(!c.contains("authentication"), "VRRPv3 has no authentication: {c}");
    }

    #[test]
    fn a_vrrp_password_means_vrrpv2_and_a_private_file() {
        let c = rendered(|t| t.replace("priority = 150", "priority = 150\nvrrp_auth = \"s3cret\""));
        assert!(c.contains("vrrp_version 2\n"));
        assert!(c.contains("auth_type PASS\n        auth_pass s3cret\n"));
        assert!(super::super::holds_secret("keepalived.conf", &c));
        assert!(!super::super::holds_secret("keepalived.conf", &rendered(|t| t)));
    }

    #[test]
    fn the_private_file_is_written_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let c = rendered(|t| t.replace("priority = 150", "priority = 150\nvrrp_auth = \"s3cret\""));
        let dir = std::env::temp_dir().join(format!("gatewayd-keepalived-{}", std::process::id()));
        super::super::write_all(&dir, &vec![("keepalived.conf".into(), c)]).unwrap();
        let mode = std::fs::metadata(dir.join("keepalived.conf")).unwrap().permissions().mode() & 0o777;
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(mode, 0o600);
    }
}
