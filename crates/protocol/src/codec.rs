//! Line framing: one JSON value per `\n`-terminated line, bounded in length.

use serde::{Serialize, de::DeserializeOwned};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};

use crate::MAX_LINE_BYTES;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("protocol line of more than {limit} bytes rejected")]
    TooLong { limit: usize },
    #[error("malformed protocol line ({reason}): {snippet}")]
    Malformed { reason: String, snippet: String },
    #[error("reading the protocol stream failed: {0}")]
    Io(#[from] std::io::Error),
}

impl ReadError {
    /// Whether the stream can still be read after this error (a bad line is skipped; a
    /// broken pipe is not recoverable).
    pub fn is_recoverable(&self) -> bool {
        !matches!(self, ReadError::Io(_))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("encoding a protocol message failed: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("protocol message of {len} bytes exceeds the {limit}-byte line limit")]
    TooLong { len: usize, limit: usize },
    #[error("writing the protocol stream failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Parses one line (without its newline).
pub fn decode_line<T: DeserializeOwned>(line: &[u8]) -> Result<T, ReadError> {
    if line.len() > MAX_LINE_BYTES {
        return Err(ReadError::TooLong {
            limit: MAX_LINE_BYTES,
        });
    }
    serde_json::from_slice(line).map_err(|e| ReadError::Malformed {
        reason: e.to_string(),
        snippet: snippet(line),
    })
}

/// Serializes one message as a line, newline included.
pub fn encode_line<T: Serialize>(msg: &T) -> Result<Vec<u8>, WriteError> {
    let mut buf = serde_json::to_vec(msg)?;
    if buf.len() > MAX_LINE_BYTES {
        return Err(WriteError::TooLong {
            len: buf.len(),
            limit: MAX_LINE_BYTES,
        });
    }
    buf.push(b'\n');
    Ok(buf)
}

fn snippet(line: &[u8]) -> String {
    let cut = &line[..line.len().min(120)];
    String::from_utf8_lossy(cut).into_owned()
}

/// The line buffer a reader starts with, and shrinks back to after a long line.
const LINE_BUFFER: usize = 4096;
/// A buffer grown past this by one long line is given back before the next line: a host
/// holds a reader per live agent, and one 4 MB answer each must not stay resident.
const LINE_BUFFER_KEPT: usize = 64 * 1024;

/// Reads messages line by line. An oversized line is skipped up to its end without being
/// held in memory, so a peer cannot make us allocate more than [`MAX_LINE_BYTES`].
pub struct LineReader<R> {
    inner: R,
    buf: Vec<u8>,
}

impl<R: AsyncBufRead + Unpin> LineReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            buf: Vec::with_capacity(LINE_BUFFER),
        }
    }

    /// The next message; `Ok(None)` at end of stream. A malformed or oversized line
    /// returns a recoverable error and the next call reads the line after it.
    pub async fn next<T: DeserializeOwned>(&mut self) -> Result<Option<T>, ReadError> {
        loop {
            self.buf.clear();
            if self.buf.capacity() > LINE_BUFFER_KEPT {
                self.buf.shrink_to(LINE_BUFFER);
            }
            let mut too_long = false;
            loop {
                let available = self.inner.fill_buf().await?;
                if available.is_empty() {
                    // End of stream; a final unterminated line still counts.
                    if self.buf.is_empty() && !too_long {
                        return Ok(None);
                    }
                    break;
                }
                let (chunk, found_newline) = match available.iter().position(|&b| b == b'\n') {
                    Some(i) => (&available[..i], Some(i)),
                    None => (available, None),
                };
                if !too_long {
                    if self.buf.len() + chunk.len() > MAX_LINE_BYTES {
                        too_long = true;
                        self.buf.clear();
                    } else {
                        self.buf.extend_from_slice(chunk);
                    }
                }
                let consumed = found_newline.map_or(chunk.len(), |i| i + 1);
                self.inner.consume(consumed);
                if found_newline.is_some() {
                    break;
                }
            }
            if too_long {
                return Err(ReadError::TooLong {
                    limit: MAX_LINE_BYTES,
                });
            }
            let line = trim_cr(&self.buf);
            if line.iter().all(u8::is_ascii_whitespace) {
                continue; // blank lines are keep-alives, not errors
            }
            return decode_line(line).map(Some);
        }
    }
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Writes messages one line each and flushes, so the peer sees every message at once.
pub struct LineWriter<W> {
    inner: W,
}

impl<W: AsyncWrite + Unpin> LineWriter<W> {
    pub fn new(inner: W) -> Self {
        Self { inner }
    }

    pub async fn send<T: Serialize>(&mut self, msg: &T) -> Result<(), WriteError> {
        let line = encode_line(msg)?;
        self.inner.write_all(&line).await?;
        self.inner.flush().await?;
        Ok(())
    }

    pub fn into_inner(self) -> W {
        self.inner
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AgentMessage, HostMessage, LogLevel};
    use tokio::io::BufReader;

    #[tokio::test]
    async fn round_trips_messages_and_skips_bad_lines() {
        let good = encode_line(&AgentMessage::Log {
            level: LogLevel::Info,
            message: "hi".into(),
        })
        .unwrap();
        let mut input = Vec::new();
        input.extend_from_slice(b"{not json\n");
        input.extend_from_slice(b"\n");
        input.extend_from_slice(&good);
        input.extend_from_slice(b"{\"type\":\"no_such_kind\"}\n");
        input.extend_from_slice(&good);
        let mut reader = LineReader::new(BufReader::new(&input[..]));

        let err = reader.next::<AgentMessage>().await.unwrap_err();
        assert!(err.is_recoverable());
        assert!(err.to_string().contains("malformed"), "{err}");
        assert!(matches!(
            reader.next::<AgentMessage>().await.unwrap(),
            Some(AgentMessage::Log { .. })
        ));
        let err = reader.next::<AgentMessage>().await.unwrap_err();
        assert!(err.to_string().contains("no_such_kind"), "{err}");
        assert!(reader.next::<AgentMessage>().await.unwrap().is_some());
        assert!(reader.next::<AgentMessage>().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_long_line_does_not_stay_in_memory() {
        let long = encode_line(&AgentMessage::Log {
            level: LogLevel::Info,
            message: "y".repeat(2 * 1024 * 1024),
        })
        .unwrap();
        let mut input = long.clone();
        input.extend_from_slice(&encode_line(&HostMessage::Shutdown).unwrap());
        let mut reader = LineReader::new(BufReader::new(&input[..]));
        assert!(matches!(
            reader.next::<AgentMessage>().await.unwrap(),
            Some(AgentMessage::Log { message, .. }) if message.len() == 2 * 1024 * 1024
        ));
        assert!(reader.buf.capacity() >= long.len() - 1);
        assert_eq!(
            reader.next::<HostMessage>().await.unwrap(),
            Some(HostMessage::Shutdown)
        );
        assert!(
            reader.buf.capacity() <= LINE_BUFFER_KEPT,
            "the 2 MB line's buffer is still held: {} bytes",
            reader.buf.capacity()
        );
    }

    #[tokio::test]
    async fn oversized_line_is_rejected_and_stream_continues() {
        let mut input = vec![b'x'; MAX_LINE_BYTES + 10];
        input.push(b'\n');
        input.extend_from_slice(&encode_line(&HostMessage::Shutdown).unwrap());
        // A small buffer forces the reader through many partial fills.
        let mut reader = LineReader::new(BufReader::with_capacity(1024, &input[..]));
        let err = reader.next::<HostMessage>().await.unwrap_err();
        assert!(matches!(err, ReadError::TooLong { .. }));
        assert_eq!(
            reader.next::<HostMessage>().await.unwrap(),
            Some(HostMessage::Shutdown)
        );
    }

    #[test]
    fn encoder_refuses_oversized_messages() {
        let huge = AgentMessage::TextDelta {
            turn_id: "t".into(),
            text: "y".repeat(MAX_LINE_BYTES),
        };
        assert!(matches!(
            encode_line(&huge),
            Err(WriteError::TooLong { .. })
        ));
    }

    #[test]
    fn wire_format_is_tagged_snake_case() {
        let line = encode_line(&HostMessage::Shutdown).unwrap();
        assert_eq!(line, b"{\"type\":\"shutdown\"}\n");
        let req: AgentMessage = decode_line(
            br#"{"type":"request","request_id":"r1","turn_id":"t1","action":{"action":"send_message","text":"hey"}}"#,
        )
        .unwrap();
        assert!(matches!(req, AgentMessage::Request(_)));
    }
}
