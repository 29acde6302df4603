//! HEP v3 encoding, written from the HEP3 network protocol specification (sipcapture's
//! "HEP3 Network Protocol Specification"): the ASCII id `HEP3`, the total length (u16, the
//! whole packet), then chunks, each a vendor id (u16), a type id (u16), a length (u16, the
//! chunk's six header bytes included) and the value. Integers are network byte order.
//!
//! Pure: a packet description in, bytes out. What to capture and where to send it is
//! `observe::hep`'s business; no Rust crate encodes HEP (the `hep` crate only parses).

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::{SystemTime, UNIX_EPOCH};

/// The generic chunk types of vendor 0 that gatewayd sends.
pub mod chunk {
    pub const IP_FAMILY: u16 = 0x0001;
    pub const IP_PROTO: u16 = 0x0002;
    pub const SRC_IPV4: u16 = 0x0003;
    pub const DST_IPV4: u16 = 0x0004;
    pub const SRC_IPV6: u16 = 0x0005;
    pub const DST_IPV6: u16 = 0x0006;
    pub const SRC_PORT: u16 = 0x0007;
    pub const DST_PORT: u16 = 0x0008;
    pub const TIME_SEC: u16 = 0x0009;
    pub const TIME_USEC: u16 = 0x000a;
    pub const PROTO_TYPE: u16 = 0x000b;
    pub const CAPTURE_ID: u16 = 0x000c;
    pub const AUTH_KEY: u16 = 0x000e;
    pub const PAYLOAD: u16 = 0x000f;
    pub const CORRELATION_ID: u16 = 0x0011;
}

/// Address families as HEP carries them (the BSD `AF_INET` / Linux `AF_INET6` numbers).
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// The largest HEP packet: its length field is 16 bits.
pub const MAX_PACKET: usize = u16::MAX as usize;

/// What the payload is (chunk 0x000b).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ProtoType {
    Sip = 0x01,
    /// An RTCP report decoded as JSON (see `hep_rtcp` for why JSON).
    RtcpJson = 0x05,
    /// A call's quality summary as JSON. heplify-server files every type from 2 up that is not
    /// RTCP (5), DNS (53) or a log (100), and has a correlation id, as a report in
    /// `hep_proto_35_default` (`database/postgres.go`), which Homer shows beside the call's SIP;
    /// 0x22 is the HEP3 type of a full MOS (quality) report in JSON; heplify-server names it
    /// "rtpagent". Type 100 would land among the call's log lines instead.
    QualityReport = 0x22,
}

/// The transport the captured message travelled on (chunk 0x0002, an IP protocol number).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum IpProto {
    Tcp = 6,
    Udp = 17,
}

/// One captured message.
#[derive(Debug, Clone)]
pub struct HepPacket<'a> {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub ip_proto: IpProto,
    pub time: SystemTime,
    pub proto_type: ProtoType,
    pub capture_id: u32,
    pub auth_key: Option<&'a str>,
    pub correlation_id: Option<&'a str>,
    pub payload: &'a [u8],
}

/// The packet would not fit the 16-bit length field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a HEP packet of {0} bytes exceeds the 65535 the format allows")]
pub struct TooLarge(pub usize);

/// The HEP3 bytes of `p`. Source and destination of different families are both sent as IPv6
/// (the IPv4 one mapped), since one packet has one family.
pub fn encode(p: &HepPacket<'_>) -> Result<Vec<u8>, TooLarge> {
    let (src, dst) = same_family(p.src.ip(), p.dst.ip());
    let mut out = Vec::with_capacity(128 + p.payload.len());
    out.extend_from_slice(b"HEP3");
    out.extend_from_slice(&[0, 0]);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            put(&mut out, chunk::IP_FAMILY, &[AF_INET]);
            put(&mut out, chunk::IP_PROTO, &[p.ip_proto as u8]);
            put(&mut out, chunk::SRC_IPV4, &s.octets());
            put(&mut out, chunk::DST_IPV4, &d.octets());
        }
        (s, d) => {
            put(&mut out, chunk::IP_FAMILY, &[AF_INET6]);
            put(&mut out, chunk::IP_PROTO, &[p.ip_proto as u8]);
            put(&mut out, chunk::SRC_IPV6, &v6(s).octets());
            put(&mut out, chunk::DST_IPV6, &v6(d).octets());
        }
    }
    put(&mut out, chunk::SRC_PORT, &p.src.port().to_be_bytes());
    put(&mut out, chunk::DST_PORT, &p.dst.port().to_be_bytes());
    let since = p.time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = u32::try_from(since.as_secs()).unwrap_or(u32::MAX);
    put(&mut out, chunk::TIME_SEC, &secs.to_be_bytes());
    put(&mut out, chunk::TIME_USEC, &since.subsec_micros().to_be_bytes());
    put(&mut out, chunk::PROTO_TYPE, &[p.proto_type as u8]);
    put(&mut out, chunk::CAPTURE_ID, &p.capture_id.to_be_bytes());
    if let Some(key) = p.auth_key {
        put(&mut out, chunk::AUTH_KEY, key.as_bytes());
    }
    if let Some(id) = p.correlation_id {
        put(&mut out, chunk::CORRELATION_ID, id.as_bytes());
    }
    // The payload goes last: collectors that stop at it (older sngrep) still see the rest.
    put(&mut out, chunk::PAYLOAD, p.payload);
    if out.len() > MAX_PACKET {
        return Err(TooLarge(out.len()));
    }
    let total = out.len() as u16;
    out[4..6].copy_from_slice(&total.to_be_bytes());
    Ok(out)
}

/// One vendor-0 chunk. A value too long for a chunk makes the whole packet too long, which
/// `encode` reports; the length written here is then irrelevant.
fn put(out: &mut Vec<u8>, type_id: u16, value: &[u8]) {
    let len = u16::try_from(6 + value.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&type_id.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(value);
}

fn same_family(a: IpAddr, b: IpAddr) -> (IpAddr, IpAddr) {
    match (a, b) {
        (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => (a, b),
        _ => (IpAddr::V6(v6(a)), IpAddr::V6(v6(b))),
    }
}

fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn packet<'a>(payload: &'a [u8]) -> HepPacket<'a> {
        HepPacket {
            src: "192.0.2.10:5060".parse().unwrap(),
            dst: "198.51.100.7:40000".parse().unwrap(),
            ip_proto: IpProto::Udp,
            time: UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789),
            proto_type: ProtoType::Sip,
            capture_id: 2001,
            auth_key: None,
            correlation_id: None,
            payload,
        }
    }

    /// The chunks of a packet as (vendor, type, value), checking every length on the way.
    fn chunks(bytes: &[u8]) -> Vec<(u16, u16, Vec<u8>)> {
        assert_eq!(&bytes[..4], b"HEP3");
        let total = usize::from(u16::from_be_bytes([bytes[4], bytes[5]]));
        assert_eq!(total, bytes.len(), "the total length is the whole packet");
        let mut pos = 6;
        let mut out = Vec::new();
        while pos < total {
            let vendor = u16::from_be_bytes([bytes[pos], bytes[pos + 1]]);
            let kind = u16::from_be_bytes([bytes[pos + 2], bytes[pos + 3]]);
            let len = usize::from(u16::from_be_bytes([bytes[pos + 4], bytes[pos + 5]]));
            assert!(len >= 6 && pos + len <= total, "chunk {kind:#x} length {len} at {pos}");
            out.push((vendor, kind, bytes[pos + 6..pos + len].to_vec()));
            pos += len;
        }
        assert_eq!(pos, total);
        out
    }

    fn value(bytes: &[u8], kind: u16) -> Option<Vec<u8>> {
        chunks(bytes).into_iter().find(|(_, k, _)| *k == kind).map(|(_, _, v)| v)
    }

    #[test]
    fn ipv4_sip_packet_is_byte_exact() {
        let bytes = encode(&packet(b"OPTIONS")).unwrap();
        let mut expected = b"HEP3".to_vec();
        expected.extend_from_slice(&[0x00, 0x6a]); // 106 bytes in all
        expected.extend_from_slice(&[0, 0, 0, 1, 0, 7, 2]); // family AF_INET
        expected.extend_from_slice(&[0, 0, 0, 2, 0, 7, 17]); // UDP
        expected.extend_from_slice(&[0, 0, 0, 3, 0, 10, 192, 0, 2, 10]);
        expected.extend_from_slice(&[0, 0, 0, 4, 0, 10, 198, 51, 100, 7]);
        expected.extend_from_slice(&[0, 0, 0, 7, 0, 8, 0x13, 0xc4]); // 5060
        expected.extend_from_slice(&[0, 0, 0, 8, 0, 8, 0x9c, 0x40]); // 40000
        expected.extend_from_slice(&[0, 0, 0, 9, 0, 10]);
        expected.extend_from_slice(&1_700_000_000u32.to_be_bytes());
        expected.extend_from_slice(&[0, 0, 0, 10, 0, 10]);
        expected.extend_from_slice(&123_456u32.to_be_bytes());
        expected.extend_from_slice(&[0, 0, 0, 11, 0, 7, 1]); // SIP
        expected.extend_from_slice(&[0, 0, 0, 12, 0, 10, 0, 0, 0x07, 0xd1]); // 2001
        expected.extend_from_slice(&[0, 0, 0, 15, 0, 13]);
        expected.extend_from_slice(b"OPTIONS");
        assert_eq!(bytes, expected);
    }

    #[test]
    fn auth_key_and_correlation_id_are_chunks_of_their_own() {
        let mut p = packet(b"INVITE");
        p.auth_key = Some("s3cret");
        p.correlation_id = Some("abc@host");
        let bytes = encode(&p).unwrap();
        assert_eq!(value(&bytes, chunk::AUTH_KEY).unwrap(), b"s3cret");
        assert_eq!(value(&bytes, chunk::CORRELATION_ID).unwrap(), b"abc@host");
        assert_eq!(value(&bytes, chunk::PAYLOAD).unwrap(), b"INVITE");
        assert!(chunks(&bytes).iter().all(|(vendor, _, _)| *vendor == 0));
        // Without them, neither chunk is there.
        let plain = encode(&packet(b"INVITE")).unwrap();
        assert!(value(&plain, chunk::AUTH_KEY).is_none());
        assert!(value(&plain, chunk::CORRELATION_ID).is_none());
    }

    #[test]
    fn ipv6_and_mixed_families_use_the_ipv6_chunks() {
        let mut p = packet(b"x");
        p.src = "[2001:db8::1]:5061".parse().unwrap();
        p.ip_proto = IpProto::Tcp;
        p.proto_type = ProtoType::RtcpJson;
        let bytes = encode(&p).unwrap();
        assert_eq!(value(&bytes, chunk::IP_FAMILY).unwrap(), [AF_INET6]);
        assert_eq!(value(&bytes, chunk::IP_PROTO).unwrap(), [6]);
        assert_eq!(value(&bytes, chunk::PROTO_TYPE).unwrap(), [5]);
        assert_eq!(value(&bytes, chunk::SRC_IPV6).unwrap(), "2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        let mapped: Ipv6Addr = "::ffff:198.51.100.7".parse().unwrap();
        assert_eq!(value(&bytes, chunk::DST_IPV6).unwrap(), mapped.octets());
        assert!(value(&bytes, chunk::SRC_IPV4).is_none());
    }

    #[test]
    fn a_payload_too_large_for_the_length_field_is_refused() {
        let big = vec![b'a'; MAX_PACKET];
        assert!(matches!(encode(&packet(&big)), Err(TooLarge(n)) if n > MAX_PACKET));
        let fits = vec![b'a'; MAX_PACKET - 200];
        assert!(encode(&packet(&fits)).is_ok());
    }
}
