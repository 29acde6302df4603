//! DTLS for the browser legs: dimpl with the aws-lc-rs backend, as str0m's default provider has
//! it, but with one dimpl configuration shared by every call. The default provider builds and
//! validates a new configuration for each `Rtc` (several full key exchanges as self-tests),
//! which was over half of the gateway's CPU per call setup. Each call still gets its own DTLS
//! state, keys and handshake; only the immutable settings are shared.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use str0m::crypto::dtls::{DtlsCert, DtlsImplError, DtlsInstance, DtlsOutput, DtlsProvider, DtlsVersion, ProtocolVersion};
use str0m::crypto::{CryptoError, CryptoProvider};

/// The crypto provider every browser leg uses: str0m's aws-lc-rs one with the shared DTLS.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    static DTLS: OnceLock<SharedConfigDtls> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            let dtls: &'static SharedConfigDtls = DTLS.get_or_init(SharedConfigDtls::default);
            Arc::new(CryptoProvider { dtls_provider: dtls, ..str0m_aws_lc_rs::default_provider() })
        })
        .clone()
}

/// dimpl configurations by MTU (str0m asks for one MTU per Rtc; in practice there is one).
#[derive(Debug, Default)]
struct SharedConfigDtls {
    configs: Mutex<HashMap<Option<usize>, Arc<dimpl::Config>>>,
}

impl SharedConfigDtls {
    fn config(&self, mtu: Option<usize>) -> Result<Arc<dimpl::Config>, CryptoError> {
        let mut configs = self.configs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = configs.get(&mtu) {
            return Ok(c.clone());
        }
        // ICE checks return routability before DTLS starts, so server cookies add nothing.
        let mut builder = dimpl::Config::builder().use_server_cookie(false).with_crypto_provider(str0m_aws_lc_rs::dimpl_crypto_provider());
        if let Some(mtu) = mtu {
            builder = builder.mtu(mtu);
        }
        let config = Arc::new(builder.build().map_err(|e| CryptoError::Other(format!("DTLS configuration: {e}")))?);
        configs.insert(mtu, config.clone());
        Ok(config)
    }
}

impl DtlsProvider for SharedConfigDtls {
    fn generate_certificate(&self) -> Option<DtlsCert> {
        dimpl::certificate::generate_self_signed_certificate().ok().map(|c| DtlsCert { certificate: c.certificate, private_key: c.private_key })
    }

    fn new_dtls(&self, cert: &DtlsCert, now: Instant, version: DtlsVersion, mtu: Option<usize>) -> Result<Box<dyn DtlsInstance>, CryptoError> {
        let config = self.config(mtu)?;
        let cert = dimpl::DtlsCertificate { certificate: cert.certificate.clone(), private_key: cert.private_key.clone() };
        let dtls = match version {
            DtlsVersion::Dtls12 => dimpl::Dtls::new_12(config, cert, now),
            DtlsVersion::Dtls13 => dimpl::Dtls::new_13(config, cert, now),
            DtlsVersion::Auto => dimpl::Dtls::new_auto(config, cert, now),
            #[allow(unreachable_patterns)]
            other => return Err(CryptoError::Other(format!("unsupported DTLS version: {other}"))),
        };
        Ok(Box::new(Leg(dtls)))
    }
}

/// One leg's DTLS state.
struct Leg(dimpl::Dtls);

impl std::fmt::Debug for Leg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Leg")
    }
}

impl DtlsInstance for Leg {
    fn set_active(&mut self, active: bool) {
        self.0.set_active(active);
    }
    fn handle_packet(&mut self, packet: &[u8]) -> Result<(), DtlsImplError> {
        self.0.handle_packet(packet)
    }
    fn poll_output<'a>(&mut self, buf: &'a mut [u8]) -> DtlsOutput<'a> {
        self.0.poll_output(buf)
    }
    fn handle_timeout(&mut self, now: Instant) -> Result<(), DtlsImplError> {
        self.0.handle_timeout(now)
    }
    fn send_application_data(&mut self, data: &[u8]) -> Result<usize, DtlsImplError> {
        self.0.send_application_data(data)
    }
    fn is_active(&self) -> bool {
        self.0.is_active()
    }
    fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.0.protocol_version()
    }
    fn is_closing(&self) -> bool {
        self.0.is_closing()
    }
    fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
    fn close(&mut self) -> Result<(), DtlsImplError> {
        self.0.close()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_configuration_serves_every_leg() {
        let p = SharedConfigDtls::default();
        let a = p.config(None).unwrap();
        let b = p.config(None).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &p.config(Some(1200)).unwrap()));
        let cert = p.generate_certificate().expect("a certificate");
        let leg = p.new_dtls(&cert, Instant::now(), DtlsVersion::Dtls12, None).unwrap();
        assert!(!leg.is_closed());
        assert!(Arc::ptr_eq(&provider(), &provider()));
    }
}
