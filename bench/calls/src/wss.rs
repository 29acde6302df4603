//! The load clients' side of SIP over WebSocket (RFC 7118) on TLS: a connector that accepts the
//! lab gateway's self-signed certificate, the upgrade with subprotocol `sip`, and waiting for the
//! next SIP response on a connection. Shared by `calls-agent` and `register-load`.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message as WsMessage;

pub type Ws = tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>;

/// The benchmark's peer is a self-signed lab gateway: any certificate is accepted, signatures
/// are still checked so the TLS work is the real one.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(&self, _: &CertificateDer<'_>, _: &[CertificateDer<'_>], _: &ServerName<'_>, _: &[u8], _: UnixTime) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

pub fn tls_connector() -> TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// TCP, TLS and the WebSocket upgrade to `url` (wss://host:port/path) with this Origin.
pub async fn connect(url: &str, origin: &str, tls: &TlsConnector) -> Result<Ws, String> {
    let rest = url.strip_prefix("wss://").ok_or("the URL must be wss://")?;
    let authority = rest.split('/').next().unwrap_or(rest);
    let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h).to_owned();
    let tcp = TcpStream::connect(authority).await.map_err(|e| format!("connect {authority}: {e}"))?;
    tcp.set_nodelay(true).ok();
    let name = ServerName::try_from(host).map_err(|e| e.to_string())?;
    let stream = tls.connect(name, tcp).await.map_err(|e| format!("TLS: {e}"))?;
    let mut request = url.into_client_request().map_err(|e| e.to_string())?;
    request.headers_mut().insert("Origin", origin.parse().map_err(|_| "bad origin")?);
    request.headers_mut().insert("Sec-WebSocket-Protocol", "sip".parse().expect("static"));
    let (ws, _) = tokio_tungstenite::client_async(request, stream).await.map_err(|e| format!("WebSocket: {e}"))?;
    Ok(ws)
}

/// The next SIP response on the connection (requests before registration are not expected).
pub async fn next_response(ws: &mut Ws) -> Result<String, String> {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(20), ws.next()).await.map_err(|_| "no response in 20 s")?;
        match msg {
            Some(Ok(WsMessage::Text(t))) if t.starts_with("SIP/2.0") => return Ok(t.to_string()),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err("closed".into()),
        }
    }
}
