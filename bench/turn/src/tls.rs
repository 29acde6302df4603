//! TURN over TLS for the load client: a rustls client connection over a nonblocking TCP
//! stream. The benchmark runs on loopback against servers with throwaway certificates, so the
//! server's certificate is not verified (signatures are: the handshake is real TLS).

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme};

#[derive(Debug)]
struct AnyServer(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(&self, _: &CertificateDer<'_>, _: &[CertificateDer<'_>], _: &ServerName<'_>, _: &[u8], _: UnixTime) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(&self, m: &[u8], c: &CertificateDer<'_>, d: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(&self, m: &[u8], c: &CertificateDer<'_>, d: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// One client configuration for every connection of the run (TLS 1.3 and 1.2, rustls' ring
/// provider, no resumption: each allocation is a fresh handshake, as a browser's would be).
pub fn config() -> Arc<ClientConfig> {
    // ring (no post-quantum key exchange, hence the deprecation): X25519, as both servers offer.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut c = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(provider)))
        .with_no_client_auth();
    c.resumption = rustls::client::Resumption::disabled();
    Arc::new(c)
}

pub fn connect(config: &Arc<ClientConfig>) -> ClientConnection {
    ClientConnection::new(config.clone(), ServerName::try_from("localhost").unwrap()).expect("TLS client")
}

/// Queues plaintext (sent once the handshake is done) and writes what the socket takes.
pub fn write(tls: &mut ClientConnection, s: &mut TcpStream, plain: &[u8]) -> io::Result<()> {
    tls.writer().write_all(plain)?;
    flush(tls, s)
}

/// Writes queued TLS records until the socket would block.
pub fn flush(tls: &mut ClientConnection, s: &mut TcpStream) -> io::Result<()> {
    while tls.wants_write() {
        match tls.write_tls(s) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads what the socket has, appending decrypted bytes to `out`. Ok(false) when the server
/// closed the connection.
pub fn read(tls: &mut ClientConnection, s: &mut TcpStream, out: &mut Vec<u8>, buf: &mut [u8]) -> io::Result<bool> {
    let open = match tls.read_tls(s) {
        Ok(0) => false,
        Ok(_) => true,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => true,
        Err(e) => return Err(e),
    };
    tls.process_new_packets().map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    loop {
        match tls.reader().read(buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    // The handshake (and key updates) answer from inside reads.
    flush(tls, s)?;
    Ok(open)
}

/// The negotiated protocol version and cipher suite, once the handshake is done.
pub fn negotiated(tls: &ClientConnection) -> Option<String> {
    let suite = tls.negotiated_cipher_suite()?;
    Some(format!("{:?} {:?}", tls.protocol_version()?, suite.suite()))
}
