use super::*;
use rsip::message::HeadersExt;

const OPTIONS: &str = "OPTIONS sip:600@gw.invalid SIP/2.0\r\n\
    Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKc1\r\nMax-Forwards: 70\r\n\
    From: <sip:a@gw.invalid>;tag=f1\r\nTo: <sip:600@gw.invalid>\r\nCall-ID: conf-1\r\n\
    CSeq: 7 OPTIONS\r\nContent-Length: 0\r\n\r\n";

fn without(text: &str, name: &str) -> String {
    text.split("\r\n").filter(|l| !l.starts_with(&format!("{name}:"))).collect::<Vec<_>>().join("\r\n")
}

fn as_method(method: &str) -> String {
    OPTIONS.replace("OPTIONS sip:", &format!("{method} sip:")).replace("7 OPTIONS", &format!("7 {method}"))
}

/// The status line `screen` and `refusal_for` give, or "accepted".
fn status_line(text: &str) -> String {
    match screen(text.as_bytes()) {
        Ok(_) => "accepted".into(),
        Err(rejection) => match refusal_for(text.as_bytes(), &rejection, "t1") {
            Some(r) => r.to_string().split("\r\n").next().unwrap().to_owned(),
            None => format!("unanswered ({rejection})"),
        },
    }
}

#[test]
fn each_refusal_has_its_status_line() {
    let cases = [
        (without(OPTIONS, "To"), "SIP/2.0 400 Missing To header"),
        (without(OPTIONS, "From"), "SIP/2.0 400 Missing From header"),
        (without(OPTIONS, "Call-ID"), "SIP/2.0 400 Missing Call-ID header"),
        (without(OPTIONS, "CSeq"), "SIP/2.0 400 Missing CSeq header"),
        (OPTIONS.replace("CSeq: 7 OPTIONS", "CSeq: seven OPTIONS"), "SIP/2.0 400 Bad CSeq header"),
        (OPTIONS.replace("CSeq: 7 OPTIONS", "CSeq: 7 INVITE"), "SIP/2.0 400 Bad CSeq header"),
        (OPTIONS.replace("To: <sip:600@gw.invalid>", "To: nothing"), "SIP/2.0 400 Bad To header"),
        (OPTIONS.replace("Call-ID: conf-1", "Call-ID: conf-1\r\nCall-ID: conf-2"), "SIP/2.0 400 Bad Call-ID header"),
        (OPTIONS.replace("Max-Forwards: 70", "Max-Forwards: 256"), "SIP/2.0 400 Bad Max-Forwards header"),
        (OPTIONS.replace("Max-Forwards: 70", "Max-Forwards: +7"), "SIP/2.0 400 Bad Max-Forwards header"),
        (OPTIONS.replace("Max-Forwards: 70", "Max-Forwards: -1"), "SIP/2.0 400 Bad Max-Forwards header"),
        (OPTIONS.replace("Content-Length: 0\r\n\r\n", "Content-Length: 40\r\n\r\nshort"), "SIP/2.0 400 Bad Content-Length header"),
        (OPTIONS.replace("Content-Length: 0", "Content-Length: many"), "SIP/2.0 400 Bad Content-Length header"),
        (OPTIONS.replace("Max-Forwards: 70", "Require: foo"), "SIP/2.0 420 Bad Extension"),
        (OPTIONS.replace("sip:600@gw.invalid SIP", "http://gw.invalid/ SIP"), "SIP/2.0 416 Unsupported URI Scheme"),
        (OPTIONS.replace("sip:600@gw.invalid SIP", "tel:+4930123 SIP"), "SIP/2.0 416 Unsupported URI Scheme"),
        (OPTIONS.replace("sip:600@gw.invalid SIP", "urn:service:sos SIP"), "SIP/2.0 416 Unsupported URI Scheme"),
        (OPTIONS.replace("gw.invalid SIP/2.0", "gw.invalid SIP/3.0"), "SIP/2.0 505 Version Not Supported"),
        (OPTIONS.replace("gw.invalid SIP/2.0", "gw.invalid SIP/2.1"), "SIP/2.0 505 Version Not Supported"),
        (as_method("MESSAGE").replace("Max-Forwards: 70", "Max-Forwards: 0"), "SIP/2.0 483 Too Many Hops"),
        (as_method("INVITE").replace("Max-Forwards: 70", "Max-Forwards: 0"), "SIP/2.0 483 Too Many Hops"),
        (as_method("FOO"), "SIP/2.0 501 Not Implemented"),
        // Answered normally: the gateway answers OPTIONS itself.
        (OPTIONS.replace("Max-Forwards: 70", "Max-Forwards: 0"), "accepted"),
        (OPTIONS.replace("Max-Forwards: 70", "Require: Timer"), "accepted"),
        (OPTIONS.replace("sip:600@gw.invalid SIP", "sips:600@gw.invalid SIP"), "accepted"),
        (OPTIONS.to_owned(), "accepted"),
    ];
    for (text, expected) in cases {
        assert_eq!(status_line(&text), expected, "{text}");
    }
}

#[test]
fn only_a_request_without_a_readable_via_goes_unanswered() {
    assert!(status_line(&without(OPTIONS, "Via")).starts_with("unanswered"));
    let bad_via = OPTIONS.replace("SIP/2.0/UDP 192.0.2.1:5060", "nonsense");
    assert!(status_line(&bad_via).starts_with("unanswered"));
    // With To, From, Call-ID and CSeq all gone, the Via alone is enough.
    let bare = ["To", "From", "Call-ID", "CSeq"].iter().fold(OPTIONS.to_owned(), |t, h| without(&t, h));
    assert_eq!(status_line(&bare), "SIP/2.0 400 Missing From header");
    // ACKs and responses are never answered.
    let ack = as_method("ACK").replace("Max-Forwards: 70", "Max-Forwards: x");
    assert!(status_line(&ack).starts_with("unanswered"));
    let response = "SIP/3.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\r\n";
    assert!(status_line(response).starts_with("unanswered"));
}

#[test]
fn the_420_lists_each_unsupported_tag_once_and_ack_and_cancel_ignore_require() {
    let text = OPTIONS.replace("Max-Forwards: 70", "Require: 100rel, timer\r\nRequire: foo, 100REL");
    let rejection = screen(text.as_bytes()).unwrap_err();
    assert_eq!(rejection, Rejection::BadExtension(vec!["100rel".into(), "foo".into()]));
    assert!(!rejection.is_malformed(), "well-formed; not for the ban engine");
    let response = refusal_for(text.as_bytes(), &rejection, "t1").unwrap();
    let unsupported = response.headers.iter().find_map(|h| match h {
        Header::Unsupported(u) => Some(u.value().to_owned()),
        _ => None,
    });
    assert_eq!(unsupported.as_deref(), Some("100rel, foo"));
    assert_eq!(response.call_id_header().unwrap().value(), "conf-1");
    assert_eq!(response.cseq_header().unwrap().value(), "7 OPTIONS");
    for method in ["ACK", "CANCEL"] {
        let text = as_method(method).replace("Max-Forwards: 70", "Require: foo");
        assert!(screen(text.as_bytes()).is_ok(), "{method}");
    }
}

#[test]
fn what_the_refusals_carry_is_what_a_strict_parser_reads() {
    for text in [
        without(OPTIONS, "To"),
        without(OPTIONS, "CSeq"),
        OPTIONS.replace("gw.invalid SIP/2.0", "gw.invalid SIP/3.0"),
        OPTIONS.replace("Max-Forwards: 70", "Require: foo"),
    ] {
        let rejection = screen(text.as_bytes()).unwrap_err();
        let response = refusal_for(text.as_bytes(), &rejection, "t1").unwrap().to_string();
        assert!(message::parse(response.as_bytes()).is_ok(), "{response}");
        assert!(response.contains("branch=z9hG4bKc1"), "{response}");
    }
}

#[test]
fn reasons_are_fixed_labels_and_malformed_is_what_the_ban_engine_counts() {
    let to = screen(without(OPTIONS, "To").as_bytes()).unwrap_err();
    assert_eq!((to.reason(), to.is_malformed()), ("Missing To header", true));
    let version = screen(OPTIONS.replace("SIP/2.0\r\n", "SIP/3.0\r\n").as_bytes()).unwrap_err();
    assert_eq!((version.reason(), version.is_malformed()), ("Version Not Supported", true));
    let scheme = screen(OPTIONS.replace("sip:600", "tel:600").as_bytes()).unwrap_err();
    assert_eq!((scheme.reason(), scheme.is_malformed()), ("Unsupported URI Scheme", false));
    let hops = screen(as_method("INFO").replace("Max-Forwards: 70", "Max-Forwards: 0").as_bytes()).unwrap_err();
    assert_eq!((hops.status_code(), hops.is_malformed()), (483, false));
}
