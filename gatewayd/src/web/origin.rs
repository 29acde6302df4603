//! Origins (RFC 6454 serialisations) and Host headers: parsing, normalising and the `/ws` Origin
//! policy. Pure functions; the handlers call them.

use std::fmt;

/// A normalised origin: lowercase scheme and host, port omitted when it is the scheme's default.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    scheme: String,
    host: String,
    port: Option<u16>,
}

impl Origin {
    /// Parses `scheme://host[:port]` exactly as browsers send it: no path, no user info.
    pub fn parse(text: &str) -> Option<Origin> {
        let (scheme, rest) = text.split_once("://")?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "https" && scheme != "http" {
            return None;
        }
        let (host, port) = parse_host(rest)?;
        Some(Origin::new(&scheme, &host, port))
    }

    /// The origin a page served over `scheme` from `host` (a Host header value) has.
    pub fn from_host(scheme: &str, host: &str) -> Option<Origin> {
        let (host, port) = parse_host(host)?;
        Some(Origin::new(scheme, &host, port))
    }

    fn new(scheme: &str, host: &str, port: Option<u16>) -> Origin {
        let default = if scheme == "https" { 443 } else { 80 };
        let port = port.filter(|p| *p != default);
        Origin { scheme: scheme.to_ascii_lowercase(), host: host.to_ascii_lowercase(), port }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(p) => write!(f, "{}://{}:{p}", self.scheme, self.host),
            None => write!(f, "{}://{}", self.scheme, self.host),
        }
    }
}

/// Splits a Host header value (`name`, `1.2.3.4:8443`, `[::1]:8443`) into host and port.
/// Only DNS names, IPv4 and bracketed IPv6 literals pass: the value ends up in response headers
/// (CSP, Location), so nothing else may get through.
pub fn parse_host(value: &str) -> Option<(String, Option<u16>)> {
    if value.is_empty() || value.len() > 260 {
        return None;
    }
    let (host, port) = if let Some(rest) = value.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        if inside.is_empty() || !inside.bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.') {
            return None;
        }
        inside.parse::<std::net::Ipv6Addr>().ok()?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (format!("[{inside}]"), port)
    } else {
        let (host, port) = match value.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (value, None),
        };
        let name_ok = !host.is_empty()
            && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
            && !host.starts_with(['.', '-']);
        if !name_ok {
            return None;
        }
        (host.to_owned(), port)
    };
    let port = match port {
        None => None,
        Some(p) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => Some(p.parse::<u16>().ok()?),
        Some(_) => return None,
    };
    Some((host.to_ascii_lowercase(), port))
}

/// Who may open `/ws`: the origins the profile names plus the gateway's own origin.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OriginPolicy {
    allowed: Vec<Origin>,
}

/// Why an upgrade's Origin was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OriginRefusal {
    #[error("no Origin header")]
    Missing,
    #[error("Origin `{0}` is not an origin")]
    Malformed(String),
    #[error("Origin `{0}` is not allowed")]
    NotAllowed(String),
}

impl OriginPolicy {
    /// The policy for the profile's `web.allowed_origins`; entries that do not parse are skipped
    /// (validation refuses such profiles before they get here).
    pub fn new<S: AsRef<str>>(allowed: &[S]) -> OriginPolicy {
        OriginPolicy { allowed: allowed.iter().filter_map(|o| Origin::parse(o.as_ref())).collect() }
    }

    /// Checks an upgrade's Origin header against the allowed origins and the origin of the page
    /// the gateway itself serves under the Host the client used (`https://host[:port]`).
    pub fn check(&self, origin: Option<&str>, host: Option<&str>) -> Result<Origin, OriginRefusal> {
        let text = origin.ok_or(OriginRefusal::Missing)?;
        let origin = Origin::parse(text).ok_or_else(|| OriginRefusal::Malformed(clip(text)))?;
        let own = host.and_then(|h| Origin::from_host("https", h));
        if self.allowed.contains(&origin) || own.as_ref() == Some(&origin) {
            Ok(origin)
        } else {
            Err(OriginRefusal::NotAllowed(clip(text)))
        }
    }
}

/// Keeps attacker-chosen text short in logs.
fn clip(text: &str) -> String {
    text.chars().take(100).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_normalise_case_and_default_ports() {
        assert_eq!(Origin::parse("HTTPS://Example.COM:443").unwrap().to_string(), "https://example.com");
        assert_eq!(Origin::parse("https://127.0.0.1:8443").unwrap().to_string(), "https://127.0.0.1:8443");
        assert_eq!(Origin::parse("http://a.example:80").unwrap().to_string(), "http://a.example");
        assert_eq!(Origin::parse("https://[::1]:8443").unwrap().to_string(), "https://[::1]:8443");
        for bad in ["null", "https://", "https://a.example/", "https://a.example/path", "ftp://a.example", "https://u@a.example", "https://a.example:99999", "https://a b", "https://a.example:", "a.example"] {
            assert_eq!(Origin::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn hosts_allow_only_names_and_literals() {
        assert_eq!(parse_host("gw.example:8443"), Some(("gw.example".into(), Some(8443))));
        assert_eq!(parse_host("GW.example"), Some(("gw.example".into(), None)));
        assert_eq!(parse_host("[::1]"), Some(("[::1]".into(), None)));
        for bad in ["", "a;b", "a b", "a.example; script-src *", "[zz]", "[::1]x", "a:b", "a\r\nb", "-a", "a:1:2", ":80"] {
            assert_eq!(parse_host(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn policy_accepts_listed_and_own_origin_only() {
        let p = OriginPolicy::new(&["https://phone.example", "https://127.0.0.1:8443"]);
        assert!(p.check(Some("https://phone.example"), Some("gw.example")).is_ok());
        assert!(p.check(Some("https://phone.example:443"), None).is_ok());
        assert!(p.check(Some("https://127.0.0.1:8443"), Some("elsewhere")).is_ok());
        // Own origin: the Host the client used, over https.
        assert!(p.check(Some("https://gw.example:9443"), Some("gw.example:9443")).is_ok());
        assert!(p.check(Some("https://GW.example"), Some("gw.example:443")).is_ok());
        // Same host, other scheme or port: refused.
        assert!(matches!(p.check(Some("http://gw.example:9443"), Some("gw.example:9443")), Err(OriginRefusal::NotAllowed(_))));
        assert!(matches!(p.check(Some("https://gw.example:9444"), Some("gw.example:9443")), Err(OriginRefusal::NotAllowed(_))));
        assert!(matches!(p.check(Some("https://phone.example.evil"), Some("gw.example")), Err(OriginRefusal::NotAllowed(_))));
        assert_eq!(p.check(None, Some("gw.example")), Err(OriginRefusal::Missing));
        assert!(matches!(p.check(Some("null"), Some("gw.example")), Err(OriginRefusal::Malformed(_))));
        assert!(matches!(OriginPolicy::default().check(Some("https://phone.example"), None), Err(OriginRefusal::NotAllowed(_))));
    }
}
