//! A small `text/event-stream` parser following the WHATWG rules: lines end at `\r\n`, `\r`
//! or `\n`; `data:` lines of one event are joined with `\n`; `event:` names the event
//! (`message` when absent); `id:` sets the last event id; lines starting with `:` are
//! comments; a blank line ends the event (an event without data is dropped); a leading
//! byte-order mark is skipped. Bytes may arrive cut anywhere, inside a UTF-8 character or
//! between a `\r` and its `\n`. An event the stream ends in the middle of is discarded.
//!
//! Hand-written because the model streams need only this much and the crate we used for it
//! is no longer maintained.

use std::collections::VecDeque;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};

/// One dispatched event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, `message` when the event had none.
    pub event: String,
    /// The `data:` lines joined with `\n`.
    pub data: String,
    /// The last `id:` seen on the stream so far.
    pub id: String,
}

/// The event type of an event without an `event:` field.
const DEFAULT_EVENT: &str = "message";

/// The UTF-8 byte-order mark, skipped at the start of the stream.
const BOM: &[u8] = "\u{feff}".as_bytes();

/// Incremental parser: feed it bytes as they arrive, take the events that completed.
#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of the line not yet ended (kept as bytes so a cut UTF-8 character joins up).
    line: Vec<u8>,
    /// The previous byte ended a line with `\r`: a `\n` right after it belongs to that end.
    after_cr: bool,
    /// The first line was seen (the BOM is only looked for before it).
    started: bool,
    event: String,
    data: String,
    last_id: String,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses `chunk` and appends every event it completes to `out`.
    pub fn push(&mut self, mut chunk: &[u8], out: &mut VecDeque<SseEvent>) {
        while !chunk.is_empty() {
            if self.after_cr {
                self.after_cr = false;
                if chunk[0] == b'\n' {
                    chunk = &chunk[1..];
                    continue;
                }
            }
            match chunk.iter().position(|&b| b == b'\r' || b == b'\n') {
                Some(end) => {
                    self.line.extend_from_slice(&chunk[..end]);
                    self.after_cr = chunk[end] == b'\r';
                    chunk = &chunk[end + 1..];
                    self.end_line(out);
                }
                None => {
                    self.line.extend_from_slice(chunk);
                    chunk = &[];
                }
            }
        }
    }

    fn end_line(&mut self, out: &mut VecDeque<SseEvent>) {
        let mut bytes = std::mem::take(&mut self.line);
        if !self.started {
            self.started = true;
            if bytes.starts_with(BOM) {
                bytes.drain(..BOM.len());
            }
        }
        // The stream is UTF-8 by definition; invalid bytes decode to U+FFFD as in browsers.
        let line = String::from_utf8_lossy(&bytes);
        self.process_line(&line, out);
    }

    fn process_line(&mut self, line: &str, out: &mut VecDeque<SseEvent>) {
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => value.clone_into(&mut self.event),
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
            }
            "id" if !value.contains('\0') => value.clone_into(&mut self.last_id),
            // `retry` only matters to a client that reconnects; other fields are ignored.
            _ => {}
        }
    }

    fn dispatch(&mut self, out: &mut VecDeque<SseEvent>) {
        let event = std::mem::take(&mut self.event);
        let mut data = std::mem::take(&mut self.data);
        if data.is_empty() {
            return;
        }
        if data.ends_with('\n') {
            data.pop();
        }
        out.push_back(SseEvent {
            event: if event.is_empty() {
                DEFAULT_EVENT.to_owned()
            } else {
                event
            },
            data,
            id: self.last_id.clone(),
        });
    }
}

/// The events of a byte stream (an HTTP response body).
pub struct SseEvents<S> {
    body: S,
    parser: SseParser,
    ready: VecDeque<SseEvent>,
    ended: bool,
}

impl<S, E> SseEvents<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    pub fn new(body: S) -> Self {
        Self {
            body,
            parser: SseParser::new(),
            ready: VecDeque::new(),
            ended: false,
        }
    }

    /// The next complete event, `None` at the end of the body, or the body's read error.
    pub async fn next(&mut self) -> Option<Result<SseEvent, E>> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Some(Ok(event));
            }
            if self.ended {
                return None;
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.parser.push(&chunk, &mut self.ready),
                Some(Err(e)) => return Some(Err(e)),
                None => self.ended = true,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_chunks(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut parser = SseParser::new();
        let mut out = VecDeque::new();
        for chunk in chunks {
            parser.push(chunk, &mut out);
        }
        out.into_iter().collect()
    }

    fn parse(text: &str) -> Vec<SseEvent> {
        parse_chunks(&[text.as_bytes()])
    }

    fn message(data: &str) -> SseEvent {
        SseEvent {
            event: "message".into(),
            data: data.into(),
            id: String::new(),
        }
    }

    #[test]
    fn data_lines_are_joined_with_newlines() {
        assert_eq!(
            parse("data: a\ndata: b\ndata:\n\n"),
            vec![message("a\nb\n")]
        );
        assert_eq!(parse("data: {\"x\":1}\n\n"), vec![message("{\"x\":1}")]);
    }

    #[test]
    fn only_one_space_after_the_colon_is_removed() {
        assert_eq!(
            parse("data:x\n\ndata:  y\n\n"),
            vec![message("x"), message(" y")]
        );
    }

    #[test]
    fn a_field_without_colon_has_an_empty_value() {
        assert_eq!(parse("data\n\n"), vec![message("")]);
    }

    #[test]
    fn event_names_the_event_and_defaults_to_message() {
        let events = parse("event: content_block_delta\ndata: 1\n\ndata: 2\n\n");
        assert_eq!(events[0].event, "content_block_delta");
        assert_eq!(events[0].data, "1");
        assert_eq!(events[1], message("2"));
    }

    #[test]
    fn id_is_the_last_event_id_and_persists() {
        let events = parse("id: 7\ndata: a\n\ndata: b\n\nid: 8\u{0}\ndata: c\n\nid\ndata: d\n\n");
        let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
        // An id containing NUL is ignored; a bare `id` resets it.
        assert_eq!(ids, ["7", "7", "7", ""]);
    }

    #[test]
    fn comments_and_unknown_fields_are_ignored() {
        assert_eq!(
            parse(": keep-alive\nretry: 100\nfoo: bar\ndata: x\n:\n\n"),
            vec![message("x")]
        );
    }

    #[test]
    fn every_line_ending_works() {
        let expected = vec![message("a\nb"), message("c")];
        assert_eq!(parse("data: a\ndata: b\n\ndata: c\n\n"), expected);
        assert_eq!(parse("data: a\r\ndata: b\r\n\r\ndata: c\r\n\r\n"), expected);
        assert_eq!(parse("data: a\rdata: b\r\rdata: c\r\r"), expected);
        assert_eq!(parse("data: a\rdata: b\n\r\ndata: c\r\n\n"), expected);
    }

    #[test]
    fn an_event_ends_only_at_a_blank_line() {
        assert_eq!(parse("data: a\n"), vec![]);
        assert_eq!(parse("data: a\n\n\n\ndata: b"), vec![message("a")]);
    }

    #[test]
    fn an_event_without_data_is_not_dispatched_and_its_type_resets() {
        assert_eq!(parse("event: ping\n\ndata: x\n\n"), vec![message("x")]);
        assert_eq!(parse(": only a comment\n\n"), vec![]);
    }

    #[test]
    fn a_leading_bom_is_skipped_once() {
        assert_eq!(parse("\u{feff}data: a\n\n"), vec![message("a")]);
        // Cut inside the BOM.
        assert_eq!(
            parse_chunks(&[&[0xEF], &[0xBB, 0xBF], b"data: a\n\n"]),
            vec![message("a")]
        );
        // Only at the very start: later it is part of the line (an unknown field here).
        assert_eq!(parse("data: a\n\n\u{feff}data: b\n\n"), vec![message("a")]);
    }

    #[test]
    fn a_chunk_may_end_inside_a_utf8_character() {
        let text = "data: é€😀\n\n".as_bytes();
        for cut in 0..text.len() {
            assert_eq!(
                parse_chunks(&[&text[..cut], &text[cut..]]),
                vec![message("é€😀")],
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn a_chunk_may_end_between_cr_and_lf() {
        assert_eq!(
            parse_chunks(&[b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"]),
            vec![message("a\nb")]
        );
        // A `\r` at a chunk end followed by another line, not `\n`.
        assert_eq!(
            parse_chunks(&[b"data: a\r", b"\r", b"data: b\r\r"]),
            vec![message("a"), message("b")]
        );
    }

    #[test]
    fn byte_at_a_time_equals_all_at_once() {
        let text =
            "\u{feff}: hi\r\nevent: e\r\nid: 1\r\ndata: x\r\ndata: ü\r\n\r\ndata: y\rdata: z\n\n";
        let bytes = text.as_bytes();
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(parse_chunks(&singles), parse(text));
        assert_eq!(parse(text).len(), 2);
    }

    #[test]
    fn invalid_utf8_becomes_the_replacement_character() {
        assert_eq!(
            parse_chunks(&[b"data: a\xFFb\n\n"]),
            vec![message("a\u{FFFD}b")]
        );
    }

    #[tokio::test]
    async fn events_are_read_from_a_byte_stream_and_errors_pass_through() {
        let chunks: Vec<Result<Bytes, &str>> = vec![
            Ok(Bytes::from_static(b"data: one\n")),
            Ok(Bytes::from_static(b"\ndata: two\n\n")),
            Err("cut"),
        ];
        let mut events = SseEvents::new(futures_util::stream::iter(chunks));
        assert_eq!(events.next().await, Some(Ok(message("one"))));
        assert_eq!(events.next().await, Some(Ok(message("two"))));
        assert_eq!(events.next().await, Some(Err("cut")));
        assert_eq!(events.next().await, None);
    }
}
