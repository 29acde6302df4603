//! Reading header values rsip keeps as strings: comma separated lists, name-addr URIs and
//! parameters, and Via entries.
//!
//! rsip's typed headers are avoided where they refuse valid input: its typed Via cannot read
//! an IPv6 sent-by, its typed From/To/Contact stop at a quoted display name holding `<` or
//! `;` and at quoted parameters holding `<` (the `+sip.instance` every browser sends), and it
//! reads `tel:` URIs as host and port. These readers look only at what SIP routing needs.

use rsip::headers::UntypedHeader;
use rsip::{Header, Headers};

/// Splits `value` at `separator` (an ASCII character) where it is outside quoted strings and
/// `<...>`.
pub fn split_outside_quotes(value: &str, separator: char) -> Vec<&str> {
    let mut in_quotes = false;
    let mut in_angle = false;
    let mut escaped = false;
    let mut start = 0;
    let mut parts = Vec::new();
    // Every byte that matters is ASCII, and in UTF-8 an ASCII byte is always a character of
    // its own, so bytes are walked instead of decoded characters.
    let Ok(sep) = u8::try_from(separator) else {
        return vec![value];
    };
    if !sep.is_ascii() {
        return vec![value];
    }
    for (i, &b) in value.as_bytes().iter().enumerate() {
        match b {
            _ if escaped => escaped = false,
            b'\\' if in_quotes => escaped = true,
            b'"' => in_quotes = !in_quotes,
            b'<' if !in_quotes => in_angle = true,
            b'>' if !in_quotes => in_angle = false,
            b if b == sep && !in_quotes && !in_angle => {
                parts.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&value[start..]);
    parts
}

/// The elements of a comma separated header value (Via, Contact, Route...), trimmed, ignoring
/// commas inside quoted strings or `<...>`.
pub fn split_header_list(value: &str) -> impl Iterator<Item = &str> {
    split_outside_quotes(value, ',')
        .into_iter()
        .map(str::trim)
        .filter(|p| !p.is_empty())
}

/// Splits a name-addr or addr-spec header value (From, To, Contact, Route...) into the part up
/// to and including the URI, and the header parameters after it (starting with `;`).
pub fn split_header_params(value: &str) -> (&str, &str) {
    let parts = split_outside_quotes(value, ';');
    let uri_len = parts[0].len();
    (value[..uri_len].trim_end(), &value[uri_len..])
}

fn parse_params(params: &str) -> Vec<(String, String)> {
    split_outside_quotes(params, ';')
        .into_iter()
        .skip(1)
        .map(|p| match p.split_once('=') {
            Some((n, v)) => (n.trim().to_owned(), v.trim().trim_matches('"').to_owned()),
            None => (p.trim().to_owned(), String::new()),
        })
        .collect()
}

/// The header parameters of a name-addr or addr-spec value as (name, value) pairs, quotes
/// removed from values; a parameter without `=` has an empty value.
pub fn header_params(value: &str) -> Vec<(String, String)> {
    parse_params(split_header_params(value).1)
}

/// The value of header parameter `name` (case-insensitive), as `header_params` reads it.
pub fn header_param(value: &str, name: &str) -> Option<String> {
    header_params(value)
        .into_iter()
        .find_map(|(n, v)| n.eq_ignore_ascii_case(name).then_some(v))
}

/// The `tag` parameter of a From or To header value, found without a full parse so it also works
/// on headers recovered from a broken message.
pub fn to_tag_of(value: &str) -> Option<String> {
    header_param(value, "tag").filter(|t| !t.is_empty())
}

/// The URI text of a name-addr (`"x" <uri>;params`) or addr-spec (`uri;params`) value.
pub fn name_addr_uri_text(value: &str) -> Option<&str> {
    let (addr, _) = split_header_params(value);
    // The `<` that opens the URI is the first one outside a quoted display name.
    let mut in_quotes = false;
    let mut escaped = false;
    for (i, c) in addr.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            '<' if !in_quotes => {
                let rest = &addr[i + 1..];
                let close = rest.find('>')?;
                return Some(rest[..close].trim()).filter(|u| u.contains(':'));
            }
            _ => {}
        }
    }
    let text = addr.trim();
    (!text.is_empty() && text.contains(':') && !text.contains([' ', '"'])).then_some(text)
}

/// The URI of a name-addr or addr-spec value, parsed by rsip (SIP and SIPS URIs).
pub fn name_addr_uri(value: &str) -> Option<rsip::Uri> {
    rsip::Uri::try_from(name_addr_uri_text(value)?).ok()
}

/// One Via entry, as far as transactions and responses need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViaEntry {
    /// Transport token, uppercase (`UDP`, `TCP`, `TLS`, `WS`, `WSS`...).
    pub transport: String,
    /// `host[:port]` as written (lowercased), IPv6 references included.
    pub sent_by: String,
    pub params: Vec<(String, String)>,
}

impl ViaEntry {
    /// Reads `SIP/2.0/UDP host:port;branch=...` (LWS around the slashes allowed).
    pub fn parse(entry: &str) -> Option<Self> {
        let (head, params) = split_header_params(entry);
        let head = head.trim();
        let split = head.rfind([' ', '\t'])?;
        let protocol: String = head[..split]
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        let sent_by = head[split + 1..].trim();
        let mut parts = protocol.split('/');
        let (name, version, transport) = (parts.next()?, parts.next()?, parts.next()?);
        let valid = name.eq_ignore_ascii_case("SIP")
            && version == "2.0"
            && parts.next().is_none()
            && !transport.is_empty()
            && transport
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !sent_by.is_empty()
            && sent_by
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-.:[]_".contains(c));
        valid.then(|| ViaEntry {
            transport: transport.to_ascii_uppercase(),
            sent_by: sent_by.to_ascii_lowercase(),
            params: parse_params(params),
        })
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn branch(&self) -> Option<&str> {
        self.param("branch").filter(|b| !b.is_empty())
    }
}

/// Why the top Via could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViaError {
    Missing,
    Invalid,
}

/// The topmost Via entry. A Via header line may hold several comma separated entries; only
/// the first one matters for transactions and responses.
pub fn top_via(headers: &Headers) -> Result<ViaEntry, ViaError> {
    let first = headers
        .iter()
        .find_map(|h| match h {
            Header::Via(v) => Some(v),
            _ => None,
        })
        .ok_or(ViaError::Missing)?;
    let entry = split_header_list(first.value())
        .next()
        .ok_or(ViaError::Invalid)?;
    ViaEntry::parse(entry).ok_or(ViaError::Invalid)
}

/// The branch of the topmost Via, if any.
pub fn top_branch(headers: &Headers) -> Option<String> {
    top_via(headers).ok()?.branch().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_split_outside_quotes_and_angles() {
        let value = "<sip:a@b;x=1,2>;q=1, \"Doe, J\" <sip:c@d>, sip:e@f;expires=5";
        let parts: Vec<_> = split_header_list(value).collect();
        assert_eq!(
            parts,
            vec![
                "<sip:a@b;x=1,2>;q=1",
                "\"Doe, J\" <sip:c@d>",
                "sip:e@f;expires=5"
            ]
        );
        assert_eq!(split_header_list(" , ").count(), 0);
    }

    #[test]
    fn params_skip_the_uri_and_quoted_text() {
        let contact = "<sip:q1@h.invalid;transport=ws>;+sip.ice;reg-id=1;\
            +sip.instance=\"<urn:uuid:0b8a;x>\";expires=600";
        assert_eq!(
            split_header_params(contact).0,
            "<sip:q1@h.invalid;transport=ws>"
        );
        assert_eq!(header_param(contact, "expires").as_deref(), Some("600"));
        assert_eq!(
            header_param(contact, "+sip.instance").as_deref(),
            Some("<urn:uuid:0b8a;x>")
        );
        assert_eq!(header_param(contact, "+sip.ice").as_deref(), Some(""));
        assert_eq!(header_param(contact, "transport"), None);
        assert_eq!(
            header_param("sip:e@f;expires=5", "expires").as_deref(),
            Some("5")
        );
    }

    #[test]
    fn tags_are_found_in_both_header_forms() {
        assert_eq!(to_tag_of("<sip:a@b;tag=uri>;tag=x").as_deref(), Some("x"));
        assert_eq!(to_tag_of("sip:a@b;tag=y").as_deref(), Some("y"));
        assert_eq!(to_tag_of("\"A;tag=no\" <sip:a@b>").as_deref(), None);
        assert_eq!(to_tag_of("<sip:a@b>").as_deref(), None);
        assert_eq!(to_tag_of("<sip:a@b>;tag=").as_deref(), None);
    }

    #[test]
    fn name_addr_uris_are_found_behind_awkward_display_names() {
        for (value, uri) in [
            (
                "\"Agent <5001>; x\" <sip:5001@lab.invalid>;tag=1",
                "sip:5001@lab.invalid",
            ),
            (
                "Agent 5001 <sip:5001@lab.invalid;transport=ws>",
                "sip:5001@lab.invalid;transport=ws",
            ),
            ("sip:600@lab.invalid;tag=2", "sip:600@lab.invalid"),
            ("<tel:+4930123>;tag=1", "tel:+4930123"),
        ] {
            assert_eq!(name_addr_uri_text(value), Some(uri), "{value}");
        }
        for junk in ["", "\"only a name\"", "<nouri>", "a b"] {
            assert_eq!(name_addr_uri_text(junk), None, "{junk}");
        }
        let uri = name_addr_uri("\"x\" <sip:5001@lab.invalid>").unwrap();
        assert_eq!(uri.auth.unwrap().user, "5001");
    }

    #[test]
    fn via_entries_are_read_including_ipv6_and_spaces() {
        let via = ViaEntry::parse("SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bKa;rport").unwrap();
        assert_eq!(via.transport, "UDP");
        assert_eq!(via.sent_by, "[2001:db8::1]:5060");
        assert_eq!(via.branch(), Some("z9hG4bKa"));
        assert_eq!(via.param("rport"), Some(""));
        let via = ViaEntry::parse("SIP / 2.0 / wss Abc.Invalid;branch=z9hG4bKb").unwrap();
        assert_eq!(
            (via.transport.as_str(), via.sent_by.as_str()),
            ("WSS", "abc.invalid")
        );
        for bad in [
            "",
            "SIP/2.0/UDP",
            "HTTP/1.1/UDP h",
            "SIP/3.0/UDP h",
            "SIP/2.0/UDP h\"x",
        ] {
            assert_eq!(ViaEntry::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_top_via_is_the_first_entry_of_the_first_header() {
        let mut headers = Headers::default();
        assert_eq!(top_via(&headers), Err(ViaError::Missing));
        headers.push(Header::Via(rsip::headers::Via::new(
            "SIP/2.0/UDP p1;branch=z9hG4bK1, SIP/2.0/UDP p2;branch=z9hG4bK2",
        )));
        headers.push(Header::Via(rsip::headers::Via::new(
            "SIP/2.0/UDP p3;branch=z9hG4bK3",
        )));
        assert_eq!(top_branch(&headers).as_deref(), Some("z9hG4bK1"));
        let mut broken = Headers::default();
        broken.push(Header::Via(rsip::headers::Via::new("nonsense")));
        assert_eq!(top_via(&broken), Err(ViaError::Invalid));
    }
}
