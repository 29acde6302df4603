use super::*;
use crate::sip::message::{parse, response_to};
use rsip::headers::UntypedHeader;
use rsip::message::HeadersExt;

mod client;
mod server;

pub(super) const UDP: Target = Target {
    transport: Transport::Udp,
    destination: Destination::Addr(SocketAddr::V4(std::net::SocketAddrV4::new(
        std::net::Ipv4Addr::LOCALHOST,
        5080,
    ))),
};
pub(super) const WS: Target = Target {
    transport: Transport::Ws,
    destination: Destination::Conn(ConnId(7)),
};

pub(super) fn request(method: &str, branch: &str, sent_by: &str) -> Request {
    let body = if method == "INVITE" { "v=0\r\n" } else { "" };
    let text = format!(
        "{method} sip:600@lab.invalid SIP/2.0\r\n\
         Via: SIP/2.0/UDP {sent_by};branch={branch}\r\n\
         Via: SIP/2.0/UDP upstream.invalid;branch=z9hG4bKup\r\n\
         Route: <sip:proxy.invalid;lr>\r\n\
         Max-Forwards: 70\r\nFrom: <sip:5001@lab.invalid>;tag=ft\r\nTo: <sip:600@lab.invalid>\r\n\
         Call-ID: call-1\r\nCSeq: 1 {method}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    match parse(text.as_bytes()).unwrap() {
        SipMessage::Request(r) => r,
        _ => unreachable!(),
    }
}

pub(super) fn invite(branch: &str) -> Request {
    request("INVITE", branch, "10.0.0.1:5060")
}

/// A response to `request` with To tag `tt`.
pub(super) fn reply(request: &Request, code: u16) -> Response {
    response_to(request, code, None, Some("tt"))
}

/// A 2xx ACK: new branch, same dialog and CSeq number.
pub(super) fn ack_2xx(branch: &str) -> Request {
    let text = format!(
        "ACK sip:600@lab.invalid SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch={branch}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:5001@lab.invalid>;tag=ft\r\nTo: <sip:600@lab.invalid>;tag=tt\r\n\
         Call-ID: call-1\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
    );
    match parse(text.as_bytes()).unwrap() {
        SipMessage::Request(r) => r,
        _ => unreachable!(),
    }
}

pub(super) fn drain(layer: &mut TransactionLayer) -> Vec<Output> {
    std::iter::from_fn(|| layer.poll_output()).collect()
}

pub(super) fn sent(outputs: &[Output]) -> Vec<SipMessage> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Send { message, .. } => Some(message.clone()),
            _ => None,
        })
        .collect()
}

pub(super) fn events(outputs: &[Output]) -> Vec<TxEvent> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Event(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

pub(super) fn status(message: &SipMessage) -> u16 {
    match message {
        SipMessage::Response(r) => r.status_code.code(),
        SipMessage::Request(_) => 0,
    }
}

pub(super) fn method(message: &SipMessage) -> Option<rsip::Method> {
    match message {
        SipMessage::Request(r) => Some(r.method),
        SipMessage::Response(_) => None,
    }
}

/// Runs timers until `until`, returning each send with its time offset from `start`.
pub(super) fn run_until(
    layer: &mut TransactionLayer,
    start: Instant,
    until: Duration,
) -> Vec<(Duration, Output)> {
    let mut seen = Vec::new();
    while let Some(at) = layer.poll_timeout() {
        if at > start + until {
            break;
        }
        layer.handle_timeout(at);
        for output in drain(layer) {
            seen.push((at - start, output));
        }
    }
    seen
}

#[test]
fn capacity_is_bounded_and_maps_to_503() {
    let mut layer = TransactionLayer::new(TxConfig {
        max_transactions: 2,
        ..Default::default()
    });
    let now = Instant::now();
    layer.receive(invite("z9hG4bK1").into(), UDP, now).unwrap();
    layer
        .send_request(request("OPTIONS", "z9hG4bK2", "gw.invalid"), UDP, now)
        .unwrap();
    let error = layer
        .receive(invite("z9hG4bK3").into(), UDP, now)
        .unwrap_err();
    assert_eq!(error, TxError::Overloaded { limit: 2 });
    assert_eq!(error.status_code(), 503);
    let error = layer
        .send_request(request("OPTIONS", "z9hG4bK4", "gw.invalid"), UDP, now)
        .unwrap_err();
    assert_eq!(error, TxError::Overloaded { limit: 2 });
    // Retransmissions of existing transactions still work at the limit.
    layer.receive(invite("z9hG4bK1").into(), UDP, now).unwrap();
    assert_eq!(layer.len(), 2);
}

#[test]
fn a_response_without_a_transaction_is_stray() {
    let mut layer = TransactionLayer::new(TxConfig::default());
    let response = reply(&invite("z9hG4bKnone"), 200);
    layer
        .receive(response.clone().into(), UDP, Instant::now())
        .unwrap();
    assert_eq!(
        events(&drain(&mut layer)),
        vec![TxEvent::StrayResponse {
            response,
            source: UDP
        }]
    );
}

#[test]
fn transport_failure_ends_the_transaction() {
    let mut layer = TransactionLayer::new(TxConfig::default());
    let now = Instant::now();
    let tx = layer.send_request(invite("z9hG4bKtf"), WS, now).unwrap();
    drain(&mut layer);
    layer.transport_failed(tx, now);
    assert_eq!(
        events(&drain(&mut layer)),
        vec![
            TxEvent::TransportError { tx, response: Some(crate::sip::message::response_to(&invite("z9hG4bKtf"), 503, Some("Transport Error"), None)) },
            TxEvent::Terminated { tx }
        ]
    );
    assert!(layer.is_empty());
    assert_eq!(layer.poll_timeout(), None);
}

#[test]
fn build_cancel_copies_what_rfc_3261_section_9_1_asks() {
    let invite = invite("z9hG4bKc");
    let cancel = build_cancel(&invite);
    assert_eq!(cancel.method, rsip::Method::Cancel);
    assert_eq!(cancel.uri, invite.uri);
    assert_eq!(cancel.cseq_header().unwrap().value(), "1 CANCEL");
    let vias: Vec<_> = cancel
        .headers
        .iter()
        .filter(|h| matches!(h, rsip::Header::Via(_)))
        .collect();
    assert_eq!(vias.len(), 1, "only the top Via");
    assert_eq!(
        cancel.via_header().unwrap().value(),
        "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKc"
    );
    assert_eq!(cancel.to_header().unwrap(), invite.to_header().unwrap());
    assert_eq!(cancel.route_header(), invite.route_header());
    assert!(parse(cancel.to_string().as_bytes()).is_ok());
}

#[test]
fn one_connection_cannot_take_the_whole_table() {
    let config = TxConfig {
        max_per_connection: 2,
        ..Default::default()
    };
    let mut layer = TransactionLayer::new(config);
    let now = Instant::now();
    layer.receive(invite("z9hG4bKc1").into(), WS, now).unwrap();
    layer.receive(invite("z9hG4bKc2").into(), WS, now).unwrap();
    let error = layer
        .receive(invite("z9hG4bKc3").into(), WS, now)
        .unwrap_err();
    assert_eq!(error, TxError::Overloaded { limit: 2 });
    // Another connection and datagram peers are not affected.
    let other = Target {
        transport: Transport::Ws,
        destination: Destination::Conn(ConnId(8)),
    };
    layer
        .receive(invite("z9hG4bKc4").into(), other, now)
        .unwrap();
    layer.receive(invite("z9hG4bKc5").into(), UDP, now).unwrap();
    // Closing the connection fails its transactions and frees its share.
    drain(&mut layer);
    layer.connection_closed(ConnId(7), now);
    let evs = events(&drain(&mut layer));
    let failed = evs
        .iter()
        .filter(|e| matches!(e, TxEvent::TransportError { .. }))
        .count();
    assert_eq!(failed, 2);
    assert_eq!(layer.len(), 2);
    layer.receive(invite("z9hG4bKc6").into(), WS, now).unwrap();
}
