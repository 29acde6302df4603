use super::*;
use crate::sip::headers::top_branch;
use rand::SeedableRng;
use rsip::headers::UntypedHeader;
use rsip::message::HeadersExt;

/// A REGISTER as the browser softphone sends it over WSS.
pub(crate) const REGISTER: &str = "REGISTER sip:lab.invalid SIP/2.0\r\n\
Via: SIP/2.0/WSS 4k2ej0tn3u7v.invalid;branch=z9hG4bK5226081\r\n\
Max-Forwards: 69\r\n\
To: <sip:5001@lab.invalid>\r\n\
From: \"Agent 5001\" <sip:5001@lab.invalid>;tag=ja4hvc9kk0\r\n\
Call-ID: 2hdd8jrgefvbn1eehfgofn\r\n\
CSeq: 1 REGISTER\r\n\
Contact: <sip:q1vcei2s@4k2ej0tn3u7v.invalid;transport=ws>;+sip.ice;reg-id=1;+sip.instance=\"<urn:uuid:0b8a3a5e-5b4b-4a3a-9b0e-6ad2a1b6f0a1>\";expires=600\r\n\
Expires: 600\r\n\
Allow: INVITE,ACK,CANCEL,BYE,UPDATE,MESSAGE,OPTIONS,REFER,INFO,NOTIFY\r\n\
Supported: path,gruu,outbound\r\n\
User-Agent: JsSIP 3.10.0\r\n\
Content-Length: 0\r\n\r\n";

fn rng() -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(7)
}

fn request(text: &str) -> Request {
    match parse(text.as_bytes()).unwrap() {
        SipMessage::Request(r) => r,
        other => panic!("not a request: {other:?}"),
    }
}

#[test]
fn parses_a_browser_register() {
    let register = request(REGISTER);
    assert_eq!(register.method, rsip::Method::Register);
    assert_eq!(
        top_branch(&register.headers).as_deref(),
        Some("z9hG4bK5226081")
    );
    assert!(register.body.is_empty());
}

#[test]
fn refuses_whitespace_and_empty_input() {
    assert_eq!(parse(b""), Err(ParseError::Empty));
    assert_eq!(parse(b"\r\n\r\n"), Err(ParseError::Empty));
}

#[test]
fn refuses_garbage_with_a_syntax_error() {
    assert!(matches!(parse(b"hello world"), Err(ParseError::Syntax(_))));
}

#[test]
fn names_each_missing_mandatory_header() {
    for (name, expected) in [
        ("Via", "Via"),
        ("To", "To"),
        ("From", "From"),
        ("Call-ID", "Call-ID"),
        ("CSeq", "CSeq"),
    ] {
        let text: String = REGISTER
            .split("\r\n")
            .filter(|line| !line.starts_with(&format!("{name}:")))
            .collect::<Vec<_>>()
            .join("\r\n");
        assert_eq!(
            parse(text.as_bytes()),
            Err(ParseError::MissingHeader(expected)),
            "{name}"
        );
    }
}

#[test]
fn refuses_a_cseq_naming_another_method() {
    let text = REGISTER.replace("CSeq: 1 REGISTER", "CSeq: 1 INVITE");
    let error = parse(text.as_bytes()).unwrap_err();
    assert!(matches!(error, ParseError::CSeqMethodMismatch { .. }));
    assert_eq!(error.reason_phrase(), "Bad CSeq header");
    assert!(error.to_string().contains("CSeq method INVITE"), "{error}");
}

#[test]
fn refuses_a_bad_max_forwards_and_a_bad_via() {
    let text = REGISTER.replace("Max-Forwards: 69", "Max-Forwards: many");
    assert!(matches!(
        parse(text.as_bytes()),
        Err(ParseError::InvalidHeader {
            name: "Max-Forwards",
            ..
        })
    ));
    let text = REGISTER.replace("SIP/2.0/WSS 4k2ej0tn3u7v.invalid", "nonsense");
    assert!(matches!(
        parse(text.as_bytes()),
        Err(ParseError::InvalidHeader { name: "Via", .. })
    ));
}

#[test]
fn content_length_cuts_the_body_and_a_short_body_is_refused() {
    let text = REGISTER.replace("Content-Length: 0", "Content-Length: 3") + "abcdef";
    let message = parse(text.as_bytes()).unwrap();
    assert_eq!(message.body(), b"abc");
    let text = REGISTER.replace("Content-Length: 0", "Content-Length: 30") + "abc";
    assert_eq!(
        parse(text.as_bytes()),
        Err(ParseError::ShortBody {
            declared: 30,
            actual: 3
        })
    );
    let text = REGISTER.replace("Content-Length: 0", "Content-Length: -1");
    assert!(matches!(
        parse(text.as_bytes()),
        Err(ParseError::InvalidHeader {
            name: "Content-Length",
            ..
        })
    ));
}

#[test]
fn expands_compact_header_names() {
    let text = "OPTIONS sip:600@lab.invalid SIP/2.0\r\n\
        v: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKc1\r\n\
        f: <sip:a@lab.invalid>;tag=1\r\nt: <sip:600@lab.invalid>\r\ni: compact-1\r\n\
        CSeq: 4 OPTIONS\r\nl: 0\r\n\r\n";
    let options = request(text);
    assert_eq!(options.call_id_header().unwrap().value(), "compact-1");
    assert_eq!(top_branch(&options.headers).as_deref(), Some("z9hG4bKc1"));
}

#[test]
fn top_via_takes_the_first_entry_of_a_combined_line() {
    let text = REGISTER.replace(
        "Via: SIP/2.0/WSS 4k2ej0tn3u7v.invalid;branch=z9hG4bK5226081",
        "Via: SIP/2.0/UDP p1.invalid;branch=z9hG4bKfirst, SIP/2.0/UDP p2.invalid;branch=z9hG4bKsecond",
    );
    let register = request(&text);
    assert_eq!(
        top_branch(&register.headers).as_deref(),
        Some("z9hG4bKfirst")
    );
}

#[test]
fn response_copies_the_transaction_headers_and_adds_a_to_tag() {
    let register = request(REGISTER);
    let response = response_to(&register, 200, None, Some("srv1"));
    assert_eq!(response.status_code, StatusCode::OK);
    let text = response.to_string();
    assert!(text.starts_with("SIP/2.0 200 OK\r\n"), "{text}");
    assert_eq!(
        response.to_header().unwrap().value(),
        "<sip:5001@lab.invalid>;tag=srv1"
    );
    assert_eq!(
        response.from_header().unwrap(),
        register.from_header().unwrap()
    );
    assert_eq!(
        response.via_header().unwrap(),
        register.via_header().unwrap()
    );
    assert_eq!(
        response.call_id_header().unwrap(),
        register.call_id_header().unwrap()
    );
    assert_eq!(
        response.cseq_header().unwrap(),
        register.cseq_header().unwrap()
    );
    assert!(text.contains("Content-Length: 0\r\n"));
    assert!(
        !text.contains("Contact"),
        "only transaction headers are copied"
    );
    // The response parses back.
    assert!(parse(text.as_bytes()).unwrap().is_response());
}

#[test]
fn response_keeps_an_existing_to_tag_and_100_gets_none() {
    let text = REGISTER.replace(
        "To: <sip:5001@lab.invalid>",
        "To: <sip:5001@lab.invalid>;tag=old",
    );
    let register = request(&text);
    let response = response_to(&register, 486, None, Some("new"));
    assert_eq!(
        response.to_header().unwrap().value(),
        "<sip:5001@lab.invalid>;tag=old"
    );
    let register = request(REGISTER);
    let trying = response_to(&register, 100, None, Some("new"));
    assert_eq!(
        trying.to_header().unwrap().value(),
        "<sip:5001@lab.invalid>"
    );
}

#[test]
fn response_takes_a_custom_reason() {
    let register = request(REGISTER);
    let response = response_to(&register, 403, Some("Registered\r\nElsewhere"), None);
    assert_eq!(response.status_code.code(), 403);
    assert!(response
        .to_string()
        .starts_with("SIP/2.0 403 Registered  Elsewhere\r\n"));
}

#[test]
fn branches_tags_and_call_ids_are_random_and_well_formed() {
    let mut rng = rng();
    let a = new_branch(&mut rng);
    let b = new_branch(&mut rng);
    assert!(a.starts_with(BRANCH_COOKIE) && a.len() == 29, "{a}");
    assert_ne!(a, b);
    let tag = new_tag(&mut rng);
    assert_eq!(tag.len(), 16);
    assert!(tag.chars().all(|c| c.is_ascii_alphanumeric()));
    assert_ne!(new_call_id(&mut rng), new_call_id(&mut rng));
}

#[test]
fn max_forwards_is_decremented_inserted_and_stops_at_zero() {
    let mut register = request(REGISTER);
    assert_eq!(decrement_max_forwards(&mut register), Ok(68));
    assert_eq!(register.max_forwards_header().unwrap().value(), "68");
    let mut bare = request(&REGISTER.replace("Max-Forwards: 69\r\n", ""));
    assert_eq!(decrement_max_forwards(&mut bare), Ok(70));
    let mut spent = request(&REGISTER.replace("Max-Forwards: 69", "Max-Forwards: 0"));
    let error = decrement_max_forwards(&mut spent).unwrap_err();
    assert_eq!(error.status_code(), 483);
}

#[test]
fn set_content_length_replaces_the_old_value() {
    let mut register = request(REGISTER);
    set_content_length(&mut register.headers, 42);
    let lengths: Vec<_> = register
        .headers
        .iter()
        .filter_map(|h| match h {
            Header::ContentLength(v) => Some(v.value().to_owned()),
            _ => None,
        })
        .collect();
    assert_eq!(lengths, vec!["42".to_owned()]);
}

#[test]
fn parses_a_response_with_several_vias() {
    let text = "SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\r\n\
        Via: SIP/2.0/UDP b;branch=z9hG4bK2\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\n\
        Call-ID: x\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
    let message = parse(text.as_bytes()).unwrap();
    assert_eq!(
        top_branch(message_headers(&message)).as_deref(),
        Some("z9hG4bK1")
    );
}

fn message_headers(message: &SipMessage) -> &Headers {
    match message {
        SipMessage::Request(r) => &r.headers,
        SipMessage::Response(r) => &r.headers,
    }
}

fn options_with(via: &str, from: &str) -> String {
    format!(
        "OPTIONS sip:600@lab.invalid SIP/2.0\r\nVia: {via}\r\nFrom: {from}\r\nTo: <sip:600@lab.invalid>\r\n\
         Call-ID: x\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
}

#[test]
fn accepts_what_rsip_typed_headers_would_refuse() {
    for (via, from) in [
        (
            "SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bKa;rport",
            "<sip:a@b>;tag=1",
        ),
        (
            "SIP/2.0/UDP h;branch=z9hG4bKa",
            "\"Agent <5001>; x\" <sip:5001@b>;tag=1",
        ),
        ("SIP/2.0/UDP h;branch=z9hG4bKa", "<tel:+4930123>;tag=1"),
        ("SIP/2.0/UDP h;branch=z9hG4bKa", "sip:5001@b;tag=1"),
    ] {
        let text = options_with(via, from);
        assert!(
            parse(text.as_bytes()).is_ok(),
            "{via} / {from}: {:?}",
            parse(text.as_bytes())
        );
    }
    let text = options_with("SIP/2.0/UDP h;branch=z9hG4bKa", "\"no uri\"");
    assert!(matches!(
        parse(text.as_bytes()),
        Err(ParseError::InvalidHeader { name: "From", .. })
    ));
}

#[test]
fn a_sipp_invite_with_body_and_padded_content_length_parses() {
    let sdp = "v=0\r\no=user1 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
               m=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
    let text = format!(
        "INVITE sip:service@127.0.0.1:5060 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1234-1-0\r\n\
         From: sipp <sip:sipp@127.0.0.1:5061>;tag=1234SIPpTag001\r\n\
         To: service <sip:service@127.0.0.1:5060>\r\nCall-ID: 1-1234@127.0.0.1\r\nCSeq: 1 INVITE\r\n\
         Contact: sip:sipp@127.0.0.1:5061\r\nMax-Forwards: 70\r\nContent-Type: application/sdp\r\n\
         Content-Length:   {}\r\n\r\n{sdp}",
        sdp.len()
    );
    let message = parse(text.as_bytes()).unwrap();
    assert_eq!(message.body(), sdp.as_bytes());
}

#[test]
fn an_unknown_method_is_501_not_400() {
    let text = "FOO sip:600@lab.invalid SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKa\r\n\
        From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: x\r\nCSeq: 1 FOO\r\n\r\n";
    let error = parse(text.as_bytes()).unwrap_err();
    assert_eq!(error, ParseError::UnknownMethod("FOO".into()));
    assert_eq!(error.status_code(), 501);
    let response = bad_request_for(text.as_bytes(), &error, "t").unwrap();
    assert!(
        response
            .to_string()
            .starts_with("SIP/2.0 501 Not Implemented\r\n"),
        "{response}"
    );
}

/// Mutated messages must give an error or a message, never a panic: a panic in the parser
/// would take the connection (or the task) down with it.
#[test]
fn mutated_input_never_panics() {
    use rand::Rng;
    let mut rng = rng();
    let seeds = [REGISTER.as_bytes().to_vec(), {
        let register = request(REGISTER);
        response_to(&register, 401, None, Some("x"))
            .to_string()
            .into_bytes()
    }];
    let alphabet = b" \r\n:;,<>\"=@\\/0123456789abcSIPz\x00\xff\xc3";
    for round in 0..3000 {
        let mut bytes = seeds[round % 2].clone();
        for _ in 0..(1 + rng.next_u32() % 6) {
            let at = (rng.next_u32() as usize) % bytes.len();
            match rng.next_u32() % 3 {
                0 => bytes[at] = alphabet[(rng.next_u32() as usize) % alphabet.len()],
                1 => {
                    bytes.remove(at);
                }
                _ => bytes.insert(at, alphabet[(rng.next_u32() as usize) % alphabet.len()]),
            }
        }
        let cut = (rng.next_u32() as usize) % (bytes.len() + 1);
        for input in [&bytes[..], &bytes[..cut]] {
            if let Err(error) = parse(input) {
                let _ = bad_request_for(input, &error, "t");
                assert!(!error.reason_phrase().contains(['\r', '\n']));
            }
        }
    }
}

#[test]
fn dialog_creating_responses_copy_record_route() {
    let text = "INVITE sip:600@lab.invalid SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKa\r\n\
        Record-Route: <sip:p1.invalid;lr>\r\nRecord-Route: <sip:p2.invalid;lr>\r\n\
        From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n\r\n";
    let invite = request(text);
    let record_routes = |r: &Response| {
        r.headers
            .iter()
            .filter(|h| matches!(h, Header::RecordRoute(_)))
            .count()
    };
    assert_eq!(
        record_routes(&response_to(&invite, 180, None, Some("t"))),
        2
    );
    assert_eq!(
        record_routes(&response_to(&invite, 200, None, Some("t"))),
        2
    );
    assert_eq!(record_routes(&response_to(&invite, 100, None, None)), 0);
    assert_eq!(
        record_routes(&response_to(&invite, 486, None, Some("t"))),
        0
    );
    let options = request(&text.replace("INVITE", "OPTIONS"));
    assert_eq!(
        record_routes(&response_to(&options, 200, None, Some("t"))),
        0
    );
}
