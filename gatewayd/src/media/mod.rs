//! The media bridge: per call, one DTLS-SRTP/ICE leg toward the browser and one plain RTP leg
//! toward the SIP server, audio forwarded both ways, statistics and the echo endpoint.
//! It must not speak SIP: call control hands it SDP and directions.
//!
//! Layout: sans-IO cores (`browser` wraps str0m for ICE-lite/DTLS-SRTP, `internal` is the plain
//! RTP leg, `call` joins them and rewrites numbering, `transcode` turns Opus into G.711 and back
//! when the two legs do not share a codec) driven by worker threads (`driver`), one per CPU by
//! default, each owning a shard of the calls with their sockets and timers (`timers`) and
//! copying RTCP into the `tap` while asked to. `shards` holds what they share at call setup
//! only (placement, the call limit, the port pools); `routes` splits the one shared public
//! port between them. The async handles in `api` talk to a call's worker over its bounded
//! command queue; changes to calls that find it full are held per call (`held`), not lost.
//! It must not touch SIP, the firewall or the profile file.

mod api;
pub(crate) mod browser;
pub(crate) mod call;
mod cert;
mod commands;
mod config;
mod driver;
mod dtls;
mod error;
mod g711;
mod held;
pub(crate) mod internal;
mod ports;
mod rtcp;
mod rtcp_wire;
mod routes;
mod rtp;
pub(crate) mod sdp_plain;
mod shards;
mod sockets;
mod stats;
mod tap;
mod timers;
mod transcode;

pub use api::{CallMedia, EchoCall, EngineStatus, MediaEngine, MediaEvent, Side};
pub use config::{AudioCodec, DtlsIdentity, MediaConfig, PublicAddr};
pub use error::MediaError;
pub use sdp_plain::Direction;
pub use tap::{RtcpSeen, RtcpTap};
pub use stats::{mos, mos_with, CallStats, ForwardingLatency, Impairment, LegStats, G711, OPUS};
