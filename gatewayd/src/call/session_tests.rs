//! In-dialog and loop behaviour through the B2BUA core, with the clock moved by hand: session
//! timers (RFC 4028), glare (491), UPDATE, and merged requests (482).

use std::time::Duration;

use super::*;

/// The SIP server's INVITE with extra headers (Session-Expires, Allow...).
fn server_invite_with(dn: &str, extra: &str) -> String {
    server_invite(dn, Some(&sdp("server-offer"))).replacen("Call-Info:", &format!("{extra}Call-Info:"), 1)
}

/// An inbound call answered by the agent: returns the 200 the server got.
fn answered_inbound(h: &mut Harness, extra: &str) -> String {
    let out = h.upstream(SERVER, &server_invite_with("5001", extra));
    let invite = to_agent(&out).into_iter().find(|m| m.starts_with("INVITE")).unwrap_or_else(|| panic!("INVITE to the agent: {out:?}"));
    let out = h.agent(&agent_ok(&invite, &sdp("agent-answer")));
    let ok = to_server(&out, SERVER).into_iter().find(|m| m.starts_with("SIP/2.0 200")).unwrap_or_else(|| panic!("200 to the server: {out:?}"));
    let ack = server_in_dialog(&ok, "ACK", 1, "", None);
    h.upstream(SERVER, &ack);
    ok
}

/// An in-dialog request from the server on the inbound call answered by `ok`.
fn server_in_dialog(ok: &str, method: &str, cseq: u32, extra: &str, body: Option<&str>) -> String {
    let to_tag = header(ok, "To").split("tag=").nth(1).unwrap().to_owned();
    let body = match body {
        Some(b) => format!("Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{b}", b.len()),
        None => "Content-Length: 0\r\n\r\n".into(),
    };
    format!("{method} sip:5001@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKind{cseq}\r\nMax-Forwards: 70\r\nFrom: \"Customer\" <sip:+15551234@genesys>;tag=s1\r\nTo: <sip:5001@lab>;tag={to_tag}\r\nCall-ID: servercall\r\nCSeq: {cseq} {method}\r\nContact: <sip:sipp@127.0.0.1:5080>\r\n{extra}{body}")
}

/// Our answer to the server's in-dialog request `request`.
fn answer_to(h: &mut Harness, request: &str) -> String {
    let out = h.upstream(SERVER, request);
    let cseq = header(request, "CSeq");
    to_server(&out, SERVER).into_iter().find(|m| m.starts_with("SIP/2.0") && !m.starts_with("SIP/2.0 100") && header(m, "CSeq") == cseq).unwrap_or_else(|| panic!("answer to {cseq}: {out:?}"))
}

/// The agent's ACK for our 200 `ok` to its INVITE (Call-ID agentcall) to `to`.
fn agent_ack(ok: &str, to: &str) -> String {
    let tag = header(ok, "To").split("tag=").nth(1).unwrap().to_owned();
    format!("ACK sip:gatewayd@gw.lab;transport=ws SIP/2.0\r\nVia: SIP/2.0/WSS b.invalid;branch=z9hG4bKa2\r\nMax-Forwards: 70\r\nFrom: <sip:5001@lab>;tag=ag1\r\nTo: <sip:{to}@lab>;tag={tag}\r\nCall-ID: agentcall\r\nCSeq: 2 ACK\r\nContent-Length: 0\r\n\r\n")
}

/// Moves the clock on and returns what went out, upstream health checks left aside.
fn tick(h: &mut Harness, secs: u64) -> Vec<(Destination, String)> {
    h.now += Duration::from_secs(secs);
    h.cc.handle_timeout(h.now, 5000, &mut h.rng);
    h.outputs().into_iter().filter(|(_, m)| !m.starts_with("OPTIONS ")).collect()
}

#[test]
fn the_server_refreshes_and_a_missed_refresh_ends_the_call_on_both_legs() {
    let mut h = Harness::new();
    let ok = answered_inbound(&mut h, "Supported: timer\r\nSession-Expires: 90;refresher=uac\r\n");
    assert_eq!(header(&ok, "Session-Expires"), "90;refresher=uac");
    assert_eq!(header(&ok, "Require"), "timer", "the server must know it is the refresher");
    assert!(header(&ok, "Allow").contains("UPDATE"));

    // A bare UPDATE refreshes: 200 without a body, the timer restarts.
    h.now += Duration::from_secs(40);
    let update = server_in_dialog(&ok, "UPDATE", 2, "Session-Expires: 90;refresher=uac\r\n", None);
    let answer = answer_to(&mut h, &update);
    assert!(answer.starts_with("SIP/2.0 200"), "{answer}");
    assert_eq!(header(&answer, "Content-Length"), "0", "no SDP in the answer to a bare UPDATE: {answer}");
    assert_eq!(header(&answer, "Session-Expires"), "90;refresher=uac");

    // 59 s after that refresh nothing happens; at 60 s (90 - 30) the call is ended.
    let out = tick(&mut h, 59);
    assert!(out.is_empty(), "{out:?}");
    let out = tick(&mut h, 1);
    assert!(to_server(&out, SERVER).iter().any(|m| m.starts_with("BYE ")), "{out:?}");
    assert!(to_agent(&out).iter().any(|m| m.starts_with("BYE ")), "{out:?}");
    assert!(out.iter().any(|(_, m)| m == "ENDED Inbound 480 session timer expired"), "{out:?}");
    assert_eq!(h.cc.active_calls(), 0);
}

#[test]
fn we_refresh_with_update_when_the_server_asks_us_to() {
    let mut h = Harness::new();
    let ok = answered_inbound(&mut h, "Allow: INVITE, ACK, BYE, CANCEL, UPDATE\r\nSupported: timer\r\nSession-Expires: 120;refresher=uas\r\n");
    assert_eq!(header(&ok, "Session-Expires"), "120;refresher=uas");
    assert_eq!(header(&ok, "Require"), "", "we refresh, so the server need not support timers");
    assert!(tick(&mut h, 59).is_empty());
    let out = tick(&mut h, 1);
    let update = to_server(&out, SERVER).into_iter().find(|m| m.starts_with("UPDATE ")).unwrap_or_else(|| panic!("UPDATE refresh: {out:?}"));
    assert_eq!(header(&update, "Session-Expires"), "120;refresher=uac");
    assert_eq!(header(&update, "Content-Length"), "0");
    assert!(to_agent(&out).is_empty(), "the agent leg is not involved: {out:?}");

    let mut r = server_response(&update, 200, "OK", None);
    r = r.replace("Content-Length: 0", "Session-Expires: 120;refresher=uac\r\nContent-Length: 0");
    h.upstream(SERVER, &r);
    // The next refresh is due 60 s after the answer, not before.
    assert!(tick(&mut h, 59).iter().all(|(_, m)| !m.starts_with("UPDATE")));
    assert!(tick(&mut h, 1).iter().any(|(_, m)| m.starts_with("UPDATE ")));
}

#[test]
fn without_update_we_refresh_with_a_reinvite_and_acknowledge_it() {
    let mut h = Harness::new();
    answered_inbound(&mut h, "Allow: INVITE, ACK, BYE, CANCEL\r\nSession-Expires: 90;refresher=uas\r\n");
    let out = tick(&mut h, 45);
    let reinvite = to_server(&out, SERVER).into_iter().find(|m| m.starts_with("INVITE ")).unwrap_or_else(|| panic!("re-INVITE refresh: {out:?}"));
    assert!(reinvite.contains("s=internal-answer"), "it repeats our current description: {reinvite}");
    let out = h.upstream(SERVER, &server_response(&reinvite, 200, "OK", Some(&sdp("server-offer"))));
    assert!(to_server(&out, SERVER).iter().any(|m| m.starts_with("ACK ")), "{out:?}");
    assert_eq!(h.cc.active_calls(), 1);
}

#[test]
fn glare_gets_491_and_our_refresh_backs_off_and_retries() {
    let mut h = Harness::new();
    let ok = answered_inbound(&mut h, "Allow: INVITE, ACK, BYE, CANCEL\r\nSession-Expires: 90;refresher=uas\r\n");
    let out = tick(&mut h, 45);
    let ours = to_server(&out, SERVER).into_iter().find(|m| m.starts_with("INVITE ")).expect("our re-INVITE");

    // The server's own re-INVITE crosses ours: it gets 491.
    let theirs = server_in_dialog(&ok, "INVITE", 2, "", Some(&sdp("server-hold")));
    assert!(answer_to(&mut h, &theirs).starts_with("SIP/2.0 491"));

    // Ours gets 491 too: we are not the Call-ID owner, so we retry within 2 s.
    h.upstream(SERVER, &server_response(&ours, 491, "Request Pending", None));
    let out = tick(&mut h, 2);
    let again = to_server(&out, SERVER).into_iter().find(|m| m.starts_with("INVITE ")).unwrap_or_else(|| panic!("retried re-INVITE: {out:?}"));
    assert_ne!(header(&again, "CSeq"), header(&ours, "CSeq"));
    assert_eq!(h.cc.active_calls(), 1);
}

#[test]
fn too_small_intervals_get_422_with_min_se() {
    let mut h = Harness::new();
    let out = h.upstream(SERVER, &server_invite_with("5001", "Session-Expires: 30\r\n"));
    let r = to_server(&out, SERVER).into_iter().find(|m| m.starts_with("SIP/2.0 422")).unwrap_or_else(|| panic!("422: {out:?}"));
    assert_eq!(header(&r, "Min-SE"), "90");
    assert!(to_agent(&out).is_empty(), "the agent is not rung");
    assert_eq!(h.cc.active_calls(), 0);
}

#[test]
fn outbound_asks_for_a_timer_and_raises_it_after_422() {
    let mut h = Harness::new();
    let out = h.agent(&agent_invite("1234", &sdp("browser")));
    let invite = to_server(&out, SERVER).into_iter().find(|m| m.starts_with("INVITE ")).unwrap();
    assert_eq!(header(&invite, "Session-Expires"), "1800");
    assert!(header(&invite, "Supported").contains("timer"));
    let too_small = server_response(&invite, 422, "Session Interval Too Small", None).replace("Content-Length: 0", "Min-SE: 3600\r\nContent-Length: 0");
    let out = h.upstream(SERVER, &too_small);
    let again = to_server(&out, SERVER).into_iter().find(|m| m.starts_with("INVITE ")).unwrap_or_else(|| panic!("INVITE again: {out:?}"));
    assert_eq!(header(&again, "Session-Expires"), "3600");
    assert!(to_agent(&out).iter().all(|m| !m.starts_with("SIP/2.0 422")), "the agent does not see the 422: {out:?}");

    // The server makes us the refresher in its 200.
    let ok = server_response(&again, 200, "OK", Some(&sdp("server"))).replacen("Content-Type", "Session-Expires: 3600;refresher=uac\r\nAllow: INVITE, ACK, BYE, UPDATE\r\nContent-Type", 1);
    let out = h.upstream(SERVER, &ok);
    let to_agent_ok = to_agent(&out).into_iter().find(|m| m.starts_with("SIP/2.0 200")).expect("200 to the agent");
    h.agent(&agent_ack(&to_agent_ok, "1234"));
    assert!(tick(&mut h, 1799).iter().all(|(_, m)| !m.starts_with("UPDATE")));
    let out = tick(&mut h, 1);
    assert!(to_server(&out, SERVER).iter().any(|m| m.starts_with("UPDATE ")), "{out:?}");
}

#[test]
fn the_agents_bare_update_refresh_gets_a_bodyless_200() {
    let mut h = Harness::new();
    // JsSIP's INVITE: Session-Expires without a refresher, timer supported.
    let invite = agent_invite("600", &sdp("browser")).replace("X-Genesys-Data: keep\r\n", "Supported: timer, ice, replaces, outbound\r\nSession-Expires: 90\r\n");
    let out = h.agent(&invite);
    let ok = to_agent(&out).into_iter().find(|m| m.starts_with("SIP/2.0 200")).unwrap();
    assert_eq!(header(&ok, "Session-Expires"), "90;refresher=uac", "the softphone refreshes");
    let tag = header(&ok, "To").split("tag=").nth(1).unwrap().to_owned();
    h.agent(&agent_ack(&ok, "600"));
    let update = format!("UPDATE sip:gatewayd@gw.lab;transport=ws SIP/2.0\r\nVia: SIP/2.0/WSS b.invalid;branch=z9hG4bKu1\r\nMax-Forwards: 70\r\nFrom: <sip:5001@lab>;tag=ag1\r\nTo: <sip:600@lab>;tag={tag}\r\nCall-ID: agentcall\r\nCSeq: 3 UPDATE\r\nContact: <sip:abc@xyz.invalid;transport=ws>\r\nSession-Expires: 90;refresher=uac\r\nSupported: timer\r\nContent-Length: 0\r\n\r\n");
    let out = h.agent(&update);
    let r = to_agent(&out).into_iter().find(|m| m.starts_with("SIP/2.0 200")).unwrap_or_else(|| panic!("{out:?}"));
    assert_eq!(header(&r, "Content-Length"), "0");
    assert_eq!(header(&r, "Session-Expires"), "90;refresher=uac");
    // No refresh for 60 s after the last one ends the echo call.
    assert!(tick(&mut h, 59).is_empty());
    assert!(tick(&mut h, 1).iter().any(|(_, m)| m == "ENDED Echo 480 session timer expired"));
}

#[test]
fn the_same_invite_arriving_twice_on_another_branch_gets_482() {
    let mut h = Harness::new();
    let first = server_invite("5001", Some(&sdp("server-offer")));
    let out = h.upstream(SERVER, &first);
    assert!(to_agent(&out).iter().any(|m| m.starts_with("INVITE")));
    let again = first.replace("branch=z9hG4bKs1", "branch=z9hG4bKs2");
    let out = h.upstream(SERVER, &again);
    assert!(to_server(&out, SERVER).iter().any(|m| m.starts_with("SIP/2.0 482")), "{out:?}");
    assert!(to_agent(&out).is_empty(), "the agent is not rung twice: {out:?}");
    assert_eq!(h.cc.active_calls(), 1);
    // A retransmission (same branch) is absorbed by its transaction, not refused.
    let out = h.upstream(SERVER, &first);
    assert!(to_server(&out, SERVER).iter().all(|m| !m.starts_with("SIP/2.0 482")), "{out:?}");
}

#[test]
fn in_dialog_requests_follow_the_servers_contact_only_to_upstream_servers() {
    for (contact, expected) in [(SERVER2, SERVER2), ("10.9.9.9:5060", SERVER)] {
        let mut h = Harness::new();
        let invite = server_invite("5001", Some(&sdp("server-offer"))).replace(&format!("<sip:sipp@{SERVER}>"), &format!("<sip:sipp@{contact}>"));
        let out = h.upstream(SERVER, &invite);
        let to_agent_invite = to_agent(&out).into_iter().find(|m| m.starts_with("INVITE")).unwrap();
        let out = h.agent(&agent_ok(&to_agent_invite, &sdp("agent-answer")));
        let ok = to_server(&out, SERVER).into_iter().find(|m| m.starts_with("SIP/2.0 200")).unwrap();
        h.upstream(SERVER, &server_in_dialog(&ok, "ACK", 1, "", None));
        // The agent hangs up: our BYE toward the server.
        let agent_tag = "agtag";
        let our_tag = header(&to_agent_invite, "From").split("tag=").nth(1).unwrap().to_owned();
        let call_id = header(&to_agent_invite, "Call-ID");
        let bye = format!("BYE sip:gatewayd@gw.lab;transport=ws SIP/2.0\r\nVia: SIP/2.0/WSS b.invalid;branch=z9hG4bKbye\r\nMax-Forwards: 70\r\nFrom: <sip:5001@lab>;tag={agent_tag}\r\nTo: <sip:x@lab>;tag={our_tag}\r\nCall-ID: {call_id}\r\nCSeq: 9 BYE\r\nContent-Length: 0\r\n\r\n");
        let out = h.agent(&bye);
        assert!(to_server(&out, expected).iter().any(|m| m.starts_with("BYE ")), "BYE to {expected} for Contact {contact}: {out:?}");
    }
}

#[test]
fn compact_session_expires_and_supported_are_understood() {
    let mut h = Harness::new();
    let ok = answered_inbound(&mut h, "k: timer\r\nx: 90\r\n");
    assert_eq!(header(&ok, "Session-Expires"), "90;refresher=uac", "{ok}");
    assert_eq!(header(&ok, "Require"), "timer");
}
