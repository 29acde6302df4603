//! The difference between the running profile and a new one, section by section, so a reload
//! hands each subsystem only what changed.

use super::Profile;

/// A part of the profile that one subsystem owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Section {
    Site,
    Sides,
    Tls,
    Web,
    Sip,
    Agents,
    Upstream,
    Media,
    Turn,
    Firewall,
    Bans,
    Observe,
    System,
    Ha,
}

/// One changed section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub section: Section,
    /// Which keys changed, for the log.
    pub keys: Vec<&'static str>,
}

/// Sections that differ between `old` and `new`, in a stable order.
pub fn diff(old: &Profile, new: &Profile) -> Vec<Change> {
    let mut out = Vec::new();
    let mut check = |section, keys: Vec<(&'static str, bool)>| {
        let keys: Vec<_> = keys.into_iter().filter(|(_, changed)| *changed).map(|(k, _)| k).collect();
        if !keys.is_empty() {
            out.push(Change { section, keys });
        }
    };
    check(Section::Site, vec![("site", old.site != new.site)]);
    check(
        Section::Sides,
        vec![
            ("public", old.public != new.public),
            ("internal", old.internal != new.internal),
            ("management", old.management != new.management),
        ],
    );
    check(Section::Tls, vec![("tls", old.tls != new.tls)]);
    check(Section::Web, vec![("web", old.web != new.web)]);
    check(Section::Sip, vec![("sip", old.sip != new.sip)]);
    check(Section::Agents, vec![("agents", old.agents != new.agents)]);
    check(Section::Upstream, vec![("upstream", old.upstream != new.upstream)]);
    check(Section::Media, vec![("media", old.media != new.media)]);
    check(Section::Turn, vec![("turn", old.turn != new.turn)]);
    check(Section::Firewall, vec![("firewall", old.firewall != new.firewall)]);
    check(Section::Bans, vec![("bans", old.bans != new.bans)]);
    check(Section::Observe, vec![("observe", old.observe != new.observe)]);
    check(Section::System, vec![("system", old.system != new.system)]);
    check(Section::Ha, vec![("ha", old.ha != new.ha)]);
    out
}
