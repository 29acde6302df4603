use super::*;
use crate::sip::digest::{authorize_request, Challenge, ClientSecret};
use rand::SeedableRng;

const REALM: &str = "lab.invalid";
const T0: u64 = 1_800_000_000_000;

fn rng() -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(11)
}

fn server() -> DigestServer {
    DigestServer::new(DigestConfig::new(
        REALM,
        b"0123456789abcdef0123456789abcdef".to_vec(),
    ))
}

fn lookup(user: &str) -> Option<StoredCredentials> {
    (user == "5001").then(|| StoredCredentials::from_password("5001", REALM, "pass5001"))
}

fn register() -> Request {
    let text = "REGISTER sip:lab.invalid SIP/2.0\r\nVia: SIP/2.0/WSS h.invalid;branch=z9hG4bK1\r\n\
        From: <sip:5001@lab.invalid>;tag=a\r\nTo: <sip:5001@lab.invalid>\r\nCall-ID: c\r\n\
        CSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n";
    Request::try_from(text).unwrap()
}

/// Runs the first exchange and returns the 401 the server sent.
fn first_challenge(server: &mut DigestServer, now: u64) -> Response {
    let request = register();
    let verdict = server.verify_request(&request, now, lookup);
    assert_eq!(
        verdict,
        Verdict::Challenge {
            stale: false,
            failure: None
        }
    );
    server
        .respond(&verdict, &request, now, &mut rng(), "tt")
        .unwrap()
}

fn answered(challenge: &Response, user: &str, password: &str, nc: u32) -> Request {
    let mut request = register();
    let secret = ClientSecret::Password(password.into());
    authorize_request(&mut request, challenge, user, &secret, nc, "cnonce1").unwrap();
    request
}

#[test]
fn first_request_gets_both_challenges_sha256_first() {
    let mut server = server();
    let response = first_challenge(&mut server, T0);
    assert_eq!(response.status_code.code(), 401);
    let challenges: Vec<_> = response
        .headers
        .iter()
        .filter_map(|h| match h {
            Header::WwwAuthenticate(v) => Some(Challenge::parse(v.value(), false).unwrap()),
            _ => None,
        })
        .collect();
    assert_eq!(challenges.len(), 2);
    assert_eq!(challenges[0].algorithm, Algorithm::Sha256);
    assert_eq!(challenges[1].algorithm, Algorithm::Md5);
    assert_eq!(challenges[0].nonce, challenges[1].nonce);
    assert!(challenges
        .iter()
        .all(|c| c.qop_auth && !c.stale && c.realm == REALM));
    assert!(response.to_string().contains("qop=\"auth\""));
}

#[test]
fn correct_credentials_authenticate_with_either_algorithm() {
    let mut server = server();
    let challenge = first_challenge(&mut server, T0);
    let request = answered(&challenge, "5001", "pass5001", 1);
    assert!(request.to_string().contains("algorithm=SHA-256"));
    let verdict = server.verify_request(&request, T0 + 10, lookup);
    assert_eq!(
        verdict,
        Verdict::Authenticated {
            user: "5001".into()
        }
    );
    assert_eq!(verdict.status_code(false), None);

    // An MD5-only client answers the second challenge.
    let mut request = register();
    let md5 = ClientSecret::Ha1 {
        md5: Some(crate::sip::digest::ha1(
            Algorithm::Md5,
            "5001",
            REALM,
            "pass5001",
        )),
        sha256: None,
    };
    authorize_request(&mut request, &challenge, "5001", &md5, 2, "c2").unwrap();
    assert!(request.to_string().contains("algorithm=MD5"));
    let verdict = server.verify_request(&request, T0 + 20, lookup);
    assert_eq!(
        verdict,
        Verdict::Authenticated {
            user: "5001".into()
        }
    );
}

#[test]
fn unknown_user_and_wrong_password_look_the_same_on_the_wire() {
    let mut server = server();
    let challenge = first_challenge(&mut server, T0);
    let wrong = answered(&challenge, "5001", "guess", 1);
    let unknown = answered(&challenge, "5999", "guess", 1);
    let wrong_verdict = server.verify_request(&wrong, T0, lookup);
    let unknown_verdict = server.verify_request(&unknown, T0, lookup);
    assert_eq!(
        wrong_verdict.failure(),
        Some(&AuthFailure {
            user: "5001".into(),
            reason: FailureReason::WrongPassword
        })
    );
    assert_eq!(
        unknown_verdict.failure(),
        Some(&AuthFailure {
            user: "5999".into(),
            reason: FailureReason::UnknownUser
        })
    );
    let a = server
        .respond(&wrong_verdict, &wrong, T0, &mut rng(), "tt")
        .unwrap();
    let b = server
        .respond(&unknown_verdict, &unknown, T0, &mut rng(), "tt")
        .unwrap();
    assert_eq!(a.status_code.code(), 403);
    assert_eq!(a.to_string(), b.to_string());
}

#[test]
fn an_expired_nonce_with_the_right_password_gets_a_stale_challenge() {
    let mut server = server();
    let challenge = first_challenge(&mut server, T0);
    let request = answered(&challenge, "5001", "pass5001", 1);
    let later = T0 + 300_001;
    let verdict = server.verify_request(&request, later, lookup);
    assert_eq!(
        verdict,
        Verdict::Challenge {
            stale: true,
            failure: None
        }
    );
    let response = server
        .respond(&verdict, &request, later, &mut rng(), "tt")
        .unwrap();
    let text = response.to_string();
    assert_eq!(text.matches("stale=true").count(), 2, "{text}");
    // The fresh challenge works.
    let retry = answered(&response, "5001", "pass5001", 1);
    assert_eq!(
        server.verify_request(&retry, later, lookup),
        Verdict::Authenticated {
            user: "5001".into()
        }
    );
}

#[test]
fn an_expired_nonce_with_a_wrong_password_is_forbidden() {
    let mut server = server();
    let challenge = first_challenge(&mut server, T0);
    let request = answered(&challenge, "5001", "nope", 1);
    let verdict = server.verify_request(&request, T0 + 400_000, lookup);
    assert!(matches!(verdict, Verdict::Forbidden { .. }));
}

#[test]
fn a_replayed_nonce_count_is_refused_and_reported() {
    let mut server = server();
    let challenge = first_challenge(&mut server, T0);
    let first = answered(&challenge, "5001", "pass5001", 1);
    assert!(matches!(
        server.verify_request(&first, T0, lookup),
        Verdict::Authenticated { .. }
    ));
    let verdict = server.verify_request(&first, T0 + 1, lookup);
    assert_eq!(
        verdict,
        Verdict::Challenge {
            stale: true,
            failure: Some(AuthFailure {
                user: "5001".into(),
                reason: FailureReason::Replay
            })
        }
    );
    let next = answered(&challenge, "5001", "pass5001", 2);
    assert!(matches!(
        server.verify_request(&next, T0 + 2, lookup),
        Verdict::Authenticated { .. }
    ));
}

#[test]
fn a_nonce_from_another_secret_gets_a_stale_challenge_when_the_password_is_right() {
    let mut old = DigestServer::new(DigestConfig::new(REALM, b"old secret".to_vec()));
    let challenge = first_challenge(&mut old, T0);
    let request = answered(&challenge, "5001", "pass5001", 1);
    let mut server = server();
    assert_eq!(
        server.verify_request(&request, T0, lookup),
        Verdict::Challenge {
            stale: true,
            failure: None
        }
    );
}

#[test]
fn credentials_for_another_realm_just_get_challenged() {
    let mut server = server();
    let mut request = register();
    request.headers.push(Header::Authorization(rsip::headers::Authorization::new(
        "Digest username=\"5001\", realm=\"elsewhere\", nonce=\"n\", uri=\"sip:lab.invalid\", response=\"00\"",
    )));
    assert_eq!(
        server.verify_request(&request, T0, lookup),
        Verdict::Challenge {
            stale: false,
            failure: None
        }
    );
}

#[test]
fn malformed_credentials_are_a_bad_request() {
    let mut server = server();
    let challenge = first_challenge(&mut server, T0);
    let good = answered(&challenge, "5001", "pass5001", 1).to_string();
    let auth_line = good
        .lines()
        .find(|l| l.starts_with("Authorization:"))
        .unwrap()
        .to_owned();
    let cases = [
        (
            auth_line.replace(", nc=00000001", ""),
            FailureReason::MalformedCredentials,
        ),
        (
            auth_line.replace("nc=00000001", "nc=zz"),
            FailureReason::MalformedCredentials,
        ),
        (
            auth_line.replace("nc=00000001", "nc=00000000"),
            FailureReason::MalformedCredentials,
        ),
        (
            auth_line.replace("qop=auth", "qop=auth-int"),
            FailureReason::MalformedCredentials,
        ),
        (
            auth_line.replace("algorithm=SHA-256", "algorithm=SHA-512"),
            FailureReason::UnsupportedAlgorithm,
        ),
        (
            auth_line.replace("uri=\"sip:lab.invalid\"", "uri=\"sip:other.invalid\""),
            FailureReason::UriMismatch,
        ),
        (
            "Authorization: Digest realm=\"lab.invalid".to_owned(),
            FailureReason::MalformedCredentials,
        ),
    ];
    for (line, reason) in cases {
        let text = good.replace(&auth_line, &line);
        let request = Request::try_from(text.as_str()).unwrap();
        let verdict = server.verify_request(&request, T0, lookup);
        assert!(
            matches!(&verdict, Verdict::BadRequest { failure, .. } if failure.reason == reason),
            "{line}: {verdict:?}"
        );
        let response = server
            .respond(&verdict, &request, T0, &mut rng(), "t")
            .unwrap();
        assert_eq!(response.status_code.code(), 400);
    }
}

#[test]
fn an_algorithm_not_offered_is_refused() {
    let mut config = DigestConfig::new(REALM, b"k".to_vec());
    config.algorithms = vec![Algorithm::Sha256];
    let mut sha_only = DigestServer::new(config);
    let challenge = first_challenge(&mut server(), T0);
    let mut request = register();
    let md5 = ClientSecret::Ha1 {
        md5: Some(crate::sip::digest::ha1(
            Algorithm::Md5,
            "5001",
            REALM,
            "pass5001",
        )),
        sha256: None,
    };
    authorize_request(&mut request, &challenge, "5001", &md5, 1, "c").unwrap();
    let verdict = sha_only.verify_request(&request, T0, lookup);
    assert!(matches!(
        verdict,
        Verdict::BadRequest {
            failure: AuthFailure {
                reason: FailureReason::UnsupportedAlgorithm,
                ..
            },
            ..
        }
    ));
}

#[test]
fn uppercase_hex_responses_are_accepted() {
    let mut server = server();
    let challenge = first_challenge(&mut server, T0);
    let text = answered(&challenge, "5001", "pass5001", 1).to_string();
    let start = text.find("response=\"").unwrap() + 10;
    let end = start + text[start..].find('"').unwrap();
    let upper = format!(
        "{}{}{}",
        &text[..start],
        text[start..end].to_uppercase(),
        &text[end..]
    );
    let request = Request::try_from(upper.as_str()).unwrap();
    assert!(matches!(
        server.verify_request(&request, T0, lookup),
        Verdict::Authenticated { .. }
    ));
}

#[test]
fn proxy_mode_uses_407_and_proxy_headers() {
    let mut config = DigestConfig::new(REALM, b"k".to_vec());
    config.proxy = true;
    config.opaque = Some("op1".into());
    let mut server = DigestServer::new(config);
    let request = register();
    let verdict = server.verify_request(&request, T0, lookup);
    let response = server
        .respond(&verdict, &request, T0, &mut rng(), "t")
        .unwrap();
    assert_eq!(response.status_code.code(), 407);
    assert!(response.to_string().contains("Proxy-Authenticate: Digest"));
    let answered = answered(&response, "5001", "pass5001", 1);
    assert!(answered.to_string().contains("Proxy-Authorization: Digest"));
    assert!(matches!(
        server.verify_request(&answered, T0, lookup),
        Verdict::Authenticated { .. }
    ));
    // A wrong opaque gets a new challenge.
    let tampered = answered
        .to_string()
        .replace("opaque=\"op1\"", "opaque=\"op2\"");
    let tampered = Request::try_from(tampered.as_str()).unwrap();
    assert_eq!(
        server.verify_request(&tampered, T0, lookup),
        Verdict::Challenge {
            stale: false,
            failure: None
        }
    );
}

#[test]
fn tracked_nonces_stay_within_capacity() {
    let mut config = DigestConfig::new(REALM, b"k".to_vec());
    config.max_tracked_nonces = 3;
    let mut server = DigestServer::new(config);
    for i in 0..10 {
        let challenge = first_challenge(&mut server, T0 + i);
        let request = answered(&challenge, "5001", "pass5001", 1);
        assert!(matches!(
            server.verify_request(&request, T0 + i, lookup),
            Verdict::Authenticated { .. }
        ));
        assert!(server.tracked_nonces() <= 3);
    }
}

#[test]
fn the_failure_user_is_sanitised_and_bounded() {
    let mut server = server();
    let challenge = first_challenge(&mut server, T0);
    let long = "x".repeat(500);
    let request = answered(&challenge, &long, "p", 1);
    let verdict = server.verify_request(&request, T0, lookup);
    assert_eq!(verdict.failure().unwrap().user.len(), MAX_REPORTED_USER);
}

#[test]
fn mutated_credentials_never_panic_and_a_changed_response_never_passes() {
    use rand::Rng;
    let mut server = server();
    let challenge = first_challenge(&mut server, T0);
    let good = answered(&challenge, "5001", "pass5001", 1).to_string();
    let line = good
        .lines()
        .find(|l| l.starts_with("Authorization:"))
        .unwrap()
        .to_owned();
    let value = line.trim_start_matches("Authorization: ").to_owned();
    let response_at = value.find("response=\"").unwrap() + 10;
    let mut rng = rng();
    let alphabet = b" ,=\"\\abcdef0123456789Digest";
    for round in 0..2000u32 {
        let mut bytes = value.clone().into_bytes();
        let at = if round % 2 == 0 {
            response_at + (rng.next_u32() as usize) % 64
        } else {
            (rng.next_u32() as usize) % bytes.len()
        };
        bytes[at] = alphabet[(rng.next_u32() as usize) % alphabet.len()];
        let Ok(mutated) = String::from_utf8(bytes) else {
            continue;
        };
        if mutated == value {
            continue;
        }
        let verdict = server.verify("REGISTER", &register().uri, &[&mutated], T0, lookup);
        if round % 2 == 0
            && mutated[response_at..response_at + 64] != value[response_at..response_at + 64]
        {
            // Hex case aside, a changed digest must not authenticate.
            let same_ignoring_case = mutated.eq_ignore_ascii_case(&value);
            assert!(
                same_ignoring_case || !matches!(verdict, Verdict::Authenticated { .. }),
                "{mutated}"
            );
        }
    }
}

#[test]
fn a_reload_keeps_replay_protection() {
    let mut server = server();
    let challenge = first_challenge(&mut server, T0);
    let first = answered(&challenge, "5001", "pass5001", 1);
    assert!(matches!(
        server.verify_request(&first, T0, lookup),
        Verdict::Authenticated { .. }
    ));
    let mut config = server.config().clone();
    config.algorithms = vec![Algorithm::Md5, Algorithm::Sha256];
    server.set_config(config);
    assert_eq!(server.config().algorithms[0], Algorithm::Md5);
    let verdict = server.verify_request(&first, T0 + 1, lookup);
    assert!(
        matches!(
            verdict,
            Verdict::Challenge {
                stale: true,
                failure: Some(AuthFailure {
                    reason: FailureReason::Replay,
                    ..
                })
            }
        ),
        "{verdict:?}"
    );
}

#[test]
fn an_agent_without_a_hash_for_an_algorithm_cannot_be_matched_with_an_empty_one() {
    let mut server = server();
    let challenge = first_challenge(&mut server, T0);
    let md5_only = |user: &str| {
        lookup(user).map(|c| StoredCredentials { ha1_sha256: String::new(), ..c })
    };
    // What anyone can compute: the SHA-256 digest over an empty HA1.
    let mut request = register();
    let forged = ClientSecret::Ha1 { md5: None, sha256: Some(String::new()) };
    authorize_request(&mut request, &challenge, "5001", &forged, 1, "c1").unwrap();
    assert!(request.to_string().contains("algorithm=SHA-256"));
    let verdict = server.verify_request(&request, T0 + 10, md5_only);
    assert!(matches!(verdict, Verdict::Forbidden { .. }), "{verdict:?}");
    // The algorithm the agent has still works.
    let mut request = register();
    let md5 = ClientSecret::Ha1 { md5: Some(crate::sip::digest::ha1(Algorithm::Md5, "5001", REALM, "pass5001")), sha256: None };
    authorize_request(&mut request, &challenge, "5001", &md5, 2, "c2").unwrap();
    assert_eq!(server.verify_request(&request, T0 + 20, md5_only), Verdict::Authenticated { user: "5001".into() });
}
