//! RTCP as HEP carries it: HEP protocol type 5 with the report decoded into JSON, in the shape
//! heplify (sipcapture's capture agent) writes, because that is what the collectors read.
//!
//! Evidence, from the collectors' sources: heplify-server turns every payload into a UTF-8
//! string (`decoder.go` `normPayload`, `toUTF8` drops NUL and invalid bytes, so binary RTCP
//! arrives mangled), stores type 5 with its correlation id in `hep_proto_5_default`
//! (`database/postgres.go`) and reads `report_blocks[0].fraction_lost`, `packets_lost`,
//! `ia_jitter`, `dlsr` out of that JSON for its RTCP metrics (`metric/definition.go`
//! `rtcpPaths`); heplify's `decoder/rtcp.go` writes `sender_information`, `ssrc`, `type`,
//! `report_count`, `report_blocks`, `report_blocks_xr` and `sdes_ssrc`, as Asterisk's
//! res_hep_rtcp and reSIProcate's HepAgent (`RTCP_JSON = 5`) do. sngrep 1.6 ignores the type
//! chunk and tries every payload as SIP, then as RTP/RTCP of a stream some SDP announced
//! (`capture_eep.c`, `capture.c`, `rtp.c`): the JSON is passed over there, and SIP still shows.
//!
//! Pure: the plain compound packet in, JSON bytes out. Where the packet comes from is the
//! media bridge's RTCP tap; what is captured, `observe::hep`.

use serde_json::{json, Map, Value};

const SR: u8 = 200;
const RR: u8 = 201;
const SDES: u8 = 202;

/// The heplify JSON of a compound RTCP packet (RFC 3550 §6.1): the first sender or receiver
/// report gives the type, SSRC, sender information and report blocks; the first SDES chunk
/// gives `sdes_ssrc`. None when the bytes are not RTCP version 2.
pub fn rtcp_json(compound: &[u8]) -> Option<Vec<u8>> {
    let mut report: Option<Map<String, Value>> = None;
    let mut first_type = None;
    let mut sdes_ssrc = 0u32;
    let mut off = 0;
    while off + 8 <= compound.len() {
        let h = &compound[off..];
        if h[0] >> 6 != 2 {
            break;
        }
        let len = (usize::from(u16::from_be_bytes([h[2], h[3]])) + 1) * 4;
        if len > h.len() {
            break;
        }
        let p = &h[..len];
        let (count, kind) = (p[0] & 0x1f, p[1]);
        if first_type.is_none() {
            first_type = Some(kind);
        }
        let word = |at: usize| p.get(at..at + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        match kind {
            SR | RR if report.is_none() => {
                let mut m = Map::new();
                let blocks_at = if kind == SR { 28 } else { 8 };
                let info = if kind == SR && len >= 28 {
                    json!({
                        "ntp_timestamp_sec": word(8), "ntp_timestamp_usec": word(12), "rtp_timestamp": word(16),
                        "packets": word(20), "octets": word(24),
                    })
                } else {
                    json!({ "ntp_timestamp_sec": 0, "ntp_timestamp_usec": 0, "rtp_timestamp": 0, "packets": 0, "octets": 0 })
                };
                m.insert("sender_information".into(), info);
                m.insert("ssrc".into(), json!(word(4)));
                m.insert("type".into(), json!(kind));
                m.insert("report_count".into(), json!(count));
                let blocks: Vec<Value> = (0..usize::from(count))
                    .map(|i| blocks_at + i * 24)
                    .take_while(|b| b + 24 <= len)
                    .map(|b| {
                        json!({
                            "source_ssrc": word(b), "fraction_lost": p[b + 4],
                            "packets_lost": word(b + 4).map(|w| w & 0x00ff_ffff),
                            "highest_seq_no": word(b + 8), "ia_jitter": word(b + 12), "lsr": word(b + 16), "dlsr": word(b + 20),
                        })
                    })
                    .collect();
                m.insert("report_blocks".into(), Value::Array(blocks));
                report = Some(m);
            }
            SDES if sdes_ssrc == 0 && count > 0 => sdes_ssrc = word(4).unwrap_or(0),
            _ => {}
        }
        off += len;
    }
    let kind = first_type?;
    let mut m = report.unwrap_or_else(|| {
        let mut m = Map::new();
        m.insert("sender_information".into(), json!({ "ntp_timestamp_sec": 0, "ntp_timestamp_usec": 0, "rtp_timestamp": 0, "packets": 0, "octets": 0 }));
        m.insert("ssrc".into(), json!(u32::from_be_bytes([compound[4], compound[5], compound[6], compound[7]])));
        m.insert("type".into(), json!(kind));
        m.insert("report_count".into(), json!(compound[0] & 0x1f));
        m.insert("report_blocks".into(), json!([]));
        m
    });
    m.insert(
        "report_blocks_xr".into(),
        json!({ "type": 0, "id": 0, "fraction_lost": 0, "fraction_discard": 0, "burst_density": 0, "gap_density": 0,
                "burst_duration": 0, "gap_duration": 0, "round_trip_delay": 0, "end_system_delay": 0 }),
    );
    m.insert("sdes_ssrc".into(), json!(sdes_ssrc));
    serde_json::to_vec(&Value::Object(m)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An SR with one report block, then an SDES with a CNAME, as the internal leg sends.
    fn sr_and_sdes() -> Vec<u8> {
        let mut b = vec![0x81, 200, 0, 12];
        for v in [0x1111_1111u32, 0xe000_0000, 0x8000_0000, 160, 50, 8000] {
            b.extend_from_slice(&v.to_be_bytes());
        }
        b.extend_from_slice(&0x2222_2222u32.to_be_bytes());
        b.extend_from_slice(&(25u32 << 24 | 7).to_be_bytes());
        for v in [1000u32, 33, 0x1234, 0x10000] {
            b.extend_from_slice(&v.to_be_bytes());
        }
        b.extend_from_slice(&[0x81, 202, 0, 2]);
        b.extend_from_slice(&0x1111_1111u32.to_be_bytes());
        b.extend_from_slice(&[1, 2, b'g', b'w']);
        b
    }

    #[test]
    fn a_sender_report_reads_as_heplify_writes_it() {
        let v: Value = serde_json::from_slice(&rtcp_json(&sr_and_sdes()).unwrap()).unwrap();
        assert_eq!(v["type"], 200);
        assert_eq!(v["ssrc"], 0x1111_1111u32);
        assert_eq!(v["report_count"], 1);
        assert_eq!(v["sender_information"]["ntp_timestamp_sec"], 0xe000_0000u32);
        assert_eq!(v["sender_information"]["packets"], 50);
        assert_eq!(v["sender_information"]["octets"], 8000);
        let b = &v["report_blocks"][0];
        assert_eq!(b["source_ssrc"], 0x2222_2222u32);
        assert_eq!(b["fraction_lost"], 25);
        assert_eq!(b["packets_lost"], 7);
        assert_eq!(b["highest_seq_no"], 1000);
        assert_eq!(b["ia_jitter"], 33);
        assert_eq!(b["lsr"], 0x1234);
        assert_eq!(b["dlsr"], 0x10000);
        assert_eq!(v["sdes_ssrc"], 0x1111_1111u32);
        assert_eq!(v["report_blocks_xr"]["fraction_lost"], 0);
    }

    #[test]
    fn a_receiver_report_and_what_is_not_rtcp() {
        let mut rr = vec![0x80, 201, 0, 1];
        rr.extend_from_slice(&5u32.to_be_bytes());
        let v: Value = serde_json::from_slice(&rtcp_json(&rr).unwrap()).unwrap();
        assert_eq!(v["type"], 201);
        assert_eq!(v["ssrc"], 5);
        assert_eq!(v["report_blocks"], json!([]));
        assert!(rtcp_json(b"{\"not\":\"rtcp\"}").is_none());
        assert!(rtcp_json(&[0x80, 201, 0]).is_none());
        // A length beyond the datagram ends the walk.
        assert!(rtcp_json(&[0x80, 201, 0, 9, 0, 0, 0, 1]).is_none());
    }
}
