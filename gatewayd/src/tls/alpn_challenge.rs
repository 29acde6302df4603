//! TLS-ALPN-01 (RFC 8737) on the HTTPS listener: a handshake that offers only the
//! `acme-tls/1` protocol gets the validation certificate the ACME client left for that name
//! (`<state>/acme/tls-alpn-01/<name>.pem`: certificate and key in one file); every other
//! handshake gets the certificate in service. The file is read per validation handshake
//! (a few per order), so nothing is shared in memory between the client and the listeners.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The ALPN protocol of a validation handshake.
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";
/// Where validation certificates wait, under the state directory.
pub const TLS_ALPN01_DIR: &str = "acme/tls-alpn-01";

/// Chooses between the certificate in service (whatever resolver the listener's config
/// already had) and a pending validation certificate.
#[derive(Debug)]
pub struct ChallengeResolver {
    serving: Arc<dyn ResolvesServerCert>,
    dir: PathBuf,
}

impl ChallengeResolver {
    pub fn new(serving: Arc<dyn ResolvesServerCert>, state_dir: &Path) -> ChallengeResolver {
        ChallengeResolver { serving, dir: state_dir.join(TLS_ALPN01_DIR) }
    }

    fn validation(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        // Names are DNS names (RFC 8737 section 3): nothing that leaves the directory.
        if name.is_empty() || name.len() > 253 || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.') || name.starts_with('.') {
            return None;
        }
        let pem = std::fs::read(self.dir.join(format!("{name}.pem"))).ok()?;
        certified_key(&pem)
    }
}

impl ResolvesServerCert for ChallengeResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let validating = hello.alpn().is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN));
        if validating {
            // A validation handshake for a name without a pending challenge fails rather than
            // show the certificate in service under the wrong protocol.
            return hello.server_name().and_then(|n| self.validation(n));
        }
        self.serving.resolve(hello)
    }
}

/// A certificate chain and key from one PEM text, ready to serve.
pub fn certified_key(pem: &[u8]) -> Option<Arc<CertifiedKey>> {
    let chain: Vec<_> = rustls_pemfile::certs(&mut &pem[..]).collect::<Result<_, _>>().ok()?;
    let key = rustls_pemfile::private_key(&mut &pem[..]).ok()??;
    let signing = rustls::crypto::aws_lc_rs::default_provider().key_provider.load_private_key(key).ok()?;
    (!chain.is_empty()).then(|| Arc::new(CertifiedKey::new(chain, signing)))
}

/// The validation certificate for `name` (RFC 8737 section 3): self-signed, the name as its
/// only SAN, and the critical acmeIdentifier extension carrying the SHA-256 of the key
/// authorization. Returned as one PEM text (certificate, then key).
pub fn validation_certificate(name: &str, key_authorization_sha256: &[u8]) -> Result<String, rcgen::Error> {
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()])?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(key_authorization_sha256)];
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok(format!("{}{}", cert.pem(), key.serialize_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_validation_certificate_names_the_domain_and_carries_the_digest() {
        let pem = validation_certificate("gw.example", &[7u8; 32]).unwrap();
        let key = certified_key(pem.as_bytes()).expect("servable");
        let (_, cert) = x509_parser::parse_x509_certificate(key.cert[0].as_ref()).unwrap();
        let ext = cert.extensions().iter().find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31").expect("acmeIdentifier");
        assert!(ext.critical, "RFC 8737: the extension is critical");
        // An OCTET STRING of the 32-byte digest.
        assert_eq!(&ext.value[..2], &[0x04, 32]);
        assert_eq!(&ext.value[2..], &[7u8; 32]);
    }

    #[test]
    fn names_that_could_leave_the_directory_are_never_read() {
        let dir = std::env::temp_dir().join(format!("alpn-challenge-{}", std::process::id()));
        let serving = certified_key(validation_certificate("serving.example", &[0; 32]).unwrap().as_bytes()).unwrap();
        let r = ChallengeResolver::new(Arc::new(rustls::sign::SingleCertAndKey::from(serving)), &dir);
        for bad in ["../etc/passwd", "a/b", "", ".hidden", "x\u{0}y"] {
            assert!(r.validation(bad).is_none(), "{bad:?}");
        }
        std::fs::create_dir_all(dir.join(TLS_ALPN01_DIR)).unwrap();
        std::fs::write(dir.join(TLS_ALPN01_DIR).join("gw.example.pem"), validation_certificate("gw.example", &[1; 32]).unwrap()).unwrap();
        assert!(r.validation("gw.example").is_some());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
