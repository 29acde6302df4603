//! HTTP Digest authentication for SIP (RFC 3261 section 22, RFC 7616, RFC 8760): the shared
//! pieces (algorithms, HA1, auth-param parsing) and the client side used to register with an
//! upstream server. The server side lives in `digest::server`.
//!
//! rsip's typed auth headers are not used: they cannot parse `algorithm=SHA-256` (only
//! `SHA256`) and read `nc` as a decimal `u8`, while RFC 7616 makes it eight hex digits.

use md5::Md5;
use rsip::headers::UntypedHeader;
use rsip::{Header, Request, Response};
use sha2::{Digest, Sha256};

mod nonce;
pub mod server;
pub use server::{
    AuthFailure, DigestConfig, DigestServer, FailureReason, StoredCredentials, Verdict,
};

/// Digest algorithms we compute. The `-sess` variants are not offered and not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Md5,
    Sha256,
}

impl Algorithm {
    /// The token used on the wire (RFC 7616 section 6.1).
    pub fn token(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
        }
    }

    /// Reads an `algorithm` parameter; a missing one means MD5 (RFC 7616 section 3.3).
    pub fn from_param(value: Option<&str>) -> Result<Self, DigestError> {
        match value.map(str::trim) {
            None => Ok(Algorithm::Md5),
            Some(v) if v.eq_ignore_ascii_case("MD5") => Ok(Algorithm::Md5),
            Some(v) if v.eq_ignore_ascii_case("SHA-256") => Ok(Algorithm::Sha256),
            Some(v) => Err(DigestError::UnsupportedAlgorithm(truncate(v, 32))),
        }
    }

    /// Lowercase hex of the hash of `data`.
    pub fn hash_hex(self, data: &[u8]) -> String {
        match self {
            Algorithm::Md5 => hex::encode(Md5::digest(data)),
            Algorithm::Sha256 => hex::encode(Sha256::digest(data)),
        }
    }

    /// Length of a hex digest for this algorithm.
    pub fn hex_len(self) -> usize {
        match self {
            Algorithm::Md5 => 32,
            Algorithm::Sha256 => 64,
        }
    }
}

/// HA1 = H(user:realm:password) in lowercase hex, the form passwords are stored in.
pub fn ha1(algorithm: Algorithm, user: &str, realm: &str, password: &str) -> String {
    algorithm.hash_hex(format!("{user}:{realm}:{password}").as_bytes())
}

/// The request-digest (RFC 7616 section 3.4.1) for `qop=auth`, or the RFC 2069 form when
/// `qop` is `None`. `nc` is the eight hex digit nonce count as sent.
pub fn request_digest(
    algorithm: Algorithm,
    ha1_hex: &str,
    nonce: &str,
    qop: Option<(&str, &str)>,
    method: &str,
    uri: &str,
) -> String {
    let ha2 = algorithm.hash_hex(format!("{method}:{uri}").as_bytes());
    let input = match qop {
        Some((nc, cnonce)) => format!("{ha1_hex}:{nonce}:{nc}:{cnonce}:auth:{ha2}"),
        None => format!("{ha1_hex}:{nonce}:{ha2}"),
    };
    algorithm.hash_hex(input.as_bytes())
}

/// What is wrong with a challenge or credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("not a Digest header")]
    NotDigest,
    #[error("malformed auth parameters")]
    Malformed,
    #[error("missing {0} parameter")]
    MissingParam(&'static str),
    #[error("unsupported algorithm {0}")]
    UnsupportedAlgorithm(String),
    #[error("qop=auth is not offered")]
    NoAuthQop,
    #[error("bad nonce count")]
    BadNonceCount,
    #[error("no usable challenge in the response")]
    NoChallenge,
    #[error("no secret for algorithm {0:?}")]
    NoSecret(Algorithm),
}

fn truncate(text: &str, max: usize) -> String {
    text.chars().filter(|c| !c.is_control()).take(max).collect()
}

/// Most parameters a Digest header may carry before we stop reading (bounds the work).
const MAX_PARAMS: usize = 24;

/// The parameters of one `Digest ...` challenge or credentials header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthParams {
    params: Vec<(String, String)>,
}

impl AuthParams {
    /// Parses `Digest name=value, name="quoted value", ...`.
    pub fn parse(value: &str) -> Result<Self, DigestError> {
        let value = value.trim_start();
        let (scheme, mut rest) = value.split_at(value.find([' ', '\t']).unwrap_or(value.len()));
        if !scheme.eq_ignore_ascii_case("Digest") {
            return Err(DigestError::NotDigest);
        }
        // Credentials carry ten or so parameters.
        let mut params = Vec::with_capacity(12);
        loop {
            rest = rest.trim_start_matches([' ', '\t', ',']);
            if rest.is_empty() {
                break;
            }
            if params.len() == MAX_PARAMS {
                return Err(DigestError::Malformed);
            }
            let eq = rest.find('=').ok_or(DigestError::Malformed)?;
            let name = rest[..eq].trim();
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                return Err(DigestError::Malformed);
            }
            rest = rest[eq + 1..].trim_start();
            let (parsed, remaining) = if let Some(quoted) = rest.strip_prefix('"') {
                read_quoted(quoted)?
            } else {
                let end = rest.find([',', ' ', '\t']).unwrap_or(rest.len());
                (rest[..end].to_owned(), &rest[end..])
            };
            params.push((name.to_ascii_lowercase(), parsed));
            rest = remaining;
        }
        Ok(AuthParams { params })
    }

    /// The value of parameter `name` (case-insensitive name), unquoted.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn require(&self, name: &'static str) -> Result<&str, DigestError> {
        self.get(name).ok_or(DigestError::MissingParam(name))
    }
}

/// Reads a quoted-string body (after the opening quote), honouring backslash escapes.
fn read_quoted(input: &str) -> Result<(String, &str), DigestError> {
    // Nonces, responses and URIs carry no escapes: one copy up to the closing quote.
    if let Some(end) = input.find(['"', '\\']) {
        if input.as_bytes()[end] == b'"' {
            return Ok((input[..end].to_owned(), &input[end + 1..]));
        }
    }
    let mut out = String::new();
    let mut chars = input.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => out.push(chars.next().ok_or(DigestError::Malformed)?.1),
            '"' => return Ok((out, &input[i + 1..])),
            _ => out.push(c),
        }
    }
    Err(DigestError::Malformed)
}

/// Quotes a value for a quoted-string parameter.
pub(crate) fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars().filter(|c| !c.is_control()) {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// One challenge from a 401 or 407, as a client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub realm: String,
    pub nonce: String,
    pub opaque: Option<String>,
    pub algorithm: Algorithm,
    /// True when the challenge offers `qop=auth` (otherwise the RFC 2069 form is used).
    pub qop_auth: bool,
    pub stale: bool,
    /// True for `Proxy-Authenticate` (answer with `Proxy-Authorization`).
    pub proxy: bool,
}

impl Challenge {
    /// Parses one `WWW-Authenticate`/`Proxy-Authenticate` value.
    pub fn parse(value: &str, proxy: bool) -> Result<Self, DigestError> {
        let params = AuthParams::parse(value)?;
        let algorithm = Algorithm::from_param(params.get("algorithm"))?;
        let qop_auth = match params.get("qop") {
            None => false,
            Some(list) => {
                let auth = list
                    .split(',')
                    .any(|q| q.trim().eq_ignore_ascii_case("auth"));
                if !auth {
                    return Err(DigestError::NoAuthQop);
                }
                true
            }
        };
        Ok(Challenge {
            realm: params.require("realm")?.to_owned(),
            nonce: params.require("nonce")?.to_owned(),
            opaque: params.get("opaque").map(str::to_owned),
            algorithm,
            qop_auth,
            stale: params
                .get("stale")
                .is_some_and(|s| s.eq_ignore_ascii_case("true")),
            proxy,
        })
    }

    /// The first challenge in `response` we can answer, in the server's order of preference
    /// (RFC 8760 section 2.4), among the algorithms `secret` can serve.
    pub fn select(response: &Response, secret: &ClientSecret) -> Result<Self, DigestError> {
        response
            .headers
            .iter()
            .filter_map(|h| match h {
                Header::WwwAuthenticate(v) => Some(Challenge::parse(v.value(), false)),
                Header::ProxyAuthenticate(v) => Some(Challenge::parse(v.value(), true)),
                _ => None,
            })
            .filter_map(Result::ok)
            .find(|c| secret.ha1(c.algorithm, "", &c.realm).is_ok())
            .ok_or(DigestError::NoChallenge)
    }
}

/// What a client authenticates with: the password, or HA1 values (which only work for the
/// realm they were computed with; compare `Challenge::realm` when that can differ).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientSecret {
    Password(String),
    Ha1 {
        md5: Option<String>,
        sha256: Option<String>,
    },
}

impl ClientSecret {
    fn ha1(&self, algorithm: Algorithm, user: &str, realm: &str) -> Result<String, DigestError> {
        match self {
            ClientSecret::Password(password) => Ok(ha1(algorithm, user, realm, password)),
            ClientSecret::Ha1 { md5, sha256 } => match algorithm {
                Algorithm::Md5 => md5.clone(),
                Algorithm::Sha256 => sha256.clone(),
            }
            .map(|h| h.to_ascii_lowercase())
            .ok_or(DigestError::NoSecret(algorithm)),
        }
    }
}

/// The value of an `Authorization`/`Proxy-Authorization` header answering `challenge`.
/// `nc` counts the requests this client made with this nonce (1 for the first); `cnonce` is a
/// fresh random token.
pub fn authorization_value(
    challenge: &Challenge,
    user: &str,
    secret: &ClientSecret,
    method: &str,
    uri: &str,
    nc: u32,
    cnonce: &str,
) -> Result<String, DigestError> {
    let ha1_hex = secret.ha1(challenge.algorithm, user, &challenge.realm)?;
    let nc_hex = format!("{nc:08x}");
    let qop = challenge.qop_auth.then_some((nc_hex.as_str(), cnonce));
    let response = request_digest(
        challenge.algorithm,
        &ha1_hex,
        &challenge.nonce,
        qop,
        method,
        uri,
    );
    let mut value = format!(
        "Digest username={}, realm={}, nonce={}, uri={}, response=\"{response}\", algorithm={}",
        quote(user),
        quote(&challenge.realm),
        quote(&challenge.nonce),
        quote(uri),
        challenge.algorithm.token(),
    );
    if challenge.qop_auth {
        value.push_str(&format!(
            ", qop=auth, nc={nc_hex}, cnonce={}",
            quote(cnonce)
        ));
    }
    if let Some(opaque) = &challenge.opaque {
        value.push_str(&format!(", opaque={}", quote(opaque)));
    }
    Ok(value)
}

/// Adds credentials answering the 401/407 `response` to `request` (which the caller then sends
/// with a new branch and CSeq). Returns the challenge used so the caller can count `nc`.
pub fn authorize_request(
    request: &mut Request,
    response: &Response,
    user: &str,
    secret: &ClientSecret,
    nc: u32,
    cnonce: &str,
) -> Result<Challenge, DigestError> {
    let challenge = Challenge::select(response, secret)?;
    let uri = request.uri.to_string();
    let method = request.method.to_string();
    let value = authorization_value(&challenge, user, secret, &method, &uri, nc, cnonce)?;
    // Credentials for the same realm from an earlier attempt are replaced, not piled up.
    request.headers.retain(|h| match h {
        Header::Authorization(v) if !challenge.proxy => !same_realm(v.value(), &challenge.realm),
        Header::ProxyAuthorization(v) if challenge.proxy => {
            !same_realm(v.value(), &challenge.realm)
        }
        _ => true,
    });
    request.headers.push(if challenge.proxy {
        Header::ProxyAuthorization(rsip::headers::ProxyAuthorization::new(value))
    } else {
        Header::Authorization(rsip::headers::Authorization::new(value))
    });
    Ok(challenge)
}

fn same_realm(value: &str, realm: &str) -> bool {
    AuthParams::parse(value)
        .ok()
        .and_then(|p| p.get("realm").map(|r| r == realm))
        == Some(true)
}

#[cfg(test)]
mod tests;
