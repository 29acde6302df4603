//! The DTLS identity: one certificate for every browser leg so its fingerprint stays stable
//! across calls and restarts.

use std::io::Write as _;
use std::path::Path;

use sha2::{Digest, Sha256};
use str0m::config::DtlsCert;

use super::config::DtlsIdentity;
use super::error::MediaError;

/// Certificate and PKCS#8 key, DER.
#[derive(Clone)]
pub struct Identity {
    pub cert_der: Vec<u8>,
    pub key_der: Vec<u8>,
}

impl Identity {
    pub fn load(source: &DtlsIdentity) -> Result<Identity, MediaError> {
        match source {
            DtlsIdentity::Pem { cert, key } => from_pem(cert, key),
            DtlsIdentity::Path(path) => load_or_create(path),
        }
    }

    pub fn dtls_cert(&self) -> DtlsCert {
        DtlsCert { certificate: self.cert_der.clone(), private_key: self.key_der.clone() }
    }

    /// "sha-256 AB:CD:..." exactly as it appears in a=fingerprint.
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::digest(&self.cert_der);
        let hex: Vec<String> = digest.iter().map(|b| format!("{b:02X}")).collect();
        format!("sha-256 {}", hex.join(":"))
    }
}

fn from_pem(cert: &str, key: &str) -> Result<Identity, MediaError> {
    let err = |m: String| MediaError::Certificate(m);
    let cert_der = rustls_pemfile::certs(&mut cert.as_bytes())
        .next()
        .ok_or_else(|| err("no certificate in PEM".into()))?
        .map_err(|e| err(e.to_string()))?;
    let key_der = match rustls_pemfile::private_key(&mut key.as_bytes()).map_err(|e| err(e.to_string()))? {
        Some(rustls::pki_types::PrivateKeyDer::Pkcs8(k)) => k.secret_pkcs8_der().to_vec(),
        Some(_) => return Err(err("private key must be PKCS#8".into())),
        None => return Err(err("no private key in PEM".into())),
    };
    Ok(Identity { cert_der: cert_der.to_vec(), key_der })
}

/// Reads the PEM file holding certificate and key; creates it (mode 0600) when absent.
fn load_or_create(path: &Path) -> Result<Identity, MediaError> {
    match std::fs::read_to_string(path) {
        Ok(text) => from_pem(&text, &text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let generated = rcgen::generate_simple_self_signed(vec!["gatewayd".to_owned()])
                .map_err(|e| MediaError::Certificate(e.to_string()))?;
            let text = format!("{}{}", generated.cert.pem(), generated.signing_key.serialize_pem());
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let tmp = path.with_extension("tmp");
            {
                use std::os::unix::fs::OpenOptionsExt as _;
                let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
                f.write_all(text.as_bytes())?;
                f.sync_all()?;
            }
            std::fs::rename(&tmp, path)?;
            from_pem(&text, &text)
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_identity_is_reloaded_with_the_same_fingerprint() {
        let dir = std::env::temp_dir().join(format!("gatewayd-cert-{}", std::process::id()));
        let path = dir.join("dtls.pem");
        let _ = std::fs::remove_file(&path);
        let a = Identity::load(&DtlsIdentity::Path(path.clone())).unwrap();
        let b = Identity::load(&DtlsIdentity::Path(path.clone())).unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert!(a.fingerprint().starts_with("sha-256 ") && a.fingerprint().len() == 8 + 95);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn garbage_pem_is_a_clear_error() {
        let e = Identity::load(&DtlsIdentity::Pem { cert: "x".into(), key: "y".into() });
        assert!(matches!(e, Err(MediaError::Certificate(_))));
    }
}
