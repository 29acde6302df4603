use super::*;

// RFC 7616 section 3.9.1 (HTTP example; the arithmetic is the same for SIP).
const USER: &str = "Mufasa";
const REALM: &str = "http-auth@example.org";
const PASSWORD: &str = "Circle of Life";
const NONCE: &str = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
const CNONCE: &str = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";

#[test]
fn request_digest_matches_rfc_7616_examples() {
    for (algorithm, expected) in [
        (Algorithm::Md5, "8ca523f5e9506fed4657c9700eebdbec"),
        (
            Algorithm::Sha256,
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
        ),
    ] {
        let ha1 = ha1(algorithm, USER, REALM, PASSWORD);
        let digest = request_digest(
            algorithm,
            &ha1,
            NONCE,
            Some(("00000001", CNONCE)),
            "GET",
            "/dir/index.html",
        );
        assert_eq!(digest, expected, "{algorithm:?}");
    }
}

#[test]
fn request_digest_matches_rfc_2617_example() {
    let ha1 = ha1(
        Algorithm::Md5,
        "Mufasa",
        "testrealm@host.com",
        "Circle Of Life",
    );
    let digest = request_digest(
        Algorithm::Md5,
        &ha1,
        "dcd98b7102dd2f0e8b11d0f600bfb0c093",
        Some(("00000001", "0a4f113b")),
        "GET",
        "/dir/index.html",
    );
    assert_eq!(digest, "6629fae49393a05397450978507c4ef1");
}

#[test]
fn ha1_is_lowercase_hex_of_the_right_length() {
    let md5 = ha1(Algorithm::Md5, "5001", "lab", "pass5001");
    let sha = ha1(Algorithm::Sha256, "5001", "lab", "pass5001");
    assert_eq!(md5.len(), Algorithm::Md5.hex_len());
    assert_eq!(sha.len(), Algorithm::Sha256.hex_len());
    assert!(md5
        .chars()
        .chain(sha.chars())
        .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)));
}

#[test]
fn algorithm_tokens_round_trip_and_default_to_md5() {
    assert_eq!(Algorithm::from_param(None), Ok(Algorithm::Md5));
    for algorithm in [Algorithm::Md5, Algorithm::Sha256] {
        assert_eq!(
            Algorithm::from_param(Some(algorithm.token())),
            Ok(algorithm)
        );
    }
    assert_eq!(
        Algorithm::from_param(Some("sha-256")),
        Ok(Algorithm::Sha256)
    );
    assert!(matches!(
        Algorithm::from_param(Some("SHA-512-256")),
        Err(DigestError::UnsupportedAlgorithm(_))
    ));
}

#[test]
fn auth_params_handle_quotes_escapes_commas_and_case() {
    let params = AuthParams::parse(
        "Digest Realm=\"a, \\\"b\\\"\",nonce=xyz ,  qop=\"auth,auth-int\", stale=TRUE",
    )
    .unwrap();
    assert_eq!(params.get("realm"), Some("a, \"b\""));
    assert_eq!(params.get("NONCE"), Some("xyz"));
    assert_eq!(params.get("qop"), Some("auth,auth-int"));
    assert_eq!(params.get("stale"), Some("TRUE"));
    assert_eq!(params.get("opaque"), None);
}

#[test]
fn auth_params_refuse_other_schemes_and_junk() {
    assert_eq!(AuthParams::parse("Basic abc="), Err(DigestError::NotDigest));
    assert_eq!(
        AuthParams::parse("Digest realm=\"open"),
        Err(DigestError::Malformed)
    );
    assert_eq!(AuthParams::parse("Digest =x"), Err(DigestError::Malformed));
    assert_eq!(
        AuthParams::parse("Digest novalue"),
        Err(DigestError::Malformed)
    );
    let many = (0..30)
        .map(|i| format!("p{i}=1"))
        .collect::<Vec<_>>()
        .join(", ");
    assert_eq!(
        AuthParams::parse(&format!("Digest {many}")),
        Err(DigestError::Malformed)
    );
}

#[test]
fn quoting_escapes_what_it_must() {
    assert_eq!(quote("a\"b\\c"), "\"a\\\"b\\\\c\"");
    let params = AuthParams::parse(&format!("Digest realm={}", quote("x\"y"))).unwrap();
    assert_eq!(params.get("realm"), Some("x\"y"));
}

#[test]
fn challenge_parses_qop_lists_and_refuses_auth_int_only() {
    let c = Challenge::parse(
        "Digest realm=\"r\", nonce=\"n\", algorithm=SHA-256, qop=\"auth-int, auth\", opaque=\"o\", stale=true",
        false,
    )
    .unwrap();
    assert_eq!(c.algorithm, Algorithm::Sha256);
    assert!(c.qop_auth && c.stale && !c.proxy);
    assert_eq!(c.opaque.as_deref(), Some("o"));
    assert_eq!(
        Challenge::parse("Digest realm=\"r\", nonce=\"n\", qop=\"auth-int\"", false),
        Err(DigestError::NoAuthQop)
    );
    assert_eq!(
        Challenge::parse("Digest realm=\"r\"", false),
        Err(DigestError::MissingParam("nonce"))
    );
}

#[test]
fn authorization_without_qop_uses_the_rfc_2069_form() {
    let challenge = Challenge::parse("Digest realm=\"r\", nonce=\"n\"", true).unwrap();
    let secret = ClientSecret::Password("pw".into());
    let value = authorization_value(&challenge, "u", &secret, "INVITE", "sip:x", 1, "c").unwrap();
    assert!(!value.contains("qop"), "{value}");
    let params = AuthParams::parse(&value).unwrap();
    let ha1 = ha1(Algorithm::Md5, "u", "r", "pw");
    let expected = request_digest(Algorithm::Md5, &ha1, "n", None, "INVITE", "sip:x");
    assert_eq!(params.get("response"), Some(expected.as_str()));
}

fn challenge_response(challenges: &[&str], proxy: bool) -> Response {
    let mut headers = rsip::Headers::default();
    for c in challenges {
        headers.push(if proxy {
            Header::ProxyAuthenticate(rsip::headers::ProxyAuthenticate::new(*c))
        } else {
            Header::WwwAuthenticate(rsip::headers::WwwAuthenticate::new(*c))
        });
    }
    Response {
        status_code: if proxy { 407.into() } else { 401.into() },
        version: rsip::Version::V2,
        headers,
        body: vec![],
    }
}

fn register() -> Request {
    let text = "REGISTER sip:upstream.invalid SIP/2.0\r\nVia: SIP/2.0/UDP gw;branch=z9hG4bK1\r\n\
        From: <sip:5001@upstream.invalid>;tag=a\r\nTo: <sip:5001@upstream.invalid>\r\nCall-ID: c\r\n\
        CSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n";
    rsip::Request::try_from(text).unwrap()
}

#[test]
fn client_picks_the_first_challenge_it_can_answer() {
    let response = challenge_response(
        &[
            "Digest realm=\"r\", nonce=\"n1\", algorithm=SHA-512-256, qop=\"auth\"",
            "Digest realm=\"r\", nonce=\"n2\", algorithm=SHA-256, qop=\"auth\"",
            "Digest realm=\"r\", nonce=\"n3\", algorithm=MD5, qop=\"auth\"",
        ],
        false,
    );
    let password = ClientSecret::Password("pw".into());
    assert_eq!(Challenge::select(&response, &password).unwrap().nonce, "n2");
    let md5_only = ClientSecret::Ha1 {
        md5: Some("00".repeat(16)),
        sha256: None,
    };
    assert_eq!(Challenge::select(&response, &md5_only).unwrap().nonce, "n3");
    let nothing = ClientSecret::Ha1 {
        md5: None,
        sha256: None,
    };
    assert_eq!(
        Challenge::select(&response, &nothing),
        Err(DigestError::NoChallenge)
    );
}

#[test]
fn authorize_request_adds_and_replaces_credentials() {
    let response = challenge_response(
        &["Digest realm=\"up\", nonce=\"n\", algorithm=MD5, qop=\"auth\", opaque=\"op\""],
        true,
    );
    let mut request = register();
    let secret = ClientSecret::Password("pw".into());
    let challenge = authorize_request(&mut request, &response, "5001", &secret, 1, "cn").unwrap();
    assert!(challenge.proxy);
    authorize_request(&mut request, &response, "5001", &secret, 2, "cn").unwrap();
    let values: Vec<_> = request
        .headers
        .iter()
        .filter_map(|h| match h {
            Header::ProxyAuthorization(v) => Some(v.value().to_owned()),
            _ => None,
        })
        .collect();
    assert_eq!(values.len(), 1, "{values:?}");
    let params = AuthParams::parse(&values[0]).unwrap();
    assert_eq!(params.get("nc"), Some("00000002"));
    assert_eq!(params.get("opaque"), Some("op"));
    assert_eq!(params.get("uri"), Some("sip:upstream.invalid"));
    let ha1 = ha1(Algorithm::Md5, "5001", "up", "pw");
    let expected = request_digest(
        Algorithm::Md5,
        &ha1,
        "n",
        Some(("00000002", "cn")),
        "REGISTER",
        "sip:upstream.invalid",
    );
    assert_eq!(params.get("response"), Some(expected.as_str()));
}

#[test]
fn nonce_counts_above_255_are_written_as_hex() {
    let challenge = Challenge::parse("Digest realm=\"r\", nonce=\"n\", qop=auth", false).unwrap();
    let secret = ClientSecret::Password("pw".into());
    let value =
        authorization_value(&challenge, "u", &secret, "REGISTER", "sip:x", 300, "c").unwrap();
    assert!(value.contains("nc=0000012c"), "{value}");
}
