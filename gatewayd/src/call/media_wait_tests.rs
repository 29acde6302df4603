//! Calls waiting on media replies: SIP goes on meanwhile (other calls, OPTIONS, retransmissions,
//! CANCEL and BYE), late replies are dropped, and a reply that never comes fails the operation.

use std::time::Duration;

use super::*;

const CANCEL_FROM_SERVER: &str = "CANCEL sip:5001@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKs1\r\nMax-Forwards: 70\r\nFrom: \"Customer\" <sip:+15551234@genesys>;tag=s1\r\nTo: <sip:5001@lab>\r\nCall-ID: servercall\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n";

fn options(dn: &str, branch: &str) -> String {
    format!("OPTIONS sip:{dn}@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK{branch}\r\nMax-Forwards: 70\r\nFrom: <sip:genesys@genesys>;tag=o\r\nTo: <sip:{dn}@lab>\r\nCall-ID: opt{branch}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")
}

impl Harness {
    /// Gives call control the replies held so far.
    fn release_media(&mut self) -> Vec<(Destination, String)> {
        self.hold_media.clear();
        for reply in std::mem::take(&mut self.held) {
            self.cc.media_reply(reply, self.now, 2500, &mut self.rng);
        }
        self.outputs()
    }
}

#[test]
fn cancel_while_the_media_answer_is_pending_ends_the_call_and_the_late_reply_is_dropped() {
    let mut h = Harness::new();
    h.hold_media.insert(CallRef(1));
    let out = h.upstream(SERVER, &server_invite("5001", Some(&sdp("server-offer"))));
    assert!(to_server(&out, SERVER).iter().any(|m| m.starts_with("SIP/2.0 100")), "{out:?}");
    assert!(to_agent(&out).is_empty(), "the agent is rung only once media is there: {out:?}");
    assert_eq!(h.held.len(), 1);

    let out = h.upstream(SERVER, CANCEL_FROM_SERVER);
    let up = to_server(&out, SERVER);
    assert!(up.iter().any(|m| m.starts_with("SIP/2.0 200") && m.contains("CANCEL")), "{out:?}");
    assert!(up.iter().any(|m| m.starts_with("SIP/2.0 487")), "{out:?}");
    assert!(out.iter().any(|(_, m)| m == "ENDED Inbound 487 cancelled before answer"), "{out:?}");
    assert_eq!(h.media.closed, vec![CallRef(1)], "the call's Close follows the operation it waited on");

    let out = h.release_media();
    assert!(out.is_empty(), "a reply for a call that ended sends nothing: {out:?}");
    assert_eq!(h.cc.active_calls(), 0);
}

#[test]
fn other_calls_and_options_are_answered_while_one_call_waits_on_media() {
    let mut h = Harness::new();
    h.hold_media.insert(CallRef(1));
    let out = h.agent(&agent_invite("600", &sdp("browser")));
    assert!(to_agent(&out).iter().all(|m| !m.starts_with("SIP/2.0 200")), "{out:?}");

    // The SIP server's OPTIONS and a second agent's call go through at once.
    let out = h.upstream(SERVER, &options("5001", "w1"));
    assert!(to_server(&out, SERVER).iter().any(|m| m.starts_with("SIP/2.0 200")), "{out:?}");
    h.cc.set_binding("5002", Some((ConnId(8), "<sip:def@xyz.invalid;transport=ws>".into())));
    let out = h.upstream(SERVER, &server_invite("5002", Some(&sdp("server-offer"))));
    let invite = out.iter().find(|(d, m)| *d == Destination::Conn(ConnId(8)) && m.starts_with("INVITE")).map(|(_, m)| m.clone());
    assert!(invite.is_some_and(|m| m.contains("s=browser-offer")), "the second call rings its agent: {out:?}");

    // A retransmission of the waiting INVITE starts nothing new.
    let out = h.agent(&agent_invite("600", &sdp("browser")));
    assert!(to_agent(&out).iter().all(|m| !m.starts_with("SIP/2.0 200")), "{out:?}");
    assert_eq!(h.held.len(), 1, "one media operation for the waiting call");
    assert_eq!(h.cc.active_calls(), 2);

    let out = h.release_media();
    let ok = to_agent(&out).into_iter().find(|m| m.starts_with("SIP/2.0 200")).unwrap_or_else(|| panic!("the echo answers once media has: {out:?}"));
    assert!(ok.contains("s=echo-answer"));
}

#[test]
fn media_that_never_answers_fails_the_setup_with_503() {
    let mut h = Harness::new();
    h.hold_media.insert(CallRef(1));
    let out = h.agent(&agent_invite("1234", &sdp("browser")));
    assert!(to_server(&out, SERVER).is_empty(), "no INVITE upstream before media is there: {out:?}");
    assert!(h.cc.poll_timeout().is_some_and(|t| t <= h.now + super::super::awaiting::MEDIA_REPLY_TIMEOUT));
    let out = h.wait(Duration::from_millis(2_900));
    assert!(to_agent(&out).iter().all(|m| !m.starts_with("SIP/2.0 5")), "{out:?}");
    let out = h.wait(Duration::from_millis(100));
    assert!(to_agent(&out).iter().any(|m| m.starts_with("SIP/2.0 503 Media Not Answering")), "{out:?}");
    assert!(out.iter().any(|(_, m)| m == "ENDED Outbound 503 Media Not Answering"), "{out:?}");
    let out = h.release_media();
    assert!(to_server(&out, SERVER).is_empty() && to_agent(&out).is_empty(), "the late reply is dropped: {out:?}");
}

#[test]
fn the_agents_cancel_while_media_is_set_up_gets_487_and_nothing_goes_upstream() {
    let mut h = Harness::new();
    h.hold_media.insert(CallRef(1));
    h.agent(&agent_invite("1234", &sdp("browser")));
    let cancel = "CANCEL sip:1234@lab SIP/2.0\r\nVia: SIP/2.0/WSS b.invalid;branch=z9hG4bKa1\r\nMax-Forwards: 70\r\nFrom: <sip:5001@lab>;tag=ag1\r\nTo: <sip:1234@lab>\r\nCall-ID: agentcall\r\nCSeq: 2 CANCEL\r\nContent-Length: 0\r\n\r\n";
    let out = h.agent(cancel);
    assert!(to_agent(&out).iter().any(|m| m.starts_with("SIP/2.0 487")), "{out:?}");
    assert!(out.iter().any(|(_, m)| m.starts_with("ENDED Outbound 487")), "{out:?}");
    let out = h.release_media();
    assert!(to_server(&out, SERVER).is_empty(), "{out:?}");
}

#[test]
fn a_reoffer_waits_for_its_answer_a_second_gets_500_and_bye_ends_the_wait_with_487() {
    let mut h = Harness::new();
    let to_tag = h.inbound_call_answered();
    let in_dialog = |method: &str, cseq: u32, body: Option<&str>| {
        let body = body.map_or("Content-Length: 0\r\n\r\n".to_owned(), |b| format!("Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{b}", b.len()));
        format!("{method} sip:5001@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKrw{cseq}\r\nMax-Forwards: 70\r\nFrom: \"Customer\" <sip:+15551234@genesys>;tag=s1\r\nTo: <sip:5001@lab>;tag={to_tag}\r\nCall-ID: servercall\r\nCSeq: {cseq} {method}\r\nContact: <sip:sipp@127.0.0.1:5080>\r\n{body}")
    };
    h.hold_media.insert(CallRef(1));
    let out = h.upstream(SERVER, &in_dialog("INVITE", 2, Some(&sdp("server-hold"))));
    assert!(to_server(&out, SERVER).iter().all(|m| !m.starts_with("SIP/2.0 200")), "{out:?}");
    let out = h.upstream(SERVER, &in_dialog("UPDATE", 3, Some(&sdp("server-again"))));
    let busy = to_server(&out, SERVER).into_iter().find(|m| header(m, "CSeq") == "3 UPDATE").unwrap_or_else(|| panic!("{out:?}"));
    assert!(busy.starts_with("SIP/2.0 500") && !header(&busy, "Retry-After").is_empty(), "{busy}");

    let out = h.upstream(SERVER, &in_dialog("BYE", 4, None));
    let up = to_server(&out, SERVER);
    assert!(up.iter().any(|m| m.starts_with("SIP/2.0 200") && header(m, "CSeq") == "4 BYE"), "{out:?}");
    assert!(up.iter().any(|m| m.starts_with("SIP/2.0 487") && header(m, "CSeq") == "2 INVITE"), "the waiting re-INVITE is ended: {out:?}");
    assert!(h.release_media().is_empty());
}

#[test]
fn a_reoffer_answer_that_arrives_is_sent_in_the_200() {
    let mut h = Harness::new();
    let out = h.agent(&agent_invite("600", &sdp("browser")));
    let ok = to_agent(&out).into_iter().find(|m| m.starts_with("SIP/2.0 200")).unwrap();
    let tag = header(&ok, "To").split("tag=").nth(1).unwrap().to_owned();
    h.hold_media.insert(CallRef(1));
    let body = sdp("browser-restart");
    let reinvite = format!("INVITE sip:gatewayd@gw.lab;transport=ws SIP/2.0\r\nVia: SIP/2.0/WSS b.invalid;branch=z9hG4bKre9\r\nMax-Forwards: 70\r\nFrom: <sip:5001@lab>;tag=ag1\r\nTo: <sip:600@lab>;tag={tag}\r\nCall-ID: agentcall\r\nCSeq: 5 INVITE\r\nContact: <sip:abc@xyz.invalid;transport=ws>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    let out = h.agent(&reinvite);
    assert!(to_agent(&out).iter().all(|m| !m.starts_with("SIP/2.0 200")), "{out:?}");
    let out = h.release_media();
    let answer = to_agent(&out).into_iter().find(|m| m.starts_with("SIP/2.0 200") && header(m, "CSeq") == "5 INVITE").unwrap_or_else(|| panic!("{out:?}"));
    assert!(answer.contains("s=echo-answer"));
}

#[test]
fn session_deadlines_follow_the_calls_and_go_with_them() {
    let mut h = Harness::new();
    let out = h.upstream(SERVER, &server_invite("5001", Some(&sdp("server-offer"))).replacen("Call-Info:", "Supported: timer\r\nSession-Expires: 90;refresher=uac\r\nCall-Info:", 1));
    let invite = to_agent(&out).into_iter().find(|m| m.starts_with("INVITE")).unwrap();
    h.agent(&agent_ok(&invite, &sdp("agent-answer")));
    assert_eq!(h.cc.timers.len(), 1, "one leg with a timer");
    assert_eq!(h.cc.timers.get(&super::super::control::CallTimer::Session(CallRef(1), super::super::control::Side::Upstream)), Some(h.now + Duration::from_secs(60)));
    assert!(h.cc.poll_timeout().is_some_and(|t| t <= h.now + Duration::from_secs(60)));
    h.upstream(SERVER, CANCEL_FROM_SERVER);
    let bye = format!("BYE sip:gatewayd@gw.lab;transport=ws SIP/2.0\r\nVia: SIP/2.0/WSS b.invalid;branch=z9hG4bKbz\r\nMax-Forwards: 70\r\nFrom: <sip:5001@lab>;tag=agtag\r\nTo: <sip:5001@lab>;tag={}\r\nCall-ID: {}\r\nCSeq: 9 BYE\r\nContent-Length: 0\r\n\r\n", header(&invite, "From").split("tag=").nth(1).unwrap(), header(&invite, "Call-ID"));
    let out = h.agent(&bye);
    assert!(out.iter().any(|(_, m)| m.starts_with("ENDED Inbound")), "{out:?}");
    assert_eq!(h.cc.timers.len(), 0, "nothing left to wake up for");
}
