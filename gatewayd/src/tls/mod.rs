//! TLS material: certificates and keys from PEM files or generated self-signed for lab use,
//! server configs for rustls with TLS 1.2/1.3 only, and the ACME client that obtains the
//! public certificate. Only `acme` opens connections (to the CA); nothing here serves.

pub mod acme;
mod material;
pub mod renewal;

pub use material::{check_pair, load_or_create_self_signed, server_config, CertifiedPem, PairError};
