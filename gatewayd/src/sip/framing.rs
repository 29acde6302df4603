//! Message boundaries and RFC 5626 CRLF keepalives.
//!
//! On WebSocket (RFC 7118) and UDP one frame or datagram is one message, so `classify_frame`
//! only has to tell keepalives from messages. On TCP the bytes are a stream: `StreamFramer`
//! cuts it at the end of the header block plus Content-Length (RFC 3261 section 18.3) and pulls
//! out the keepalives between messages. Its buffer is bounded so a peer cannot make it grow.

/// RFC 5626 section 4.4.1: a client sends CRLF CRLF ("ping"), the server answers CRLF ("pong").
pub const PING: &[u8] = b"\r\n\r\n";
pub const PONG: &[u8] = b"\r\n";

/// What one WebSocket frame or datagram carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A keepalive ping: send `PONG` back.
    Ping,
    /// A lone CRLF (a pong, or padding): nothing to do.
    Pong,
    /// A SIP message for `message::parse`.
    Message(&'a [u8]),
}

/// Classifies one complete WebSocket frame or datagram.
pub fn classify_frame(frame: &[u8]) -> Frame<'_> {
    if frame == PING {
        Frame::Ping
    } else if frame.iter().all(|b| *b == b'\r' || *b == b'\n') {
        Frame::Pong
    } else {
        Frame::Message(frame)
    }
}

/// What the stream framer found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamItem {
    Ping,
    Pong,
    Message(Vec<u8>),
}

/// The stream cannot be framed any more; the driver should close the connection (after a 513 for
/// `TooLarge` when it can).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    #[error("message exceeds {limit} bytes")]
    TooLarge { limit: usize },
    #[error("unreadable Content-Length in stream")]
    BadContentLength,
}

impl FramingError {
    pub fn status_code(&self) -> u16 {
        match self {
            FramingError::TooLarge { .. } => 513,
            FramingError::BadContentLength => 400,
        }
    }
}

/// Cuts a byte stream into SIP messages and keepalives.
#[derive(Debug)]
pub struct StreamFramer {
    buffer: Vec<u8>,
    max_message: usize,
}

impl StreamFramer {
    /// `max_message` bounds one message (headers and body) and therefore the buffer.
    pub fn new(max_message: usize) -> Self {
        StreamFramer {
            buffer: Vec::new(),
            max_message,
        }
    }

    /// Appends received bytes. Fails when more is buffered than one message may take.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), FramingError> {
        if self.buffer.len() + bytes.len() > self.max_message.saturating_mul(2) {
            return Err(FramingError::TooLarge {
                limit: self.max_message,
            });
        }
        self.buffer.extend_from_slice(bytes);
        Ok(())
    }

    /// Bytes received but not yet returned.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// The bytes received but not yet returned: after a `FramingError`, the start of the message
    /// that could not be framed, for the refusal a driver sends before closing.
    pub fn pending(&self) -> &[u8] {
        &self.buffer
    }

    /// The next complete item, `Ok(None)` when more bytes are needed.
    pub fn next_item(&mut self) -> Result<Option<StreamItem>, FramingError> {
        if self.buffer.starts_with(PING) {
            self.buffer.drain(..PING.len());
            return Ok(Some(StreamItem::Ping));
        }
        if self.buffer.starts_with(PONG) {
            // The start of a ping still arriving: wait rather than take it for a pong.
            if PING.starts_with(&self.buffer) {
                return Ok(None);
            }
            self.buffer.drain(..PONG.len());
            return Ok(Some(StreamItem::Pong));
        }
        let Some(head_end) = find(&self.buffer, b"\r\n\r\n") else {
            if self.buffer.len() > self.max_message {
                return Err(FramingError::TooLarge {
                    limit: self.max_message,
                });
            }
            return Ok(None);
        };
        let body_start = head_end + 4;
        let body_len = content_length(&self.buffer[..head_end])?;
        // Saturating: a Content-Length near usize::MAX must not wrap to a short message.
        let total = body_start.saturating_add(body_len);
        if total > self.max_message {
            return Err(FramingError::TooLarge {
                limit: self.max_message,
            });
        }
        if self.buffer.len() < total {
            return Ok(None);
        }
        let message: Vec<u8> = self.buffer.drain(..total).collect();
        Ok(Some(StreamItem::Message(message)))
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Content-Length (or compact `l`) from a header block; absent means an empty body.
fn content_length(head: &[u8]) -> Result<usize, FramingError> {
    for line in head.split(|b| *b == b'\n') {
        let line = String::from_utf8_lossy(line);
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("l") {
            return value
                .trim()
                .parse()
                .map_err(|_| FramingError::BadContentLength);
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTIONS: &[u8] = b"OPTIONS sip:x SIP/2.0\r\nContent-Length: 4\r\n\r\nbody";

    /// Found by the `sip_stream` fuzz target: `Content-Length: 18446744073709551615` overflowed
    /// the end of the message (a panic with overflow checks, a message cut inside its header
    /// without them).
    #[test]
    fn a_huge_content_length_is_too_large_not_a_wrap() {
        let mut f = StreamFramer::new(1024);
        f.push(b"OPTIONS sip:x SIP/2.0\r\nContent-Length: 18446744073709551615\r\n\r\nbody").unwrap();
        assert_eq!(f.next_item(), Err(FramingError::TooLarge { limit: 1024 }));
    }

    #[test]
    fn frames_are_classified() {
        assert_eq!(classify_frame(b"\r\n\r\n"), Frame::Ping);
        assert_eq!(classify_frame(b"\r\n"), Frame::Pong);
        assert_eq!(classify_frame(OPTIONS), Frame::Message(OPTIONS));
    }

    #[test]
    fn stream_yields_pings_and_messages_split_anywhere() {
        let mut stream = Vec::new();
        stream.extend_from_slice(PING);
        stream.extend_from_slice(OPTIONS);
        stream.extend_from_slice(PONG);
        stream.extend_from_slice(OPTIONS);
        for split in 1..stream.len() {
            let mut framer = StreamFramer::new(1024);
            let mut items = Vec::new();
            for chunk in [&stream[..split], &stream[split..]] {
                framer.push(chunk).unwrap();
                while let Some(item) = framer.next_item().unwrap() {
                    items.push(item);
                }
            }
            let message = StreamItem::Message(OPTIONS.to_vec());
            let expected = vec![StreamItem::Ping, message.clone(), StreamItem::Pong, message];
            assert_eq!(items, expected, "split at {split}");
            assert_eq!(framer.buffered(), 0);
        }
    }

    #[test]
    fn a_message_without_content_length_has_no_body() {
        let mut framer = StreamFramer::new(1024);
        framer
            .push(b"BYE sip:x SIP/2.0\r\nl: 0\r\n\r\nBYE sip:y SIP/2.0\r\n\r\n")
            .unwrap();
        assert!(
            matches!(framer.next_item(), Ok(Some(StreamItem::Message(m))) if m.ends_with(b"l: 0\r\n\r\n"))
        );
        assert!(
            matches!(framer.next_item(), Ok(Some(StreamItem::Message(m))) if m.starts_with(b"BYE sip:y"))
        );
    }

    #[test]
    fn oversized_messages_and_endless_headers_are_refused() {
        let mut framer = StreamFramer::new(64);
        framer
            .push(b"INVITE sip:x SIP/2.0\r\nContent-Length: 1000\r\n\r\n")
            .unwrap();
        let error = framer.next_item().unwrap_err();
        assert_eq!(error, FramingError::TooLarge { limit: 64 });
        assert_eq!(error.status_code(), 513);
        let mut framer = StreamFramer::new(64);
        framer.push(&[b'a'; 100]).unwrap();
        assert!(framer.next_item().is_err());
        assert!(
            framer.push(&[b'a'; 100]).is_err(),
            "the buffer stays bounded"
        );
    }

    #[test]
    fn an_unreadable_content_length_is_an_error() {
        let mut framer = StreamFramer::new(1024);
        framer
            .push(b"INFO sip:x SIP/2.0\r\nContent-Length: lots\r\n\r\n")
            .unwrap();
        assert_eq!(framer.next_item(), Err(FramingError::BadContentLength));
    }
}
