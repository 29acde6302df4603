//! Small value types of the profile that read the way operators write them:
//! port ranges as `"10000-20000"`, durations as `"10m"` or `"1h"`.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde_with::{DeserializeFromStr, SerializeDisplay};

/// An inclusive range of UDP/TCP ports, written `"10000-20000"` or `"5060"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, DeserializeFromStr, SerializeDisplay)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub const fn new(first: u16, last: u16) -> Self {
        Self { first, last }
    }

    /// Number of ports in the range; zero when it is inverted.
    pub fn len(&self) -> u32 {
        if self.last < self.first {
            0
        } else {
            u32::from(self.last) - u32::from(self.first) + 1
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_inverted(&self) -> bool {
        self.last < self.first
    }

    pub fn contains(&self, port: u16) -> bool {
        self.first <= port && port <= self.last
    }

    pub fn overlaps(&self, other: &PortRange) -> bool {
        !self.is_inverted()
            && !other.is_inverted()
            && self.first <= other.last
            && other.first <= self.last
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

impl FromStr for PortRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let port = |p: &str| {
            p.trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("`{s}` is not a port range: expected \"FIRST-LAST\" with ports 1-65535"))
        };
        match s.split_once('-') {
            Some((a, b)) => Ok(Self::new(port(a)?, port(b)?)),
            None => {
                let p = port(s)?;
                Ok(Self::new(p, p))
            }
        }
    }
}

impl JsonSchema for PortRange {
    fn schema_name() -> Cow<'static, str> {
        "PortRange".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "An inclusive port range \"FIRST-LAST\" or a single port.",
            "pattern": "^[0-9]{1,5}(-[0-9]{1,5})?$",
            "examples": ["10000-20000", "5060"]
        })
    }
}

/// A span of time written the human way: `"500ms"`, `"30s"`, `"10m"`, `"1h"`, `"7d"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, DeserializeFromStr, SerializeDisplay)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    pub const fn secs(s: u64) -> Self {
        Self(std::time::Duration::from_secs(s))
    }

    pub fn as_secs(&self) -> u64 {
        self.0.as_secs()
    }
}

impl From<Duration> for std::time::Duration {
    fn from(d: Duration) -> Self {
        d.0
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl FromStr for Duration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        humantime::parse_duration(s)
            .map(Duration)
            .map_err(|e| format!("`{s}` is not a duration ({e}); write it like \"30s\", \"10m\" or \"1h\""))
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A duration such as \"500ms\", \"30s\", \"10m\", \"1h\", \"7d\".",
            "pattern": "^([0-9]+ ?(ns|us|ms|s|sec|m|min|h|hr|d|w)\\s*)+$",
            "examples": ["30s", "10m", "1h"]
        })
    }
}

/// A network in CIDR form (`192.168.210.0/24`); a bare address means just that host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, DeserializeFromStr, SerializeDisplay)]
pub struct Cidr(pub ipnet::IpNet);

impl Cidr {
    pub fn contains(&self, ip: &std::net::IpAddr) -> bool {
        self.0.contains(ip)
    }

    /// Whether the two networks share any address.
    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.0.contains(&other.0.network()) || other.0.contains(&self.0.network())
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(net) = s.parse::<ipnet::IpNet>() {
            return Ok(Cidr(net.trunc()));
        }
        s.parse::<std::net::IpAddr>()
            .map(|ip| Cidr(ipnet::IpNet::from(ip)))
            .map_err(|_| format!("`{s}` is not a network: expected CIDR like \"192.168.210.0/24\" or an address"))
    }
}

/// An interface address with its prefix length (`203.0.113.10/24`): the host's own address, so
/// unlike [`Cidr`] its host bits are kept, and the prefix is required.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, DeserializeFromStr, SerializeDisplay)]
pub struct InterfaceAddress(pub ipnet::IpNet);

impl fmt::Display for InterfaceAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for InterfaceAddress {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse::<ipnet::IpNet>()
            .map(InterfaceAddress)
            .map_err(|_| format!("`{s}` is not an interface address: expected an address with its prefix length, like \"203.0.113.10/24\""))
    }
}

impl JsonSchema for InterfaceAddress {
    fn schema_name() -> Cow<'static, str> {
        "InterfaceAddress".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "An interface address with its prefix length.",
            "examples": ["203.0.113.10/24", "2001:db8::54/64"]
        })
    }
}

impl From<std::net::IpAddr> for Cidr {
    fn from(ip: std::net::IpAddr) -> Self {
        Cidr(ipnet::IpNet::from(ip))
    }
}

impl JsonSchema for Cidr {
    fn schema_name() -> Cow<'static, str> {
        "Cidr".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A network in CIDR form, or a single address.",
            "examples": ["192.168.210.0/24", "10.0.0.5", "2001:db8::/32"]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_range_parses_and_measures() {
        let r: PortRange = "10000-20000".parse().unwrap();
        assert_eq!(r.len(), 10001);
        assert_eq!("5060".parse::<PortRange>().unwrap().len(), 1);
        let inverted: PortRange = "20000-10000".parse().unwrap();
        assert!(inverted.is_inverted());
        assert_eq!(inverted.len(), 0);
        assert!("0-10".parse::<PortRange>().is_err());
        assert!("a-b".parse::<PortRange>().is_err());
        assert!("70000".parse::<PortRange>().is_err());
    }

    #[test]
    fn port_ranges_overlap_inclusively() {
        let a = PortRange::new(10000, 20000);
        assert!(a.overlaps(&PortRange::new(20000, 20010)));
        assert!(!a.overlaps(&PortRange::new(20001, 30000)));
    }

    #[test]
    fn durations_read_like_humans_write_them() {
        let d: Duration = serde_json::from_str("\"10m\"").unwrap();
        assert_eq!(d.as_secs(), 600);
        assert!(serde_json::from_str::<Duration>("\"ten\"").is_err());
    }
}
