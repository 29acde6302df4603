//! Call flows through the B2BUA core with a scripted media: what goes out on each side. Media
//! commands are carried out in place and their replies fed back at once, unless the test holds
//! them (`hold_media`) to see what the call does while it waits.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::SeedableRng;

use super::control::{CallConfig, CallControl, CallOutput, Direction};
use super::media_port::{run_in_place, CallRef, MediaControl, MediaFailure, MediaReply};
use super::upstream::Upstreams;
use crate::profile::{AutoAnswer, Duration, Health, Outbound, RegistrationMode, Transport as ProfileTransport, Upstream, UpstreamServer};
use crate::sip::registrar::ConnId;
use crate::sip::transaction::{Destination, Transport};

#[derive(Default)]
struct FakeMedia {
    log: Vec<String>,
    closed: Vec<CallRef>,
}

impl MediaControl for FakeMedia {
    fn echo(&mut self, call: CallRef, _offer: &str) -> Result<String, MediaFailure> {
        self.log.push(format!("echo {}", call.0));
        Ok(sdp("echo-answer"))
    }
    fn open(&mut self, call: CallRef) -> Result<(), MediaFailure> {
        self.log.push(format!("open {}", call.0));
        Ok(())
    }
    fn browser_offer(&mut self, _: CallRef) -> Result<String, MediaFailure> {
        Ok(sdp("browser-offer"))
    }
    fn browser_answer(&mut self, _: CallRef, _: &str) -> Result<String, MediaFailure> {
        Ok(sdp("browser-answer"))
    }
    fn browser_accept(&mut self, _: CallRef, _: &str) -> Result<(), MediaFailure> {
        self.log.push("browser-accept".into());
        Ok(())
    }
    fn internal_offer(&mut self, _: CallRef) -> Result<String, MediaFailure> {
        Ok(sdp("internal-offer"))
    }
    fn internal_answer(&mut self, _: CallRef, _: &str) -> Result<String, MediaFailure> {
        Ok(sdp("internal-answer"))
    }
    fn internal_accept(&mut self, _: CallRef, _: &str) -> Result<(), MediaFailure> {
        self.log.push("internal-accept".into());
        Ok(())
    }
    fn close(&mut self, call: CallRef) -> Option<serde_json::Value> {
        self.closed.push(call);
        Some(serde_json::json!({"mos": 4.3}))
    }
}

fn sdp(name: &str) -> String {
    format!("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns={name}\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n")
}

const SERVER: &str = "127.0.0.1:5080";
const SERVER2: &str = "127.0.0.1:5082";
const CONN: ConnId = ConnId(7);

struct Harness {
    cc: CallControl,
    media: FakeMedia,
    rng: StdRng,
    now: Instant,
    /// The calls whose media replies are kept in `held` instead of going back to call control.
    hold_media: std::collections::HashSet<CallRef>,
    held: Vec<MediaReply>,
}

impl Harness {
    fn new() -> Self {
        let upstream = Upstream {
            servers: [SERVER, SERVER2]
                .iter()
                .enumerate()
                .map(|(i, a)| UpstreamServer { address: a.parse().unwrap(), transport: ProfileTransport::Udp, priority: i as u16 + 1, weight: 1 })
                .collect(),
            registration: RegistrationMode::None,
            register_expires: Duration::secs(3600),
            session_expires: Duration::secs(1800),
            reply_timeout: Duration::secs(2),
            auth_realm: None,
            health: Health { interval: Duration::secs(3600), failures: 3 },
            outbound: Outbound::default(),
        };
        let config = CallConfig {
            domain: "lab".into(),
            echo_number: Some("600".into()),
            internal_sent_by: "127.0.0.1:5060".into(),
            agent_host: "gw.lab".into(),
            outbound_patterns: vec![regex::Regex::new("^(?:[0-9]{4})$").unwrap()],
            agent_destinations: HashMap::new(),
            auto_answer: HashMap::from([("5001".to_owned(), AutoAnswer::OnRequest)]),
            max_calls: 10,
            token: None,
            registration: None,
            session_expires: 1800,
            record_headers: vec!["X-Genesys-CallUUID".into()],
            reply_timeout: std::time::Duration::from_secs(2),
        };
        let mut cc = CallControl::new(config, Upstreams::from_profile(&upstream));
        cc.set_binding("5001", Some((CONN, "<sip:abc@xyz.invalid;transport=ws>".into())));
        Harness { cc, media: FakeMedia::default(), rng: StdRng::seed_from_u64(1), now: Instant::now(), hold_media: Default::default(), held: Vec::new() }
    }

    fn agent(&mut self, text: &str) -> Vec<(Destination, String)> {
        let msg = crate::sip::message::parse(text.as_bytes()).expect("test message parses");
        self.cc.from_agent(CONN, Some("5001".into()), msg, self.now, 1000, &mut self.rng);
        self.outputs()
    }

    fn upstream(&mut self, from: &str, text: &str) -> Vec<(Destination, String)> {
        let msg = crate::sip::message::parse(text.as_bytes()).expect("test message parses");
        self.cc.from_upstream(msg, from.parse().unwrap(), Transport::Udp, self.now, 2000, &mut self.rng);
        self.outputs()
    }

    fn outputs(&mut self) -> Vec<(Destination, String)> {
        let mut v = Vec::new();
        while let Some(o) = self.cc.poll_output() {
            match o {
                CallOutput::Send { target, message } => v.push((target.destination, message.to_string())),
                CallOutput::Media(command) => {
                    let reply = run_in_place(&mut self.media, &command);
                    if self.hold_media.contains(&command.call) {
                        self.held.push(reply);
                    } else {
                        self.cc.media_reply(reply, self.now, 2500, &mut self.rng);
                    }
                }
                CallOutput::Ended(r) => v.push((Destination::Conn(ConnId(0)), format!("ENDED {:?} {} {}", r.summary.direction, r.status, r.cause))),
            }
        }
        v
    }
}

fn agent_invite(to: &str, body: &str) -> String {
    format!(
        "INVITE sip:{to}@lab SIP/2.0\r\nVia: SIP/2.0/WSS b.invalid;branch=z9hG4bKa1\r\nMax-Forwards: 70\r\nFrom: <sip:5001@lab>;tag=ag1\r\nTo: <sip:{to}@lab>\r\nCall-ID: agentcall\r\nCSeq: 2 INVITE\r\nContact: <sip:abc@xyz.invalid;transport=ws>\r\nX-Genesys-Data: keep\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn header(msg: &str, name: &str) -> String {
    msg.lines().find(|l| l.to_ascii_lowercase().starts_with(&format!("{}:", name.to_ascii_lowercase()))).map(|l| l.split_once(':').unwrap().1.trim().to_owned()).unwrap_or_default()
}

fn to_server(out: &[(Destination, String)], server: &str) -> Vec<String> {
    let addr: SocketAddr = server.parse().unwrap();
    out.iter().filter(|(d, _)| *d == Destination::Addr(addr)).map(|(_, m)| m.clone()).collect()
}

fn to_agent(out: &[(Destination, String)]) -> Vec<String> {
    out.iter().filter(|(d, _)| *d == Destination::Conn(CONN)).map(|(_, m)| m.clone()).collect()
}

/// A response from the SIP server to the INVITE we sent it.
fn server_response(invite: &str, code: u16, reason: &str, body: Option<&str>) -> String {
    let mut r = format!("SIP/2.0 {code} {reason}\r\n");
    for name in ["Via", "From", "Call-ID", "CSeq"] {
        r.push_str(&format!("{name}: {}\r\n", header(invite, name)));
    }
    r.push_str(&format!("To: {};tag=srv1\r\nContact: <sip:1234@{SERVER}>\r\n", header(invite, "To")));
    match body {
        Some(b) => r.push_str(&format!("Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{b}", b.len())),
        None => r.push_str("Content-Length: 0\r\n\r\n"),
    }
    r
}

#[test]
fn echo_number_is_answered_by_the_gateway_and_bye_ends_it() {
    let mut h = Harness::new();
    let out = h.agent(&agent_invite("600", &sdp("browser")));
    let to_agent_msgs = to_agent(&out);
    assert!(to_agent_msgs.iter().any(|m| m.starts_with("SIP/2.0 100")), "{out:?}");
    let ok = to_agent_msgs.iter().find(|m| m.starts_with("SIP/2.0 200")).expect("200 OK");
    assert!(ok.contains("s=echo-answer"));
    assert!(header(ok, "Contact").contains("gw.lab"));
    let tag = header(ok, "To").split("tag=").nth(1).unwrap().to_owned();

    let bye = format!("BYE sip:gatewayd@gw.lab;transport=ws SIP/2.0\r\nVia: SIP/2.0/WSS b.invalid;branch=z9hG4bKb1\r\nMax-Forwards: 70\r\nFrom: <sip:5001@lab>;tag=ag1\r\nTo: <sip:600@lab>;tag={tag}\r\nCall-ID: agentcall\r\nCSeq: 3 BYE\r\nContent-Length: 0\r\n\r\n");
    let out = h.agent(&bye);
    assert!(to_agent(&out).iter().any(|m| m.starts_with("SIP/2.0 200") && m.contains("BYE")), "{out:?}");
    assert!(out.iter().any(|(_, m)| m == "ENDED Echo 200 agent hung up"), "{out:?}");
    assert_eq!(h.media.closed.len(), 1);
    assert!(h.cc.by_dialog.is_empty());
    assert_eq!(h.cc.active_calls(), 0);
}

#[test]
fn outbound_call_is_bridged_through_the_sip_server() {
    let mut h = Harness::new();
    let out = h.agent(&agent_invite("1234", &sdp("browser")));
    let invite = to_server(&out, SERVER).into_iter().find(|m| m.starts_with("INVITE sip:1234@127.0.0.1:5080")).expect("INVITE upstream");
    assert!(invite.contains("s=internal-offer"), "the SIP server gets the plain RTP offer");
    assert_eq!(header(&invite, "X-Genesys-Data"), "keep");
    assert!(header(&invite, "Via").starts_with("SIP/2.0/UDP 127.0.0.1:5060"));
    assert_eq!(header(&invite, "Max-Forwards"), "69");

    let out = h.upstream(SERVER, &server_response(&invite, 180, "Ringing", None));
    assert!(to_agent(&out).iter().any(|m| m.starts_with("SIP/2.0 180")), "{out:?}");

    let out = h.upstream(SERVER, &server_response(&invite, 200, "OK", Some(&sdp("server"))));
    assert!(to_server(&out, SERVER).iter().any(|m| m.starts_with("ACK sip:1234@127.0.0.1:5080")), "{out:?}");
    let ok = to_agent(&out).into_iter().find(|m| m.starts_with("SIP/2.0 200")).expect("200 to the agent");
    assert!(ok.contains("s=browser-answer"));
    assert!(h.media.log.contains(&"internal-accept".to_owned()));

    let tag = header(&ok, "To").split("tag=").nth(1).unwrap().to_owned();
    let bye = format!("BYE sip:gatewayd@gw.lab;transport=ws SIP/2.0\r\nVia: SIP/2.0/WSS b.invalid;branch=z9hG4bKb2\r\nMax-Forwards: 70\r\nFrom: <sip:5001@lab>;tag=ag1\r\nTo: <sip:1234@lab>;tag={tag}\r\nCall-ID: agentcall\r\nCSeq: 3 BYE\r\nContent-Length: 0\r\n\r\n");
    let out = h.agent(&bye);
    assert!(to_server(&out, SERVER).iter().any(|m| m.starts_with("BYE sip:1234@127.0.0.1:5080")), "{out:?}");
    assert!(out.iter().any(|(_, m)| m.starts_with("ENDED Outbound 200")));
}

#[test]
fn outbound_call_fails_over_when_the_first_server_is_unavailable() {
    let mut h = Harness::new();
    let out = h.agent(&agent_invite("1234", &sdp("browser")));
    let invite = to_server(&out, SERVER).into_iter().find(|m| m.starts_with("INVITE")).unwrap();
    let out = h.upstream(SERVER, &server_response(&invite, 503, "Service Unavailable", None));
    assert!(to_server(&out, SERVER2).iter().any(|m| m.starts_with("INVITE sip:1234@127.0.0.1:5082")), "{out:?}");
    assert!(!to_agent(&out).iter().any(|m| m.starts_with("SIP/2.0 503")), "the agent never sees the first failure");
    // The second server refuses: the call ends and neither leg's dialog key is left behind.
    let second = to_server(&out, SERVER2).into_iter().find(|m| m.starts_with("INVITE")).unwrap();
    let out = h.upstream(SERVER2, &server_response(&second, 486, "Busy Here", None));
    assert!(out.iter().any(|(_, m)| m.starts_with("ENDED Outbound 486")), "{out:?}");
    assert!(h.cc.by_dialog.is_empty(), "{:?}", h.cc.by_dialog);
}

impl Harness {
    /// The server's INVITE for 5001 answered by the agent: the call is up. Returns the To tag
    /// the server sees, for requests inside the dialog.
    fn inbound_call_answered(&mut self) -> String {
        let out = self.upstream(SERVER, &server_invite("5001", Some(&sdp("server-offer"))));
        let invite = to_agent(&out).into_iter().find(|m| m.starts_with("INVITE")).unwrap();
        let out = self.agent(&agent_ok(&invite, &sdp("agent-answer")));
        let ok = to_server(&out, SERVER).into_iter().find(|m| m.starts_with("SIP/2.0 200")).unwrap();
        header(&ok, "To").split("tag=").nth(1).unwrap().to_owned()
    }

    /// Lets `by` pass and runs what falls due.
    fn wait(&mut self, by: std::time::Duration) -> Vec<(Destination, String)> {
        self.now += by;
        self.cc.handle_timeout(self.now, 3000, &mut self.rng);
        self.outputs()
    }
}

#[test]
fn a_server_that_never_answers_is_left_after_the_reply_timeout_and_the_agent_gets_503() {
    let mut h = Harness::new();
    let out = h.agent(&agent_invite("1234", &sdp("browser")));
    assert!(to_server(&out, SERVER).iter().any(|m| m.starts_with("INVITE")));
    // Retransmissions only, until two seconds pass without a word from the first server.
    let out = h.wait(std::time::Duration::from_millis(1_900));
    assert!(!to_server(&out, SERVER2).iter().any(|m| m.starts_with("INVITE")), "{out:?}");
    let out = h.wait(std::time::Duration::from_millis(200));
    assert!(to_server(&out, SERVER2).iter().any(|m| m.starts_with("INVITE sip:1234@127.0.0.1:5082")), "the second server is tried: {out:?}");
    // The second is silent too: the agent hears 503 about four seconds after dialling.
    let out = h.wait(std::time::Duration::from_millis(2_100));
    assert!(to_agent(&out).iter().any(|m| m.starts_with("SIP/2.0 503 SIP Server Not Answering")), "{out:?}");
    assert!(out.iter().any(|(_, m)| m.starts_with("ENDED Outbound 503")), "{out:?}");
}

#[test]
fn a_provisional_answer_stops_the_reply_timeout() {
    let mut h = Harness::new();
    let out = h.agent(&agent_invite("1234", &sdp("browser")));
    let invite = to_server(&out, SERVER).into_iter().find(|m| m.starts_with("INVITE")).unwrap();
    h.upstream(SERVER, &server_response(&invite, 100, "Trying", None));
    let out = h.wait(std::time::Duration::from_secs(10));
    let failed_over = to_server(&out, SERVER2).iter().any(|m| m.starts_with("INVITE"));
    assert!(!failed_over && !to_agent(&out).iter().any(|m| m.starts_with("SIP/2.0 5")), "a server that said Trying is given its time: {out:?}");
}

#[test]
fn destinations_outside_the_patterns_are_refused() {
    let mut h = Harness::new();
    let out = h.agent(&agent_invite("99999999", &sdp("browser")));
    assert!(to_agent(&out).iter().any(|m| m.starts_with("SIP/2.0 403")), "{out:?}");
    assert!(to_server(&out, SERVER).is_empty());
}

fn server_invite(dn: &str, body: Option<&str>) -> String {
    let ct = match body {
        Some(b) => format!("Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{b}", b.len()),
        None => "Content-Length: 0\r\n\r\n".to_owned(),
    };
    format!(
        "INVITE sip:{dn}@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKs1\r\nMax-Forwards: 70\r\nFrom: \"Customer\" <sip:+15551234@genesys>;tag=s1\r\nTo: <sip:{dn}@lab>\r\nCall-ID: servercall\r\nCSeq: 1 INVITE\r\nContact: <sip:sipp@{SERVER}>\r\nCall-Info: <sip:genesys>;answer-after=0\r\n{ct}"
    )
}

#[test]
fn inbound_call_rings_the_agent_and_the_answer_goes_back_to_the_server() {
    let mut h = Harness::new();
    let out = h.upstream(SERVER, &server_invite("5001", Some(&sdp("server-offer"))));
    assert!(to_server(&out, SERVER).iter().any(|m| m.starts_with("SIP/2.0 100")));
    let invite = to_agent(&out).into_iter().find(|m| m.starts_with("INVITE sip:abc@xyz.invalid")).unwrap_or_else(|| panic!("INVITE to the agent: {out:?}"));
    assert!(invite.contains("s=browser-offer"));
    assert!(header(&invite, "From").contains("Customer"));
    assert!(header(&invite, "Call-Info").contains("answer-after=0"), "auto-answer hint passes on request");

    let answer = sdp("agent-answer");
    let mut ok = String::from("SIP/2.0 200 OK\r\n");
    for name in ["Via", "From", "Call-ID", "CSeq"] {
        ok.push_str(&format!("{name}: {}\r\n", header(&invite, name)));
    }
    ok.push_str(&format!("To: {};tag=agtag\r\nContact: <sip:abc@xyz.invalid;transport=ws>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{answer}", header(&invite, "To"), answer.len()));
    let out = h.agent(&ok);
    assert!(to_agent(&out).iter().any(|m| m.starts_with("ACK sip:abc@xyz.invalid")), "{out:?}");
    let ok_up = to_server(&out, SERVER).into_iter().find(|m| m.starts_with("SIP/2.0 200")).expect("200 to the server");
    assert!(ok_up.contains("s=internal-answer"));
    assert!(h.media.log.contains(&"browser-accept".to_owned()));
}

#[test]
fn inbound_call_to_an_unregistered_dn_gets_480_and_options_reflect_registration() {
    let mut h = Harness::new();
    let out = h.upstream(SERVER, &server_invite("5002", Some(&sdp("server-offer"))));
    assert!(to_server(&out, SERVER).iter().any(|m| m.starts_with("SIP/2.0 480")), "{out:?}");

    let options = |dn: &str, branch: &str| format!("OPTIONS sip:{dn}@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK{branch}\r\nMax-Forwards: 70\r\nFrom: <sip:genesys@genesys>;tag=o\r\nTo: <sip:{dn}@lab>\r\nCall-ID: opt{branch}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n");
    let out = h.upstream(SERVER, &options("5001", "o1"));
    assert!(to_server(&out, SERVER).iter().any(|m| m.starts_with("SIP/2.0 200")), "{out:?}");
    let out = h.upstream(SERVER, &options("5002", "o2"));
    assert!(to_server(&out, SERVER).iter().any(|m| m.starts_with("SIP/2.0 480")), "{out:?}");
}

#[test]
fn cancel_from_the_server_cancels_the_agent_leg() {
    let mut h = Harness::new();
    let out = h.upstream(SERVER, &server_invite("5001", Some(&sdp("server-offer"))));
    let invite = to_agent(&out).into_iter().find(|m| m.starts_with("INVITE")).unwrap();
    let cancel = "CANCEL sip:5001@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKs1\r\nMax-Forwards: 70\r\nFrom: \"Customer\" <sip:+15551234@genesys>;tag=s1\r\nTo: <sip:5001@lab>\r\nCall-ID: servercall\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n";
    let out = h.upstream(SERVER, cancel);
    let up = to_server(&out, SERVER);
    assert!(up.iter().any(|m| m.starts_with("SIP/2.0 200") && m.contains("CANCEL")), "{out:?}");
    assert!(up.iter().any(|m| m.starts_with("SIP/2.0 487")), "{out:?}");
    assert!(to_agent(&out).iter().any(|m| m.starts_with("CANCEL") && m.contains(&header(&invite, "Call-ID"))), "{out:?}");
    assert!(out.iter().any(|(_, m)| m.starts_with("ENDED Inbound 487")));
    let _ = Direction::Inbound;
}

#[test]
fn outbound_calls_need_a_valid_token_when_a_secret_is_set() {
    let mut h = Harness::new();
    h.cc.config.token = Some(super::control::TokenPolicy { secret: b"crm".to_vec(), header: "X-Gatewayd-Token".into(), max_age_secs: 300 });
    let out = h.agent(&agent_invite("1234", &sdp("browser")));
    assert!(to_agent(&out).iter().any(|m| m.starts_with("SIP/2.0 403")), "no token: {out:?}");

    // wall clock in the harness is 1000 ms = 1 s.
    let token = super::token::sign(b"crm", "5001", "1234", 200);
    let invite = agent_invite("1234", &sdp("browser")).replace("X-Genesys-Data: keep\r\n", &format!("X-Gatewayd-Token: {token}\r\n"));
    let invite = invite.replace("branch=z9hG4bKa1", "branch=z9hG4bKa2").replace("CSeq: 2 INVITE", "CSeq: 3 INVITE");
    let out = h.agent(&invite);
    let upstream = to_server(&out, SERVER);
    assert!(upstream.iter().any(|m| m.starts_with("INVITE")), "valid token: {out:?}");
    assert!(!upstream.iter().any(|m| m.contains("X-Gatewayd-Token")), "the token stays at the gateway");
}

#[test]
fn register_mode_mirrors_agent_registrations_with_digest_and_deregisters() {
    use crate::sip::digest::ClientSecret;
    let mut h = Harness::new();
    h.cc.config.registration = Some(super::registration::RegistrationConfig {
        expires_secs: 600,
        secrets: HashMap::from([("5001".to_owned(), ClientSecret::Password("up5001".into()))]),
    });
    let now = h.now;
    h.cc.mirror_registration("5001", true, now, &mut h.rng);
    let out = h.outputs();
    let register = to_server(&out, SERVER).into_iter().find(|m| m.starts_with("REGISTER sip:127.0.0.1:5080")).expect("REGISTER upstream");
    assert_eq!(header(&register, "Contact"), "<sip:5001@127.0.0.1:5060>");
    assert_eq!(header(&register, "Expires"), "600");

    let mut challenge = String::from("SIP/2.0 401 Unauthorized\r\n");
    for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
        challenge.push_str(&format!("{name}: {}\r\n", header(&register, name)));
    }
    challenge.push_str("WWW-Authenticate: Digest realm=\"genesys\", nonce=\"abc123\", algorithm=MD5, qop=\"auth\"\r\nContent-Length: 0\r\n\r\n");
    let out = h.upstream(SERVER, &challenge);
    let again = to_server(&out, SERVER).into_iter().find(|m| m.starts_with("REGISTER")).expect("REGISTER with credentials");
    assert!(header(&again, "Authorization").contains("username=\"5001\""), "{again}");
    assert!(header(&again, "CSeq").starts_with("2 "));

    let mut ok = String::from("SIP/2.0 200 OK\r\n");
    for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
        ok.push_str(&format!("{name}: {}\r\n", header(&again, name)));
    }
    ok.push_str("Contact: <sip:5001@127.0.0.1:5060>;expires=300\r\nContent-Length: 0\r\n\r\n");
    h.upstream(SERVER, &ok);
    let refresh = h.cc.registrations.poll_timeout().expect("a refresh is scheduled");
    assert_eq!(refresh, now + std::time::Duration::from_secs(240), "refresh at 80% of the granted 300 s");

    h.cc.mirror_registration("5001", false, now, &mut h.rng);
    let out = h.outputs();
    let unregister = to_server(&out, SERVER).into_iter().find(|m| m.starts_with("REGISTER")).expect("de-REGISTER");
    assert_eq!(header(&unregister, "Expires"), "0");
}

/// The agent's 200 to the INVITE we sent it, with an answer.
fn agent_ok(invite: &str, answer: &str) -> String {
    let mut ok = String::from("SIP/2.0 200 OK\r\n");
    for name in ["Via", "From", "Call-ID", "CSeq"] {
        ok.push_str(&format!("{name}: {}\r\n", header(invite, name)));
    }
    ok.push_str(&format!("To: {};tag=agtag\r\nContact: <sip:abc@xyz.invalid;transport=ws>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{answer}", header(invite, "To"), answer.len()));
    ok
}

#[test]
fn late_offer_puts_our_offer_in_the_200_and_takes_the_answer_from_the_ack() {
    let mut h = Harness::new();
    let out = h.upstream(SERVER, &server_invite("5001", None));
    let invite = to_agent(&out).into_iter().find(|m| m.starts_with("INVITE")).expect("the agent is called even without an offer");
    assert!(invite.contains("s=browser-offer"));
    let out = h.agent(&agent_ok(&invite, &sdp("agent-answer")));
    let ok = to_server(&out, SERVER).into_iter().find(|m| m.starts_with("SIP/2.0 200")).expect("200 to the server");
    assert!(ok.contains("s=internal-offer"), "our 200 carries the offer: {ok}");
    let to_tag = header(&ok, "To").split("tag=").nth(1).unwrap().to_owned();
    let answer = sdp("server-answer");
    let ack = format!("ACK sip:5001@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKack1\r\nMax-Forwards: 70\r\nFrom: \"Customer\" <sip:+15551234@genesys>;tag=s1\r\nTo: <sip:5001@lab>;tag={to_tag}\r\nCall-ID: servercall\r\nCSeq: 1 ACK\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{answer}", answer.len());
    let before = h.media.log.iter().filter(|l| *l == "internal-accept").count();
    h.upstream(SERVER, &ack);
    let after = h.media.log.iter().filter(|l| *l == "internal-accept").count();
    assert_eq!(after, before + 1, "the answer in the ACK reaches media");
}

#[test]
fn a_reinvite_from_the_server_is_answered_without_touching_the_agent() {
    let mut h = Harness::new();
    let to_tag = h.inbound_call_answered();
    let hold = sdp("server-hold").replace("t=0 0\r\n", "t=0 0\r\na=sendonly\r\n");
    let reinvite = format!("INVITE sip:5001@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKre1\r\nMax-Forwards: 70\r\nFrom: \"Customer\" <sip:+15551234@genesys>;tag=s1\r\nTo: <sip:5001@lab>;tag={to_tag}\r\nCall-ID: servercall\r\nCSeq: 2 INVITE\r\nContact: <sip:sipp@127.0.0.1:5080>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{hold}", hold.len());
    let out = h.upstream(SERVER, &reinvite);
    let answer = to_server(&out, SERVER).into_iter().find(|m| m.starts_with("SIP/2.0 200") && m.contains("CSeq: 2 INVITE")).expect("200 to the re-INVITE");
    assert!(answer.contains("s=internal-answer"));
    assert!(to_agent(&out).is_empty(), "the browser leg is not disturbed: {out:?}");
}

#[test]
fn notify_talk_from_the_server_reaches_the_ringing_softphone() {
    let mut h = Harness::new();
    let out = h.upstream(SERVER, &server_invite("5001", Some(&sdp("server-offer"))));
    let invite = to_agent(&out).into_iter().find(|m| m.starts_with("INVITE")).unwrap();
    let mut ringing = String::from("SIP/2.0 180 Ringing\r\n");
    for name in ["Via", "From", "Call-ID", "CSeq"] {
        ringing.push_str(&format!("{name}: {}\r\n", header(&invite, name)));
    }
    ringing.push_str(&format!("To: {};tag=agtag\r\nContact: <sip:abc@xyz.invalid;transport=ws>\r\nContent-Length: 0\r\n\r\n", header(&invite, "To")));
    let out = h.agent(&ringing);
    let relayed = to_server(&out, SERVER).into_iter().find(|m| m.starts_with("SIP/2.0 180")).expect("180 relayed");
    assert_eq!(header(&relayed, "Allow-Events"), "talk, hold");
    let to_tag = header(&relayed, "To").split("tag=").nth(1).unwrap().to_owned();

    let notify = format!("NOTIFY sip:5001@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKn1\r\nMax-Forwards: 70\r\nFrom: \"Customer\" <sip:+15551234@genesys>;tag=s1\r\nTo: <sip:5001@lab>;tag={to_tag}\r\nCall-ID: servercall\r\nCSeq: 2 NOTIFY\r\nEvent: talk\r\nContent-Length: 0\r\n\r\n");
    let out = h.upstream(SERVER, &notify);
    assert!(to_server(&out, SERVER).iter().any(|m| m.starts_with("SIP/2.0 200") && m.contains("NOTIFY")), "{out:?}");
    let notify = to_agent(&out).into_iter().find(|m| m.starts_with("NOTIFY")).expect("NOTIFY passed to the softphone");
    assert_eq!(header(&notify, "Event"), "talk");
    assert!(header(&notify, "To").contains("tag=agtag"), "sent in the early dialog");
}

#[test]
fn a_call_whose_browser_media_died_is_ended_on_both_legs() {
    let mut h = Harness::new();
    let out = h.agent(&agent_invite("1234", &sdp("browser")));
    let invite = to_server(&out, SERVER).into_iter().find(|m| m.starts_with("INVITE")).unwrap();
    h.upstream(SERVER, &server_response(&invite, 200, "OK", Some(&sdp("server"))));
    assert_eq!(h.cc.active_calls(), 1);
    let now = h.now;
    h.cc.media_died(CallRef(1), "no media from the browser", now, 3000, &mut h.rng);
    let out = h.outputs();
    assert!(to_server(&out, SERVER).iter().any(|m| m.starts_with("BYE")), "{out:?}");
    assert!(to_agent(&out).iter().any(|m| m.starts_with("BYE")), "{out:?}");
    assert!(out.iter().any(|(_, m)| m == "ENDED Outbound 480 no media from the browser"), "{out:?}");
    assert_eq!(h.cc.active_calls(), 0);
}

#[path = "session_tests.rs"]
mod session;

#[path = "media_wait_tests.rs"]
mod media_wait;

#[test]
fn capture_ties_both_legs_to_the_first_and_the_record_keeps_the_servers_ids() {
    let mut h = Harness::new();
    h.cc.agent_software(CONN, "JsSIP 3.13.8");
    let out = h.agent(&agent_invite("1234", &sdp("browser")));
    let invite = to_server(&out, SERVER).into_iter().find(|m| m.starts_with("INVITE sip:1234@")).expect("INVITE upstream");
    let upstream_id = header(&invite, "Call-ID");
    let mut ringing = server_response(&invite, 180, "Ringing", None);
    ringing = ringing.replacen("\r\n", "\r\nX-Genesys-CallUUID: 01ABC\r\n", 1);
    h.upstream(SERVER, &ringing);

    let agent_side = h.cc.capture_context("agentcall").expect("the agent leg is a call's");
    assert_eq!(agent_side.correlation, "agentcall", "an outbound call's first leg is the agent's");
    assert_eq!(agent_side.other_call_id.as_deref(), Some(upstream_id.as_str()));
    let server_side = h.cc.capture_context(&upstream_id).expect("the server leg is the same call's");
    assert_eq!(server_side.correlation, "agentcall");
    assert_eq!(server_side.other_call_id.as_deref(), Some("agentcall"));
    assert_eq!(server_side.dn, "5001");
    assert!(h.cc.capture_context("unrelated").is_none());

    let summary = &h.cc.summaries()[0];
    assert_eq!(summary.upstream_ids.get("X-Genesys-CallUUID").map(String::as_str), Some("01ABC"));
    assert_eq!(summary.user_agent.as_deref(), Some("JsSIP 3.13.8"), "from the registration, the INVITE naming none");
}

#[test]
fn an_ended_calls_last_messages_are_still_tied_to_it() {
    let mut h = Harness::new();
    let out = h.agent(&agent_invite("600", &sdp("browser")));
    let ok = to_agent(&out).into_iter().find(|m| m.starts_with("SIP/2.0 200")).expect("200 OK");
    let tag = header(&ok, "To").split("tag=").nth(1).unwrap().to_owned();
    let bye = format!("BYE sip:gatewayd@gw.lab;transport=ws SIP/2.0\r\nVia: SIP/2.0/WSS b.invalid;branch=z9hG4bKb1\r\nMax-Forwards: 70\r\nFrom: <sip:5001@lab>;tag=ag1\r\nTo: <sip:600@lab>;tag={tag}\r\nCall-ID: agentcall\r\nCSeq: 3 BYE\r\nContent-Length: 0\r\n\r\n");
    h.agent(&bye);
    assert_eq!(h.cc.active_calls(), 0);
    let ended = h.cc.capture_context("agentcall").expect("remembered after the end");
    assert_eq!((ended.correlation.as_str(), ended.dn.as_str()), ("agentcall", "5001"));
}
