use super::*;
use rsip::message::HeadersExt;

const CONTACT: &str = "<sip:q1@h.invalid;transport=ws>;+sip.ice;reg-id=1;\
    +sip.instance=\"<urn:uuid:0b8a;x>\";expires=600";

fn register(dn: &str, contact: &str, expires: Option<&str>, cseq: u32) -> Request {
    let expires = expires
        .map(|e| format!("Expires: {e}\r\n"))
        .unwrap_or_default();
    let text = format!(
        "REGISTER sip:lab.invalid SIP/2.0\r\nVia: SIP/2.0/WSS h.invalid;branch=z9hG4bK{cseq}\r\n\
         From: <sip:{dn}@lab.invalid>;tag=a\r\nTo: <sip:{dn}@lab.invalid>\r\nCall-ID: call-{dn}\r\n\
         CSeq: {cseq} REGISTER\r\nContact: {contact}\r\n{expires}Content-Length: 0\r\n\r\n"
    );
    match crate::sip::message::parse(text.as_bytes()).unwrap() {
        rsip::SipMessage::Request(r) => r,
        _ => unreachable!(),
    }
}

fn events(registrar: &mut Registrar) -> Vec<RegistrarEvent> {
    std::iter::from_fn(|| registrar.poll_event()).collect()
}

fn contacts(response: &Response) -> Vec<String> {
    response
        .contact_headers()
        .iter()
        .map(|c| c.value().to_owned())
        .collect()
}

const A: ConnId = ConnId(1);
const B: ConnId = ConnId(2);

#[test]
fn register_binds_the_dn_to_the_connection_and_echoes_the_contact() {
    let mut registrar = Registrar::default();
    let now = Instant::now();
    let response =
        registrar.handle_register(&register("5001", CONTACT, None, 1), "5001", A, now, "t");
    assert_eq!(response.status_code.code(), 200);
    assert_eq!(
        contacts(&response),
        vec!["<sip:q1@h.invalid;transport=ws>;+sip.ice;reg-id=1;+sip.instance=\"<urn:uuid:0b8a;x>\";expires=600"]
    );
    assert_eq!(
        response.to_header().unwrap().value(),
        "<sip:5001@lab.invalid>;tag=t"
    );
    assert_eq!(registrar.binding("5001"), Some(A));
    assert_eq!(
        events(&mut registrar),
        vec![RegistrarEvent::Registered {
            dn: "5001".into(),
            conn: A,
            expires: 600
        }]
    );
    assert!(crate::sip::message::parse(response.to_string().as_bytes()).is_ok());
}

#[test]
fn expires_comes_from_the_contact_then_the_header_then_the_default() {
    let now = Instant::now();
    let mut registrar = Registrar::default();
    let r = registrar.handle_register(
        &register("5001", "<sip:a@h.invalid>", Some("120"), 1),
        "5001",
        A,
        now,
        "t",
    );
    assert_eq!(contacts(&r), vec!["<sip:a@h.invalid>;expires=120"]);
    let r = registrar.handle_register(
        &register("5002", "<sip:a@h.invalid>", None, 1),
        "5002",
        A,
        now,
        "t",
    );
    assert_eq!(contacts(&r), vec!["<sip:a@h.invalid>;expires=600"]);
    let r = registrar.handle_register(
        &register("5003", "<sip:a@h.invalid>;expires=90", Some("120"), 1),
        "5003",
        A,
        now,
        "t",
    );
    assert_eq!(contacts(&r), vec!["<sip:a@h.invalid>;expires=90"]);
}

#[test]
fn too_long_is_clamped_and_too_short_gets_423_with_min_expires() {
    let now = Instant::now();
    let mut registrar = Registrar::default();
    let r = registrar.handle_register(
        &register("5001", "<sip:a@h.invalid>", Some("99999999999"), 1),
        "5001",
        A,
        now,
        "t",
    );
    assert_eq!(contacts(&r), vec!["<sip:a@h.invalid>;expires=3600"]);
    let r = registrar.handle_register(
        &register("5002", "<sip:a@h.invalid>", Some("10"), 1),
        "5002",
        A,
        now,
        "t",
    );
    assert_eq!(r.status_code.code(), 423);
    assert_eq!(r.min_expires_header().unwrap().value(), "60");
    assert_eq!(registrar.binding("5002"), None);
}

#[test]
fn bad_requests_are_refused_with_a_named_reason() {
    let now = Instant::now();
    let mut registrar = Registrar::default();
    let cases = [
        (
            register("5001", "<sip:a@h.invalid>", Some("soon"), 1),
            400,
            "unreadable expires",
        ),
        (register("5001", "*", Some("600"), 1), 400, "Contact: *"),
        (
            register("5001", "*, <sip:a@h.invalid>", Some("0"), 1),
            400,
            "Contact: *",
        ),
    ];
    for (request, code, text) in cases {
        let response = registrar.handle_register(&request, "5001", A, now, "t");
        assert_eq!(response.status_code.code(), code);
        assert!(
            response.status_code.to_string().contains(text),
            "{}",
            response.status_code
        );
    }
    assert!(registrar.is_empty());
}

fn query(dn: &str, cseq: u32) -> Request {
    let mut request = register(dn, "<sip:unused@h.invalid>", None, cseq);
    request.headers.retain(|h| !matches!(h, Header::Contact(_)));
    request
}

#[test]
fn a_register_without_contact_lists_the_bindings_and_changes_nothing() {
    let t0 = Instant::now();
    let mut registrar = Registrar::new(RegistrarPolicy {
        duplicate: DuplicatePolicy::Allow,
        ..Default::default()
    });
    let r = registrar.handle_register(&query("5001", 1), "5001", A, t0, "t");
    assert_eq!(r.status_code.code(), 200, "a query with no binding: {r}");
    assert!(contacts(&r).is_empty());
    assert!(registrar.is_empty());

    registrar.handle_register(&register("5001", "<sip:a@h.invalid>", Some("600"), 2), "5001", A, t0, "t");
    registrar.handle_register(&register("5001", "<sip:b@h.invalid>", Some("300"), 1), "5001", B, t0, "t");
    events(&mut registrar);
    // From either connection, and with a CSeq that would be out of order for an update.
    let later = t0 + Duration::from_secs(100);
    let r = registrar.handle_register(&query("5001", 1), "5001", A, later, "t");
    assert_eq!(r.status_code.code(), 200);
    assert_eq!(
        contacts(&r),
        vec!["<sip:a@h.invalid>;expires=500", "<sip:b@h.invalid>;expires=200"]
    );
    assert!(events(&mut registrar).is_empty(), "a query changes no binding");
    assert_eq!(registrar.len(), 2);
    // A query is still for the DN the credentials proved.
    let r = registrar.handle_register(&query("5002", 1), "5001", A, later, "t");
    assert_eq!(r.status_code.code(), 403);
}

#[test]
fn registering_another_dn_than_authenticated_is_forbidden() {
    let mut registrar = Registrar::default();
    let response = registrar.handle_register(
        &register("5002", CONTACT, None, 1),
        "5001",
        A,
        Instant::now(),
        "t",
    );
    assert_eq!(response.status_code.code(), 403);
    assert!(registrar.is_empty());
    assert!(events(&mut registrar).is_empty());
}

#[test]
fn expires_zero_and_wildcard_unbind() {
    let now = Instant::now();
    let mut registrar = Registrar::new(RegistrarPolicy {
        duplicate: DuplicatePolicy::Allow,
        ..Default::default()
    });
    registrar.handle_register(&register("5001", CONTACT, None, 1), "5001", A, now, "t");
    let r = registrar.handle_register(
        &register("5001", CONTACT, Some("0"), 2),
        "5001",
        A,
        now,
        "t",
    );
    assert_eq!(
        r.status_code.code(),
        200,
        "expires param 600 wins over the header"
    );
    let r = registrar.handle_register(
        &register("5001", "<sip:a@h.invalid>;expires=0", None, 3),
        "5001",
        A,
        now,
        "t",
    );
    assert_eq!(r.status_code.code(), 200);
    assert!(contacts(&r).is_empty());
    assert_eq!(registrar.binding("5001"), None);
    registrar.handle_register(&register("5001", CONTACT, None, 4), "5001", A, now, "t");
    registrar.handle_register(&register("5001", CONTACT, None, 1), "5001", B, now, "t");
    events(&mut registrar);
    // `*` with another expiry leaves both bindings alone.
    let r = registrar.handle_register(&register("5001", "*", Some("60"), 5), "5001", A, now, "t");
    assert_eq!(r.status_code.code(), 400);
    assert_eq!(registrar.len(), 2);
    let r = registrar.handle_register(&register("5001", "*", Some("0"), 6), "5001", A, now, "t");
    assert_eq!(r.status_code.code(), 200);
    assert!(contacts(&r).is_empty(), "{r}");
    assert!(registrar.is_empty());
    let ended = events(&mut registrar);
    assert_eq!(ended.len(), 2);
    assert!(ended.iter().all(|e| matches!(
        e,
        RegistrarEvent::Unregistered {
            reason: UnregisterReason::Requested,
            ..
        }
    )));
}

#[test]
fn a_refresh_updates_expiry_without_a_new_event_and_old_cseq_fails() {
    let t0 = Instant::now();
    let mut registrar = Registrar::default();
    registrar.handle_register(
        &register("5001", "<sip:a@h.invalid>", Some("100"), 1),
        "5001",
        A,
        t0,
        "t",
    );
    events(&mut registrar);
    let t1 = t0 + Duration::from_secs(50);
    let r = registrar.handle_register(
        &register("5001", "<sip:a@h.invalid>", Some("100"), 2),
        "5001",
        A,
        t1,
        "t",
    );
    assert_eq!(r.status_code.code(), 200);
    assert!(events(&mut registrar).is_empty());
    assert_eq!(
        registrar.poll_timeout(),
        Some(t1 + Duration::from_secs(100))
    );
    let r = registrar.handle_register(
        &register("5001", "<sip:a@h.invalid>", Some("100"), 2),
        "5001",
        A,
        t1,
        "t",
    );
    assert_eq!(r.status_code.code(), 500);
}

#[test]
fn replace_policy_moves_the_dn_to_the_new_connection() {
    let now = Instant::now();
    let mut registrar = Registrar::default();
    registrar.handle_register(&register("5001", CONTACT, None, 1), "5001", A, now, "t");
    events(&mut registrar);
    let r = registrar.handle_register(&register("5001", CONTACT, None, 1), "5001", B, now, "t");
    assert_eq!(r.status_code.code(), 200);
    assert_eq!(contacts(&r).len(), 1);
    assert_eq!(registrar.binding("5001"), Some(B));
    assert_eq!(
        events(&mut registrar),
        vec![
            RegistrarEvent::Replaced {
                dn: "5001".into(),
                old_conn: A,
                new_conn: B
            },
            RegistrarEvent::Registered {
                dn: "5001".into(),
                conn: B,
                expires: 600
            },
        ]
    );
    registrar.connection_closed(A);
    assert_eq!(registrar.binding("5001"), Some(B));
    assert!(events(&mut registrar).is_empty());
    assert_eq!(registrar.len(), 1);
}

#[test]
fn reject_policy_refuses_a_second_connection_until_the_first_goes() {
    let now = Instant::now();
    let mut registrar = Registrar::new(RegistrarPolicy {
        duplicate: DuplicatePolicy::Reject,
        ..Default::default()
    });
    registrar.handle_register(&register("5001", CONTACT, None, 1), "5001", A, now, "t");
    let r = registrar.handle_register(&register("5001", CONTACT, None, 1), "5001", B, now, "t");
    assert_eq!(r.status_code.code(), 403);
    assert_eq!(registrar.binding("5001"), Some(A));
    registrar.connection_closed(A);
    let r = registrar.handle_register(&register("5001", CONTACT, None, 1), "5001", B, now, "t");
    assert_eq!(r.status_code.code(), 200);
    assert_eq!(registrar.binding("5001"), Some(B));
}

#[test]
fn allow_policy_lists_all_routes_to_the_latest_and_stays_bounded() {
    let t0 = Instant::now();
    let policy = RegistrarPolicy {
        duplicate: DuplicatePolicy::Allow,
        max_bindings_per_dn: 2,
        ..Default::default()
    };
    let mut registrar = Registrar::new(policy);
    registrar.handle_register(
        &register("5001", "<sip:a@h.invalid>", None, 1),
        "5001",
        A,
        t0,
        "t",
    );
    let r = registrar.handle_register(
        &register("5001", "<sip:b@h.invalid>", None, 1),
        "5001",
        B,
        t0 + Duration::from_secs(1),
        "t",
    );
    assert_eq!(contacts(&r).len(), 2);
    assert_eq!(registrar.binding("5001"), Some(B));
    events(&mut registrar);
    registrar.handle_register(
        &register("5001", "<sip:c@h.invalid>", None, 1),
        "5001",
        ConnId(3),
        t0 + Duration::from_secs(2),
        "t",
    );
    assert_eq!(registrar.bindings_of("5001").len(), 2);
    assert_eq!(
        events(&mut registrar)[0],
        RegistrarEvent::Unregistered {
            dn: "5001".into(),
            conn: A,
            reason: UnregisterReason::Evicted
        }
    );
    registrar.connection_closed(ConnId(3));
    assert_eq!(registrar.binding("5001"), Some(B));
}

#[test]
fn bindings_expire_on_time() {
    let t0 = Instant::now();
    let mut registrar = Registrar::default();
    registrar.handle_register(
        &register("5001", "<sip:a@h.invalid>", Some("60"), 1),
        "5001",
        A,
        t0,
        "t",
    );
    registrar.handle_register(
        &register("5002", "<sip:a@h.invalid>", Some("120"), 1),
        "5002",
        B,
        t0,
        "t",
    );
    events(&mut registrar);
    assert_eq!(registrar.poll_timeout(), Some(t0 + Duration::from_secs(60)));
    registrar.handle_timeout(t0 + Duration::from_secs(59));
    assert_eq!(registrar.len(), 2);
    registrar.handle_timeout(t0 + Duration::from_secs(60));
    assert_eq!(registrar.binding("5001"), None);
    assert_eq!(
        events(&mut registrar),
        vec![RegistrarEvent::Unregistered {
            dn: "5001".into(),
            conn: A,
            reason: UnregisterReason::Expired
        }]
    );
    assert_eq!(
        registrar.poll_timeout(),
        Some(t0 + Duration::from_secs(120))
    );
    registrar.handle_timeout(t0 + Duration::from_secs(500));
    assert!(registrar.is_empty());
    assert_eq!(registrar.poll_timeout(), None);
}

#[test]
fn closing_a_connection_ends_all_its_bindings_at_once() {
    let now = Instant::now();
    let mut registrar = Registrar::default();
    registrar.handle_register(&register("5001", CONTACT, None, 1), "5001", A, now, "t");
    registrar.handle_register(&register("5002", CONTACT, None, 1), "5002", A, now, "t");
    registrar.handle_register(&register("5003", CONTACT, None, 1), "5003", B, now, "t");
    events(&mut registrar);
    registrar.connection_closed(A);
    let ended = events(&mut registrar);
    assert_eq!(ended.len(), 2);
    assert!(ended.iter().all(|e| matches!(
        e,
        RegistrarEvent::Unregistered {
            conn: A,
            reason: UnregisterReason::ConnectionClosed,
            ..
        }
    )));
    let listed: Vec<_> = registrar
        .list()
        .iter()
        .map(|b| (b.dn.clone(), b.conn))
        .collect();
    assert_eq!(listed, vec![("5003".to_owned(), B)]);
    assert_eq!(
        registrar.poll_timeout(),
        Some(now + Duration::from_secs(600))
    );
}

/// Found by the `ws_session` fuzz target: a Contact whose URI holds a space was bound, and the
/// INVITE call control then built toward it did not parse (call control panicked).
#[test]
fn a_contact_uri_a_request_line_cannot_carry_is_refused() {
    for contact in ["<sip:abc@a.invalid;tran sport=ws>", "<sip:abc@a.invalid;trans,ort=ws>", "<sip:abc@a.invalid\tx>", "<not a uri>", "<>"] {
        let mut registrar = Registrar::default();
        let response = registrar.handle_register(&register("5001", contact, None, 1), "5001", A, Instant::now(), "t");
        assert_eq!(response.status_code.code(), 400, "{contact}");
        assert!(registrar.bindings_of("5001").is_empty(), "{contact}");
    }
    let mut registrar = Registrar::default();
    let response = registrar.handle_register(&register("5001", CONTACT, None, 1), "5001", A, Instant::now(), "t");
    assert_eq!(response.status_code.code(), 200);
}

#[test]
fn a_refresh_with_a_new_contact_is_checked_again() {
    let mut registrar = Registrar::default();
    let now = Instant::now();
    let response = registrar.handle_register(&register("5001", CONTACT, None, 1), "5001", A, now, "t");
    assert_eq!(response.status_code.code(), 200);
    // The bound contact again, with another expires: a refresh.
    let refresh = CONTACT.replace("expires=600", "expires=300");
    let response = registrar.handle_register(&register("5001", &refresh, None, 2), "5001", A, now, "t");
    assert_eq!(response.status_code.code(), 200);
    // A contact the binding does not hold yet is checked like a first one.
    let bad = "<sip:abc@a.invalid;tran sport=ws>";
    let response = registrar.handle_register(&register("5001", bad, None, 3), "5001", A, now, "t");
    assert_eq!(response.status_code.code(), 400);
    assert_eq!(registrar.bindings_of("5001")[0].contacts, vec![strip_expires(CONTACT)]);
}
