//! Observability: logging to journald or stderr, metrics, call detail records, the admin
//! endpoint. It reads state from the other modules and never changes it.
