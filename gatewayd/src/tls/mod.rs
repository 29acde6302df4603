//! TLS material: certificates and keys from PEM files or generated self-signed for lab use,
//! server configs for rustls with TLS 1.2/1.3 only, and the ACME client that obtains the
//! public certificate. Only `acme` opens connections (to the CA); nothing here serves.

pub mod acme;
pub mod alpn_challenge;
mod material;
pub mod renewal;

pub use material::{check_pair, load_or_create_self_signed, server_config, server_config_answering_tls_alpn, CertifiedPem, PairError};
