use super::*;
use crate::observe::hep_encode::chunk;

fn config(mode: CaptureMode) -> Hep {
    Hep { collector: "127.0.0.1:9060".parse().unwrap(), id: 7, auth_key: Some("k".into()), capture: mode, link_header: "X-CID".into() }
}

fn ctx<'a>(call_id: &'a str, correlation: Option<&'a str>, dn: Option<&'a str>) -> Context<'a> {
    Context { call_id, correlation, other_call_id: None, dn }
}

const INVITE: &[u8] = b"INVITE sip:5001@gw SIP/2.0\r\nVia: SIP/2.0/WSS x;branch=z9hG4bK1\r\nFrom: \"A\" <sip:5001@example.com>;tag=1\r\nt: <sip:600@example.com>\r\ni: leg-b\r\nCSeq: 1 INVITE\r\nContent-Length: 4\r\n\r\nv=0\n";

/// The value of one chunk type in an encoded packet.
fn chunk_value(bytes: &[u8], kind: u16) -> Option<Vec<u8>> {
    let mut pos = 6;
    while pos + 6 <= bytes.len() {
        let t = u16::from_be_bytes([bytes[pos + 2], bytes[pos + 3]]);
        let len = usize::from(u16::from_be_bytes([bytes[pos + 4], bytes[pos + 5]]));
        if t == kind {
            return Some(bytes[pos + 6..pos + len].to_vec());
        }
        pos += len;
    }
    None
}

#[test]
fn without_a_collector_nothing_is_selected() {
    let c = HepCapture::disabled();
    assert!(!c.active());
    assert_eq!(c.select(&ctx("a", None, Some("5001"))), None);
}

#[test]
fn mode_all_takes_everything_and_off_nothing() {
    let (c, _rx) = HepCapture::new(Some(config(CaptureMode::All)));
    assert!(c.active());
    assert!(c.select(&ctx("a", None, None)).is_some());
    c.set_mode(CaptureMode::Off);
    assert!(!c.active());
    assert!(c.select(&ctx("a", None, Some("5001"))).is_none());
}

#[test]
fn selected_mode_takes_the_chosen_agents_and_call_ids_of_either_leg() {
    let (c, _rx) = HepCapture::new(Some(config(CaptureMode::Selected)));
    assert!(c.select(&ctx("leg-a", None, Some("5001"))).is_none());
    c.select_agent("5001", true).unwrap();
    assert!(c.select(&ctx("leg-a", None, Some("5001"))).is_some());
    assert!(c.select(&ctx("leg-a", None, Some("5002"))).is_none());
    c.select_agent("5001", false).unwrap();
    assert!(c.select(&ctx("leg-a", None, Some("5001"))).is_none());
    // A Call-ID selects both legs of its call: the second leg by its correlation or other leg.
    c.select_call("leg-a", true).unwrap();
    assert!(c.select(&ctx("leg-a", None, None)).is_some());
    assert!(c.select(&ctx("leg-b", Some("leg-a"), None)).is_some());
    let other = Context { call_id: "leg-c", correlation: Some("leg-d"), other_call_id: Some("leg-a"), dn: None };
    assert!(c.select(&other).is_some());
    assert!(c.select(&ctx("leg-x", None, None)).is_none());
    assert_eq!(c.status().call_ids, vec!["leg-a".to_owned()]);
}

#[test]
fn the_selection_is_bounded() {
    let (c, _rx) = HepCapture::new(Some(config(CaptureMode::Selected)));
    for i in 0..MAX_SELECTED {
        c.select_call(&format!("id-{i}"), true).unwrap();
    }
    assert!(c.select_call("one-more", true).is_err());
    assert!(c.select_call("id-1", true).is_ok(), "selecting again what is there is fine");
    c.select_call("id-1", false).unwrap();
    assert!(c.select_call("one-more", true).is_ok());
}

#[test]
fn a_reload_keeps_the_run_time_mode_unless_the_profile_mode_changed() {
    let (c, _rx) = HepCapture::new(Some(config(CaptureMode::All)));
    c.set_mode(CaptureMode::Off);
    c.reconfigure(Some(Hep { id: 9, ..config(CaptureMode::All) }));
    assert_eq!(c.status().mode, CaptureMode::Off);
    c.reconfigure(Some(config(CaptureMode::Selected)));
    assert_eq!(c.status().mode, CaptureMode::Selected);
    c.reconfigure(None);
    assert!(!c.active());
}

#[test]
fn the_second_leg_carries_the_link_header_in_the_capture_only() {
    let (c, mut rx) = HepCapture::new(Some(config(CaptureMode::All)));
    let first = c.select(&ctx("leg-a", None, None)).unwrap();
    let second = c.select(&ctx("leg-b", Some("leg-a"), None)).unwrap();
    assert_eq!(second.correlation, "leg-a");
    let (src, dst) = ("10.0.0.1:5060".parse().unwrap(), "10.0.0.2:5060".parse().unwrap());
    c.sip(&second, src, dst, IpProto::Udp, INVITE, SystemTime::now());
    c.sip(&first, src, dst, IpProto::Udp, INVITE, SystemTime::now());
    let (linked, to) = rx.try_recv().unwrap();
    assert_eq!(to, "127.0.0.1:9060".parse().unwrap());
    let payload = chunk_value(&linked, chunk::PAYLOAD).unwrap();
    assert!(payload.starts_with(b"INVITE sip:5001@gw SIP/2.0\r\nX-CID: leg-a\r\nVia:"), "{}", String::from_utf8_lossy(&payload));
    assert_eq!(payload.len(), INVITE.len() + "X-CID: leg-a\r\n".len());
    assert_eq!(chunk_value(&linked, chunk::CORRELATION_ID).unwrap(), b"leg-a");
    assert_eq!(chunk_value(&linked, chunk::AUTH_KEY).unwrap(), b"k");
    assert_eq!(chunk_value(&linked, chunk::CAPTURE_ID).unwrap(), 7u32.to_be_bytes());
    let (plain, _) = rx.try_recv().unwrap();
    assert_eq!(chunk_value(&plain, chunk::PAYLOAD).unwrap(), INVITE);
}

#[test]
fn a_full_queue_drops_and_counts_instead_of_waiting() {
    let (c, _rx) = HepCapture::new(Some(config(CaptureMode::All)));
    let s = c.select(&ctx("a", None, None)).unwrap();
    let addr: SocketAddr = "10.0.0.1:5060".parse().unwrap();
    for _ in 0..QUEUE + 5 {
        c.sip(&s, addr, addr, IpProto::Udp, INVITE, SystemTime::now());
    }
    assert_eq!(c.snapshot().queue_full, 5);
    c.sip(&s, addr, addr, IpProto::Udp, &vec![b'x'; 70_000], SystemTime::now());
    assert_eq!(c.snapshot().too_large, 1);
    assert_eq!(c.status().dropped, 6);
}

#[test]
fn headers_are_read_in_long_and_compact_form() {
    assert_eq!(header_value(INVITE, "Call-ID"), Some("leg-b"));
    assert_eq!(header_user(INVITE, "From"), Some("5001"));
    assert_eq!(header_user(INVITE, "To"), Some("600"));
    assert_eq!(header_value(INVITE, "v"), None, "the body is not the head");
    assert!(is_request(INVITE));
    assert!(!is_request(b"SIP/2.0 200 OK\r\n\r\n"));
}

#[tokio::test]
async fn the_sender_delivers_to_the_collector_and_counts_a_dead_one() {
    let collector = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (c, rx) = HepCapture::new(Some(Hep { collector: collector.local_addr().unwrap(), ..config(CaptureMode::All) }));
    tokio::spawn(send_loop(rx, c.clone()));
    let s = c.select(&ctx("a", None, None)).unwrap();
    let addr: SocketAddr = "10.0.0.1:5060".parse().unwrap();
    c.sip(&s, addr, addr, IpProto::Tcp, INVITE, SystemTime::now());
    let mut buf = vec![0; 2048];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), collector.recv(&mut buf)).await.unwrap().unwrap();
    assert_eq!(&buf[..4], b"HEP3");
    assert_eq!(chunk_value(&buf[..n], chunk::IP_PROTO).unwrap(), [6]);
    // The collector goes away: sends start failing (ICMP port unreachable), nothing waits.
    let gone = collector.local_addr().unwrap();
    drop(collector);
    assert_eq!(gone, c.status().collector.unwrap());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while c.snapshot().send_errors == 0 {
        assert!(std::time::Instant::now() < deadline, "no send error counted: {:?}", c.snapshot());
        c.sip(&s, addr, addr, IpProto::Udp, INVITE, SystemTime::now());
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(c.snapshot().sent >= 1);
}

#[test]
fn rtcp_goes_out_as_json_type_5_with_the_call_correlation_and_the_leg_addresses() {
    let (c, mut rx) = HepCapture::new(Some(config(CaptureMode::All)));
    let selected = c.select(&ctx("leg-b", Some("leg-a"), Some("5001"))).unwrap();
    let src: SocketAddr = "10.0.0.9:4001".parse().unwrap();
    let dst: SocketAddr = "10.0.0.1:30001".parse().unwrap();
    let mut rr = vec![0x80, 201, 0, 1];
    rr.extend_from_slice(&42u32.to_be_bytes());
    c.rtcp(&selected, src, dst, &rr, std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000));
    let (bytes, to) = rx.try_recv().expect("queued");
    assert_eq!(to, "127.0.0.1:9060".parse::<SocketAddr>().unwrap());
    assert_eq!(chunk_value(&bytes, chunk::PROTO_TYPE).unwrap(), [5]);
    assert_eq!(chunk_value(&bytes, chunk::IP_PROTO).unwrap(), [17]);
    assert_eq!(chunk_value(&bytes, chunk::CORRELATION_ID).unwrap(), b"leg-a");
    assert_eq!(chunk_value(&bytes, chunk::SRC_IPV4).unwrap(), [10, 0, 0, 9]);
    assert_eq!(chunk_value(&bytes, chunk::DST_PORT).unwrap(), 30001u16.to_be_bytes());
    assert_eq!(chunk_value(&bytes, chunk::TIME_SEC).unwrap(), 1_700_000_000u32.to_be_bytes());
    let json: serde_json::Value = serde_json::from_slice(&chunk_value(&bytes, chunk::PAYLOAD).unwrap()).unwrap();
    assert_eq!(json["type"], 201);
    assert_eq!(json["ssrc"], 42);
    // What is not RTCP is not sent; drops from the media tap count as a full queue.
    c.rtcp(&selected, src, dst, b"junk", std::time::SystemTime::now());
    assert!(rx.try_recv().is_err());
    c.count_queue_full(3);
    assert_eq!(c.snapshot().queue_full, 3);
}
