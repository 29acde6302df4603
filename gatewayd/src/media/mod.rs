//! The media bridge: per call, one DTLS-SRTP/ICE leg toward the browser and one plain RTP leg
//! toward the SIP server, audio forwarded both ways, statistics and the echo endpoint.
//! It must not speak SIP: call control hands it SDP and directions.
