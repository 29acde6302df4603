use super::*;
use crate::sip::headers::top_branch;
use crate::sip::message::{parse, response_to, BRANCH_COOKIE};
use rand::SeedableRng;
use rsip::message::HeadersExt;
use rsip::SipMessage;

fn rng() -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(3)
}

fn request_of(text: &str) -> Request {
    match parse(text.as_bytes()).unwrap() {
        SipMessage::Request(r) => r,
        _ => unreachable!(),
    }
}

fn invite(extra: &str) -> Request {
    request_of(&format!(
        "INVITE sip:600@lab.invalid SIP/2.0\r\nVia: SIP/2.0/WSS h.invalid;branch=z9hG4bKi\r\n\
         Max-Forwards: 70\r\nFrom: \"Agent\" <sip:5001@lab.invalid>;tag=local1\r\n\
         To: <sip:600@lab.invalid>\r\nCall-ID: dlg-1\r\nCSeq: 7 INVITE\r\n\
         Contact: <sip:agent@h.invalid;transport=ws>\r\n{extra}Content-Length: 0\r\n\r\n"
    ))
}

/// A response from the peer with To tag `remote1`, its Contact and Record-Routes.
fn answer(invite: &Request, code: u16, contact: &str, record_routes: &[&str]) -> Response {
    let mut response = response_to(invite, code, None, Some("remote1"));
    let mut headers: Vec<Header> = response.headers.into_iter().collect();
    for (i, rr) in record_routes.iter().enumerate() {
        headers.insert(i, Header::RecordRoute(rsip::headers::RecordRoute::new(*rr)));
    }
    headers.insert(0, Header::Contact(rsip::headers::Contact::new(contact)));
    response.headers = headers.into();
    response
}

fn values(request: &Request, pick: fn(&Header) -> Option<&str>) -> Vec<String> {
    request
        .headers
        .iter()
        .filter_map(pick)
        .map(str::to_owned)
        .collect()
}

fn routes(request: &Request) -> Vec<String> {
    values(request, |h| match h {
        Header::Route(v) => Some(v.value()),
        _ => None,
    })
}

#[test]
fn uac_dialog_takes_the_reversed_record_route_and_the_contact() {
    let invite = invite("");
    // Record-Route as received: the proxy nearest to the callee comes first.
    let ok = answer(
        &invite,
        200,
        "<sip:peer@10.0.0.9:5080>",
        &[
            "<sip:p3.invalid;lr>, <sip:p2.invalid;lr>",
            "<sip:p1.invalid;lr>",
        ],
    );
    let mut dialog = Dialog::from_uac(&invite, &ok).unwrap();
    assert_eq!(
        dialog.id,
        DialogId {
            call_id: "dlg-1".into(),
            local_tag: "local1".into(),
            remote_tag: "remote1".into()
        }
    );
    assert_eq!(dialog.state, DialogState::Confirmed);
    assert_eq!(dialog.local_seq, 7);
    assert_eq!(
        dialog.route_set,
        vec![
            "<sip:p1.invalid;lr>",
            "<sip:p2.invalid;lr>",
            "<sip:p3.invalid;lr>"
        ]
    );
    let bye = dialog.request(Method::Bye, "WSS", "gw.invalid", None, &mut rng());
    assert_eq!(bye.uri.to_string(), "sip:peer@10.0.0.9:5080");
    assert_eq!(bye.cseq_header().unwrap().value(), "8 BYE");
    assert_eq!(
        bye.from_header().unwrap().value(),
        "\"Agent\" <sip:5001@lab.invalid>;tag=local1"
    );
    assert_eq!(
        bye.to_header().unwrap().value(),
        "<sip:600@lab.invalid>;tag=remote1"
    );
    assert_eq!(routes(&bye), dialog.route_set);
    assert!(top_branch(&bye.headers).unwrap().starts_with(BRANCH_COOKIE));
    assert_eq!(dialog.next_hop().to_string(), "sip:p1.invalid;lr");
    // The request is well formed.
    assert!(parse(bye.to_string().as_bytes()).is_ok());
    let next = dialog.request(
        Method::Info,
        "WSS",
        "gw.invalid",
        Some("<sip:gw.invalid>"),
        &mut rng(),
    );
    assert_eq!(next.cseq_header().unwrap().value(), "9 INFO");
    assert_eq!(next.contact_header().unwrap().value(), "<sip:gw.invalid>");
}

#[test]
fn the_ack_for_a_2xx_reuses_the_invite_number_with_a_new_branch() {
    let invite = invite("");
    let ok = answer(&invite, 200, "<sip:peer@10.0.0.9>", &[]);
    let dialog = Dialog::from_uac(&invite, &ok).unwrap();
    let ack = dialog.ack(7, "WSS", "gw.invalid", &mut rng());
    assert_eq!(ack.method, Method::Ack);
    assert_eq!(ack.cseq_header().unwrap().value(), "7 ACK");
    assert_ne!(top_branch(&ack.headers), top_branch(&invite.headers));
    assert_eq!(dialog.local_seq, 7, "ACK takes no new number");
}

#[test]
fn an_early_dialog_is_confirmed_and_retargeted_by_the_2xx() {
    let invite = invite("");
    let ringing = answer(&invite, 180, "<sip:early@10.0.0.9>", &[]);
    let mut dialog = Dialog::from_uac(&invite, &ringing).unwrap();
    assert_eq!(dialog.state, DialogState::Early);
    dialog.on_response(&answer(&invite, 200, "<sip:final@10.0.0.9>", &[]));
    assert_eq!(dialog.state, DialogState::Confirmed);
    assert_eq!(dialog.remote_target.to_string(), "sip:final@10.0.0.9");
}

#[test]
fn a_response_without_a_to_tag_or_contact_makes_no_dialog() {
    let invite = invite("");
    let untagged = response_to(&invite, 180, None, None);
    assert_eq!(
        Dialog::from_uac(&invite, &untagged),
        Err(DialogError::Missing("tag or Call-ID"))
    );
    let no_contact = response_to(&invite, 200, None, Some("r"));
    assert_eq!(
        Dialog::from_uac(&invite, &no_contact),
        Err(DialogError::Missing("Contact"))
    );
}

#[test]
fn uas_dialog_keeps_record_route_order_and_checks_peer_cseq() {
    let invite =
        invite("Record-Route: <sip:p1.invalid;lr>\r\nRecord-Route: <sip:p2.invalid;lr>\r\n");
    let mut dialog = Dialog::from_uas(&invite, "mine").unwrap();
    assert_eq!(
        dialog.id,
        DialogId {
            call_id: "dlg-1".into(),
            local_tag: "mine".into(),
            remote_tag: "local1".into()
        }
    );
    assert_eq!(
        dialog.route_set,
        vec!["<sip:p1.invalid;lr>", "<sip:p2.invalid;lr>"]
    );
    assert_eq!(dialog.remote_seq, Some(7));
    assert_eq!(dialog.local_party, "<sip:600@lab.invalid>;tag=mine");
    // rsip writes the transport parameter in capitals; parameters compare case-insensitively.
    assert!(dialog
        .remote_target
        .to_string()
        .eq_ignore_ascii_case("sip:agent@h.invalid;transport=ws"));

    let from_peer = |seq: u32, method: &str, to_tag: &str| {
        request_of(&format!(
            "{method} sip:600@gw.invalid SIP/2.0\r\nVia: SIP/2.0/WSS h.invalid;branch=z9hG4bK{seq}\r\n\
             From: \"Agent\" <sip:5001@lab.invalid>;tag=local1\r\nTo: <sip:600@lab.invalid>;tag={to_tag}\r\n\
             Call-ID: dlg-1\r\nCSeq: {seq} {method}\r\nContact: <sip:moved@h.invalid>\r\nContent-Length: 0\r\n\r\n"
        ))
    };
    assert_eq!(dialog.on_request(&from_peer(7, "ACK", "mine")), Ok(()));
    assert_eq!(dialog.on_request(&from_peer(8, "INFO", "mine")), Ok(()));
    assert!(
        dialog.remote_target.to_string().starts_with("sip:agent@"),
        "INFO is no target refresh"
    );
    let error = dialog
        .on_request(&from_peer(8, "INFO", "mine"))
        .unwrap_err();
    assert_eq!(error, DialogError::OutOfOrder { got: 8, last: 8 });
    assert_eq!(error.status_code(), 500);
    assert_eq!(dialog.on_request(&from_peer(9, "INVITE", "mine")), Ok(()));
    assert_eq!(dialog.remote_target.to_string(), "sip:moved@h.invalid");
    let error = dialog
        .on_request(&from_peer(10, "BYE", "other"))
        .unwrap_err();
    assert_eq!(error.status_code(), 481);

    let bye = dialog.request(Method::Bye, "UDP", "10.0.0.2:5060", None, &mut rng());
    assert_eq!(bye.cseq_header().unwrap().value(), "1 BYE");
    assert_eq!(
        bye.to_header().unwrap().value(),
        "\"Agent\" <sip:5001@lab.invalid>;tag=local1"
    );
    assert_eq!(
        bye.from_header().unwrap().value(),
        "<sip:600@lab.invalid>;tag=mine"
    );
}

#[test]
fn a_strict_first_route_becomes_the_request_uri() {
    let invite = invite("");
    let ok = answer(
        &invite,
        200,
        "<sip:peer@10.0.0.9>",
        &["<sip:loose.invalid;lr>", "<sip:strict.invalid>"],
    );
    let mut dialog = Dialog::from_uac(&invite, &ok).unwrap();
    assert_eq!(dialog.route_set[0], "<sip:strict.invalid>");
    let bye = dialog.request(Method::Bye, "UDP", "gw.invalid", None, &mut rng());
    assert_eq!(bye.uri.to_string(), "sip:strict.invalid");
    assert_eq!(
        routes(&bye),
        vec!["<sip:loose.invalid;lr>", "<sip:peer@10.0.0.9>"]
    );
}
