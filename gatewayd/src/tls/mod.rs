//! TLS material: certificates and keys from PEM files or generated self-signed for lab use,
//! server configs for rustls with TLS 1.2/1.3 only. It must not open sockets.
