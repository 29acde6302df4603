//! SIP message parsing and framing: datagrams (and WebSocket frames, which are framed the same
//! way) and TCP streams.

use rsip::SipMessage;

use super::session::Calls;
use super::Input;
use crate::sip::framing::{classify_frame, Frame, StreamFramer, StreamItem, PING, PONG};
use crate::sip::message::{self, bad_request_for};

/// One datagram from the internal side: keepalive or message; what fails to parse gets the 400
/// a driver would send; what parses goes to call control as if from the SIP server.
pub fn sip_datagram(data: &[u8]) {
    let Frame::Message(bytes) = classify_frame(data) else { return };
    match message::parse(bytes) {
        Ok(parsed) => {
            check_accepted(&parsed);
            let mut calls = Calls::new();
            calls.from_upstream(parsed);
        }
        Err(error) => check_refusal(bytes, &error),
    }
}

/// What `parse` accepts carries what the transaction layer relies on, and prints back to a
/// message `parse` accepts again.
fn check_accepted(parsed: &SipMessage) {
    if let SipMessage::Response(r) = parsed {
        assert!((100..=699).contains(&r.status_code.code()), "accepted status {}", r.status_code.code());
    }
    let text = parsed.to_string();
    if let Err(e) = message::parse(text.as_bytes()) {
        panic!("accepted message does not parse once printed: {e}\n{text}");
    }
}

/// A refusal names a status and a clean reason; the 400 for it, when there is one, is a
/// well-formed head: a status line, header lines, an empty body.
pub(crate) fn check_refusal(bytes: &[u8], error: &message::ParseError) {
    let status = error.status_code();
    assert!(status == 400 || status == 501, "refusal status {status}");
    let reason = error.reason_phrase();
    assert!(!reason.chars().any(char::is_control) && reason.chars().count() <= 120, "reason phrase {reason:?}");
    let Some(response) = bad_request_for(bytes, error, "fuzz400") else { return };
    let text = response.to_string();
    let (head, body) = text.split_once("\r\n\r\n").expect("a response ends its head");
    assert!(body.is_empty(), "the 400 has no body: {text:?}");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    assert!(status_line.starts_with(&format!("SIP/2.0 {status} ")), "status line {status_line:?}");
    for line in lines {
        assert!(!line.contains(['\r', '\n']), "a header line holds a line break: {line:?}");
        let (name, _) = line.split_once(':').unwrap_or_else(|| panic!("not a header line: {line:?}"));
        assert!(!name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'), "header name {name:?}");
    }
}

/// One TCP stream: the first byte picks the framer's limit and how the rest arrives in chunks.
/// Fed byte by byte and in the chunks, the framer must give the same items, lose or invent no
/// byte, and stay within its bound.
pub fn sip_stream(data: &[u8]) {
    let mut input = Input::new(data);
    let shape = input.byte();
    let stream = input.rest();
    let max = if shape & 0x80 != 0 { 256 } else { 65_535 };
    let chunk = usize::from(shape & 0x7f) + 1;
    let (fine, fine_err) = frame_all(stream, 1, max);
    let (coarse, coarse_err) = frame_all(stream, chunk, max);
    let n = fine.len().min(coarse.len());
    assert_eq!(fine[..n], coarse[..n], "items depend on how the stream was cut (chunks of {chunk})");
    if fine_err.is_none() && coarse_err.is_none() {
        assert_eq!(fine.len(), coarse.len(), "one cut of the stream gave more items");
    }
    for item in &coarse {
        if let StreamItem::Message(bytes) = item {
            match message::parse(bytes) {
                Ok(parsed) => check_accepted(&parsed),
                Err(error) => check_refusal(bytes, &error),
            }
        }
    }
}

/// Feeds `stream` in chunks of `chunk` bytes and takes every item; checks the framer's bound and
/// that items plus what is still buffered are exactly what was pushed.
fn frame_all(stream: &[u8], chunk: usize, max: usize) -> (Vec<StreamItem>, Option<String>) {
    let mut framer = StreamFramer::new(max);
    let mut items = Vec::new();
    let mut taken = 0usize;
    for (i, piece) in stream.chunks(chunk).enumerate() {
        if let Err(e) = framer.push(piece) {
            return (items, Some(e.to_string()));
        }
        let pushed = (i * chunk + piece.len()).min(stream.len());
        loop {
            match framer.next_item() {
                Ok(Some(item)) => {
                    let bytes: &[u8] = match &item {
                        StreamItem::Ping => PING,
                        StreamItem::Pong => PONG,
                        StreamItem::Message(m) => {
                            assert!(m.len() <= max, "a message of {} bytes passed a limit of {max}", m.len());
                            m
                        }
                    };
                    assert_eq!(&stream[taken..taken + bytes.len()], bytes, "an item is not the next bytes of the stream");
                    taken += bytes.len();
                    items.push(item);
                }
                Ok(None) => break,
                Err(e) => return (items, Some(e.to_string())),
            }
        }
        assert_eq!(taken + framer.buffered(), pushed, "bytes lost or invented");
        assert!(framer.buffered() <= max.saturating_mul(2), "the framer holds {} bytes", framer.buffered());
    }
    (items, None)
}
