//! Reading, checking and generating certificate + key pairs.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::ServerConfig;

/// Why a certificate and key cannot serve together. `key()` says which profile key to blame.
#[derive(Debug, thiserror::Error)]
pub enum PairError {
    #[error("no PEM certificate found in the file")]
    NoCertificate,
    #[error("certificate is not valid PEM: {0}")]
    BadCertificate(String),
    #[error("no PEM private key found in the file")]
    NoKey,
    #[error("private key is not usable: {0}")]
    BadKey(String),
    #[error("the private key does not match the certificate")]
    Mismatch,
}

impl PairError {
    pub fn key(&self) -> &'static str {
        match self {
            PairError::NoCertificate | PairError::BadCertificate(_) => "tls.certificate",
            _ => "tls.key",
        }
    }
}

/// A certificate chain and its key, in PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertifiedPem {
    pub chain: Vec<u8>,
    pub key: Vec<u8>,
}

fn parse(cert_pem: &[u8], key_pem: &[u8]) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), PairError> {
    let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<_, _>>()
        .map_err(|e| PairError::BadCertificate(e.to_string()))?;
    if chain.is_empty() {
        return Err(PairError::NoCertificate);
    }
    let key = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|e| PairError::BadKey(e.to_string()))?
        .ok_or(PairError::NoKey)?;
    Ok((chain, key))
}

/// Checks that a PEM chain and PEM key parse and belong together.
pub fn check_pair(cert_pem: &[u8], key_pem: &[u8]) -> Result<(), PairError> {
    let (chain, key) = parse(cert_pem, key_pem)?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let signing = provider.key_provider.load_private_key(key).map_err(|e| PairError::BadKey(e.to_string()))?;
    let certified = rustls::sign::CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) => Ok(()),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => Err(PairError::Mismatch),
        // The key type cannot tell its public key: nothing to compare, the handshake will tell.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(()),
        Err(e) => Err(PairError::BadKey(e.to_string())),
    }
}

/// A rustls server config (TLS 1.2 and 1.3, aws-lc-rs's AEAD suites only: the crypto library of the media stack too) for a PEM pair.
pub fn server_config(pem: &CertifiedPem, alpn: &[&[u8]]) -> Result<Arc<ServerConfig>, PairError> {
    let (chain, key) = parse(&pem.chain, &pem.key)?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| PairError::BadKey(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => PairError::Mismatch,
            e => PairError::BadKey(e.to_string()),
        })?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    // Our order (the provider's: AEAD suites, strongest first), not the client's: a client offering a
    // weaker suite first does not get it (testssl.sh rates the other way HIGH).
    config.ignore_client_order = true;
    Ok(Arc::new(config))
}

/// As [`server_config`], and also answers TLS-ALPN-01 validations (RFC 8737) with the
/// validation certificates the ACME client leaves under `state_dir`.
pub fn server_config_answering_tls_alpn(pem: &CertifiedPem, alpn: &[&[u8]], state_dir: &Path) -> Result<Arc<ServerConfig>, PairError> {
    let mut config = (*server_config(pem, alpn)?).clone();
    config.cert_resolver = Arc::new(super::alpn_challenge::ChallengeResolver::new(config.cert_resolver.clone(), state_dir));
    config.alpn_protocols.push(super::alpn_challenge::ACME_TLS_ALPN.to_vec());
    Ok(Arc::new(config))
}

/// Loads `dir/name.{crt,key}`, generating a self-signed pair for `names` when absent so the
/// fingerprint browsers see stays the same across restarts.
pub fn load_or_create_self_signed(dir: &Path, name: &str, names: &[String]) -> std::io::Result<CertifiedPem> {
    let cert_path = dir.join(format!("{name}.crt"));
    let key_path = dir.join(format!("{name}.key"));
    if let (Ok(chain), Ok(key)) = (std::fs::read(&cert_path), std::fs::read(&key_path)) {
        if check_pair(&chain, &key).is_ok() {
            return Ok(CertifiedPem { chain, key });
        }
    }
    let names = if names.is_empty() { vec!["localhost".to_owned()] } else { names.to_vec() };
    let generated = rcgen::generate_simple_self_signed(names).map_err(std::io::Error::other)?;
    let pem = CertifiedPem { chain: generated.cert.pem().into_bytes(), key: generated.signing_key.serialize_pem().into_bytes() };
    std::fs::create_dir_all(dir)?;
    crate::system::write_private_file(&key_path, &pem.key)?;
    crate::system::write_private_file(&cert_path, &pem.chain)?;
    Ok(pem)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> CertifiedPem {
        let g = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        CertifiedPem { chain: g.cert.pem().into_bytes(), key: g.signing_key.serialize_pem().into_bytes() }
    }

    #[test]
    fn matching_pair_passes_and_mismatch_is_caught() {
        let a = pair();
        let b = pair();
        check_pair(&a.chain, &a.key).unwrap();
        assert!(matches!(check_pair(&a.chain, &b.key), Err(PairError::Mismatch)));
        assert!(matches!(check_pair(b"junk", &a.key), Err(PairError::NoCertificate)));
        assert!(matches!(check_pair(&a.chain, b""), Err(PairError::NoKey)));
        assert!(server_config(&a, &[b"http/1.1"]).unwrap().ignore_client_order, "the server's cipher order");
    }
}
