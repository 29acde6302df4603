//! The browser leg's RTCP back into RFC 3550 bytes for the RTCP tap. str0m decrypts SRTCP and
//! hands out only the parsed reports (its encoder is private), so the sender and receiver
//! reports, source descriptions and BYEs are written again here; feedback messages (NACK,
//! PLI, TWCC, REMB, XR) carry no call quality a capture reader uses and are left out.
//! Pure: reports in, bytes out.

use str0m::rtp::rtcp::{ReceptionReport, ReportList, Rtcp, SdesType};

use super::rtcp::ntp;

/// Appends `r` to the compound packet in `out`; false when it is a kind not written.
pub fn append(out: &mut Vec<u8>, r: &Rtcp) -> bool {
    match r {
        Rtcp::SenderReport(sr) => {
            let blocks = count(&sr.reports);
            let start = header(out, blocks, 200);
            let i = &sr.sender_info;
            let t = ntp(i.ntp_time);
            for v in [*i.ssrc, (t >> 32) as u32, t as u32, i.rtp_time.numer() as u32, i.sender_packet_count, i.sender_octet_count] {
                out.extend_from_slice(&v.to_be_bytes());
            }
            report_blocks(out, &sr.reports);
            finish(out, start);
        }
        Rtcp::ReceiverReport(rr) => {
            let start = header(out, count(&rr.reports), 201);
            out.extend_from_slice(&rr.sender_ssrc.to_be_bytes());
            report_blocks(out, &rr.reports);
            finish(out, start);
        }
        Rtcp::SourceDescription(d) => {
            let start = header(out, count(&d.reports), 202);
            for chunk in d.reports.iter() {
                out.extend_from_slice(&chunk.ssrc.to_be_bytes());
                let items = out.len();
                for (kind, value) in chunk.values.iter() {
                    if *kind == SdesType::Unknown || *kind == SdesType::END {
                        continue;
                    }
                    let value = &value.as_bytes()[..value.len().min(255)];
                    out.push(*kind as u8);
                    out.push(value.len() as u8);
                    out.extend_from_slice(value);
                }
                // The item list ends with a zero octet and is padded to a word.
                out.push(0);
                while (out.len() - items) % 4 != 0 {
                    out.push(0);
                }
            }
            finish(out, start);
        }
        Rtcp::Goodbye(bye) => {
            let start = header(out, count(&bye.reports), 203);
            for ssrc in bye.reports.iter() {
                out.extend_from_slice(&ssrc.to_be_bytes());
            }
            finish(out, start);
        }
        _ => return false,
    }
    true
}

fn count<T>(list: &ReportList<T>) -> u8 {
    list.iter().count().min(31) as u8
}

/// Writes a header with a length to be filled in by `finish`; returns where it starts.
fn header(out: &mut Vec<u8>, count: u8, kind: u8) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0x80 | count, kind, 0, 0]);
    start
}

/// The length field: the packet's 32-bit words minus one.
fn finish(out: &mut [u8], start: usize) {
    let words = ((out.len() - start) / 4).saturating_sub(1) as u16;
    out[start + 2..start + 4].copy_from_slice(&words.to_be_bytes());
}

fn report_blocks(out: &mut Vec<u8>, reports: &ReportList<ReceptionReport>) {
    for b in reports.iter() {
        out.extend_from_slice(&b.ssrc.to_be_bytes());
        out.extend_from_slice(&(u32::from(b.fraction_lost) << 24 | (b.packets_lost & 0x00ff_ffff)).to_be_bytes());
        for v in [b.max_seq, b.jitter, b.last_sr_time, b.last_sr_delay] {
            out.extend_from_slice(&v.to_be_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use str0m::rtp::rtcp::{Descriptions, Goodbye, ReceiverReport, Sdes};
    use str0m::rtp::Ssrc;

    #[test]
    fn a_receiver_report_with_a_cname_is_a_valid_compound_the_internal_parser_reads() {
        let reports = ReportList::from(ReceptionReport { ssrc: Ssrc::from(77), fraction_lost: 12, packets_lost: 3, max_seq: 1000, jitter: 40, last_sr_time: 0x1234, last_sr_delay: 0x10000 });
        let rr = Rtcp::ReceiverReport(ReceiverReport { sender_ssrc: Ssrc::from(9), reports });
        let values = ReportList::from((SdesType::CNAME, "abc".to_owned()));
        let sdes = Rtcp::SourceDescription(Descriptions { reports: Box::new(ReportList::from(Sdes { ssrc: Ssrc::from(9), values })) });
        let mut out = Vec::new();
        assert!(append(&mut out, &rr));
        assert!(append(&mut out, &sdes));
        // RR: header, sender SSRC, one 24-byte block.
        assert_eq!(&out[..4], &[0x81, 201, 0, 7]);
        assert_eq!(u32::from_be_bytes(out[4..8].try_into().unwrap()), 9);
        assert_eq!(out[12], 12, "fraction lost");
        assert_eq!(&out[13..16], &[0, 0, 3], "cumulative lost");
        // SDES: header, SSRC, CNAME item "abc" and the end octet padded to a word: 16 bytes.
        assert_eq!(&out[32..36], &[0x81, 202, 0, 3]);
        assert_eq!(&out[40..48], &[1, 3, b'a', b'b', b'c', 0, 0, 0]);
        assert_eq!(out.len(), 48);
        assert_eq!(super::super::rtcp::parse(&out, 77).about_us, Some((0x1234, 0x10000)));
        let mut b = Vec::new();
        assert!(append(&mut b, &Rtcp::Goodbye(Goodbye { reports: ReportList::from(Ssrc::from(9)) })));
        assert_eq!(b, [0x81, 203, 0, 1, 0, 0, 0, 9]);
    }
}
