//! Turns bytes from a file or stdin into events, whatever shape real users have on disk.
//!
//! Recognised, by the first non-blank byte and then per frame:
//! - JSON Lines: one Event per line (the fast path: each line is decoded once, in place);
//! - `kubectl get events -w -o json`: watch frames `{"type": ..., "object": {...}}`, one per
//!   line or pretty-printed over many lines;
//! - JSON documents: a bare array, `kind: EventList` / `kind: List`, `{metadata, items}`, the
//!   Go-struct form with `Items`, or a single Event;
//! - YAML, including multi-document streams (`---`) and `kubectl get events -o yaml`.
//!
//! The reader never gives up on an input: a malformed line or item is reported with its line
//! number and skipped, a truncated document yields every item before the damage, invalid
//! UTF-8 is replaced and reported, and oversized messages are truncated and reported. Memory
//! is bounded by `max_document_bytes` (one frame or document held at a time), so JSON Lines
//! and watch streams of any length stream through a fixed buffer.

use std::io::{self, BufRead};

use serde::Deserialize;
use serde::de::{DeserializeSeed, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::event::{Event, RawEvent};

/// Bounds the reader enforces.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest frame (line, pretty-printed object or whole document) held in memory.
    pub max_document_bytes: usize,
    /// Messages longer than this are truncated (with a warning).
    pub max_message_bytes: usize,
}

/// One thing the reader found.
// Not boxed: events are moved once from here into a batch, and a box would cost an
// allocation per event on the hot path.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Decoded {
    /// An event, and the input line where it starts.
    Event(Event, u64),
    /// A watch frame that carries no news (`DELETED`: TTL expiry; `BOOKMARK`).
    Discarded(u64),
    /// Something was repaired (invalid UTF-8, truncated message); the event is still emitted.
    Warning(u64, String),
    /// Something could not be decoded and was skipped.
    Error(u64, String),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Unknown,
    Json,
    Yaml,
}

/// An incremental reader: feed it with [`Reader::read_available`], end it with [`Reader::finish`].
pub struct Reader<R> {
    input: R,
    limits: Limits,
    mode: Mode,
    /// Line number of the next line to read (1-based).
    line: u64,
    /// Bytes consumed from the input so far.
    offset: u64,
    /// Offset just past the last frame whose events have all been handed out, and its line.
    committed: u64,
    committed_line: u64,
    /// Current line (without the newline); `overflow` when it outgrew the limit.
    line_buf: Vec<u8>,
    overflow: bool,
    /// A frame or document spanning several lines, and the line it started on.
    frame: Vec<u8>,
    frame_line: u64,
    /// Skip lines until a new top-level object starts (after an unrecoverable frame).
    resync: bool,
}

impl<R: BufRead> Reader<R> {
    /// Wraps an input.
    pub fn new(input: R, limits: Limits) -> Self {
        Reader {
            input,
            limits,
            mode: Mode::Unknown,
            line: 1,
            offset: 0,
            committed: 0,
            committed_line: 1,
            line_buf: Vec::new(),
            overflow: false,
            frame: Vec::new(),
            frame_line: 0,
            resync: false,
        }
    }

    /// Starts reading at `offset` (a checkpoint), counting lines from `line`.
    pub fn resume_at(&mut self, offset: u64, line: u64) {
        self.offset = offset;
        self.committed = offset;
        self.committed_line = line;
        self.line = line;
    }

    fn commit(&mut self) {
        self.committed = self.offset;
        self.committed_line = self.line;
    }

    /// Offset just past the last complete frame: a safe place to resume from.
    pub fn committed_offset(&self) -> u64 {
        self.committed
    }

    /// The line at [`Reader::committed_offset`].
    pub fn committed_line(&self) -> u64 {
        self.committed_line
    }

    /// Reads every complete line available now; returns the number of bytes read
    /// (0 at end of input). A partial last line stays buffered until more arrives or
    /// [`Reader::finish`] is called.
    ///
    /// # Errors
    /// I/O errors from the input.
    pub fn read_available(&mut self, out: &mut impl FnMut(Decoded)) -> io::Result<usize> {
        let mut total = 0;
        loop {
            let (consumed, newline) = {
                let frame_len = self.frame.len();
                let max = self.limits.max_document_bytes;
                let (line_buf, overflow) = (&mut self.line_buf, &mut self.overflow);
                let buf = match self.input.fill_buf() {
                    Ok(b) => b,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                if buf.is_empty() {
                    return Ok(total);
                }
                match memchr::memchr(b'\n', buf) {
                    Some(i) => {
                        append_bounded(line_buf, overflow, frame_len, max, &buf[..i]);
                        (i + 1, true)
                    }
                    None => {
                        append_bounded(line_buf, overflow, frame_len, max, buf);
                        (buf.len(), false)
                    }
                }
            };
            self.input.consume(consumed);
            self.offset += consumed as u64;
            total += consumed;
            if newline {
                self.end_line(out);
                // Yield regularly so callers can batch, pace and checkpoint.
                if total >= 1 << 20 {
                    return Ok(total);
                }
            }
        }
    }

    /// Reads the whole input (a file read whole, bytes in memory), then [`Reader::finish`].
    ///
    /// # Errors
    /// I/O errors from the input.
    pub fn read_to_end(&mut self, out: &mut impl FnMut(Decoded)) -> io::Result<()> {
        while self.read_available(out)? > 0 {}
        self.finish(out);
        Ok(())
    }

    /// Handles whatever is left at the true end of the input (a last line without a
    /// newline, an unterminated frame or document).
    pub fn finish(&mut self, out: &mut impl FnMut(Decoded)) {
        if self.offset == 0 && self.mode == Mode::Unknown && self.line_buf.is_empty() {
            out(Decoded::Warning(0, "input is empty".to_owned()));
        }
        if !self.line_buf.is_empty() || self.overflow {
            self.end_line(out);
        }
        if !self.frame.is_empty() {
            match self.mode {
                Mode::Yaml => self.parse_yaml_frame(out),
                _ => {
                    let frame = std::mem::take(&mut self.frame);
                    self.parse_json_frame(&frame, true, out);
                }
            }
        }
        self.commit();
    }

    fn end_line(&mut self, out: &mut impl FnMut(Decoded)) {
        let line_no = self.line;
        self.line += 1;
        let mut line = std::mem::take(&mut self.line_buf);
        if std::mem::take(&mut self.overflow) {
            out(Decoded::Error(
                line_no,
                format!(
                    "frame exceeds max_document_bytes ({} bytes); skipped",
                    self.limits.max_document_bytes
                ),
            ));
            self.frame = Vec::new();
            self.resync = self.mode == Mode::Json;
            self.commit();
            return;
        }
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if self.mode == Mode::Unknown {
            // Editors on some systems start files with a UTF-8 byte order mark.
            if line.starts_with(b"\xEF\xBB\xBF") {
                line.drain(..3);
            }
            let first = line.iter().copied().find(|b| !b.is_ascii_whitespace());
            match first {
                None => {
                    self.commit();
                    self.line_buf = line;
                    self.line_buf.clear();
                    return;
                }
                Some(b'{') | Some(b'[') => self.mode = Mode::Json,
                Some(_) => self.mode = Mode::Yaml,
            }
        }
        match self.mode {
            Mode::Yaml => self.yaml_line(&line, line_no, out),
            _ => self.json_line(&line, line_no, out),
        }
        // Reuse the allocation for the next line.
        line.clear();
        self.line_buf = line;
    }

    fn json_line(&mut self, line: &[u8], line_no: u64, out: &mut impl FnMut(Decoded)) {
        let starts_value = matches!(line.first(), Some(b'{') | Some(b'['));
        if self.resync {
            if !starts_value {
                self.commit();
                return;
            }
            self.resync = false;
        }
        if !self.frame.is_empty() {
            // Inside an object frame, a `{"` at column 0 starts a new top-level value while
            // the previous one never closed. (Array frames hold one item per line often.)
            if self.frame.first() == Some(&b'{')
                && line.first() == Some(&b'{')
                && frame_is_balanced_start(line)
            {
                let frame = std::mem::take(&mut self.frame);
                self.parse_json_frame(&frame, true, out);
            } else {
                self.frame.extend_from_slice(line);
                self.frame.push(b'\n');
                if matches!(line.first(), Some(b'}') | Some(b']')) {
                    let frame = std::mem::take(&mut self.frame);
                    self.parse_json_frame(&frame, false, out);
                }
                return;
            }
        }
        let trimmed = trim_ascii(line);
        if trimmed.is_empty() {
            self.commit();
            return;
        }
        if trimmed[0] == b'{' {
            // Fast path: one line, one event, decoded in place with SIMD. Anything it does
            // not take (lists, whose raw items only serde_json can borrow; errors, which
            // serde_json classifies) goes the general way.
            if let Ok(raw) = sonic_rs::from_slice::<Box<RawEvent<'_>>>(trimmed)
                && raw.items.is_none()
            {
                self.frame_line = line_no;
                self.handle_raw(raw, trimmed, out);
                self.commit();
                return;
            }
            match serde_json::from_slice::<Box<RawEvent<'_>>>(trimmed) {
                Ok(raw) => {
                    self.frame_line = line_no;
                    self.handle_raw(raw, trimmed, out);
                    self.commit();
                    return;
                }
                Err(e) if e.is_eof() => {}
                Err(e) => {
                    if std::str::from_utf8(trimmed).is_err() {
                        let repaired = String::from_utf8_lossy(trimmed).into_owned();
                        if let Ok(raw) = serde_json::from_str::<Box<RawEvent<'_>>>(&repaired) {
                            out(Decoded::Warning(
                                line_no,
                                "invalid UTF-8 replaced with U+FFFD".to_owned(),
                            ));
                            self.frame_line = line_no;
                            self.handle_raw(raw, repaired.as_bytes(), out);
                            self.commit();
                            return;
                        }
                    }
                    out(Decoded::Error(line_no, format!("malformed JSON: {e}")));
                    self.commit();
                    return;
                }
            }
        } else if trimmed[0] != b'[' {
            out(Decoded::Error(
                line_no,
                "unexpected content outside a JSON value; skipped".to_owned(),
            ));
            self.commit();
            return;
        }
        // The start of a multi-line value (or a one-line array).
        self.frame_line = line_no;
        self.frame.extend_from_slice(line);
        self.frame.push(b'\n');
        if trimmed[0] == b'[' && trimmed.last() == Some(&b']') {
            let frame = std::mem::take(&mut self.frame);
            self.parse_json_frame(&frame, false, out);
        }
    }

    /// Parses a buffered multi-line frame. Unless `at_end`, an incomplete value is kept
    /// for more input; at the end it is reported as truncated (after salvaging what it can).
    fn parse_json_frame(&mut self, frame: &[u8], at_end: bool, out: &mut impl FnMut(Decoded)) {
        if trim_ascii(frame).first() == Some(&b'[') {
            let mut items = Vec::new();
            let result = ItemsSeed { out: &mut items }
                .deserialize(&mut serde_json::Deserializer::from_slice(frame));
            match result {
                Err(e) if e.is_eof() && !at_end => self.frame = frame.to_vec(),
                result => {
                    let mut lines = LineCursor::new(frame, self.frame_line);
                    for item in items {
                        let line_no = lines.line_of(item.get().as_bytes());
                        self.decode_item(item, line_no, out);
                    }
                    if let Err(e) = result {
                        out(Decoded::Error(
                            self.frame_line + e.line() as u64 - 1,
                            format!(
                                "malformed or truncated JSON array: {e}; items before it were read"
                            ),
                        ));
                    }
                    self.commit();
                }
            }
            return;
        }
        let mut stream =
            serde_json::Deserializer::from_slice(frame).into_iter::<Box<RawEvent<'_>>>();
        let mut lines = LineCursor::new(frame, self.frame_line);
        loop {
            let start = stream.byte_offset();
            match stream.next() {
                None => break,
                Some(Ok(raw)) => {
                    let end = stream.byte_offset();
                    let saved = self.frame_line;
                    self.frame_line = lines.line_of(&frame[start..end]);
                    self.handle_raw(raw, &frame[start..end], out);
                    self.frame_line = saved;
                }
                Some(Err(e)) if e.is_eof() && !at_end => {
                    self.frame = frame[start..].to_vec();
                    self.frame_line = lines.line_of(&frame[start..]);
                    return;
                }
                Some(Err(e)) => {
                    let salvaged = salvage_items(&frame[start..]);
                    let base = lines.line_of(&frame[start..]);
                    for item in salvaged {
                        let line_no =
                            LineCursor::new(frame, self.frame_line).line_of(item.get().as_bytes());
                        self.decode_item(item, line_no, out);
                    }
                    out(Decoded::Error(
                        base,
                        format!("malformed or truncated JSON value starting on this line ({e})"),
                    ));
                    self.resync = true;
                    break;
                }
            }
        }
        self.commit();
    }

    /// Dispatches a decoded top-level object: a list, a watch frame or one event.
    fn handle_raw(&mut self, raw: Box<RawEvent<'_>>, bytes: &[u8], out: &mut impl FnMut(Decoded)) {
        let line_no = self.frame_line;
        if let Some(items) = raw.items {
            let mut lines = LineCursor::new(bytes, line_no);
            for item in items {
                let item_line = lines.line_of(item.get().as_bytes());
                self.decode_item(item, item_line, out);
            }
            return;
        }
        let frame_type = raw_frame_type(raw.watch_type());
        if let Some(object) = raw.object {
            match frame_type {
                FrameType::News => self.emit(object, line_no, out),
                FrameType::NoNews => out(Decoded::Discarded(line_no)),
                FrameType::Error => out(Decoded::Error(
                    line_no,
                    "watch stream reported an ERROR frame".to_owned(),
                )),
            }
            return;
        }
        self.emit(raw, line_no, out);
    }

    fn decode_item(&mut self, item: &RawValue, line_no: u64, out: &mut impl FnMut(Decoded)) {
        match serde_json::from_str::<Box<RawEvent<'_>>>(item.get()) {
            Ok(raw) => {
                if raw.items.is_some() {
                    out(Decoded::Error(
                        line_no,
                        "nested list inside a list; skipped".to_owned(),
                    ));
                } else {
                    let saved = self.frame_line;
                    self.frame_line = line_no;
                    self.handle_raw(raw, item.get().as_bytes(), out);
                    self.frame_line = saved;
                }
            }
            Err(e) => out(Decoded::Error(line_no, format!("malformed item: {e}"))),
        }
    }

    fn emit(&self, raw: Box<RawEvent<'_>>, line_no: u64, out: &mut impl FnMut(Decoded)) {
        match raw.into_event() {
            Ok(mut event) => {
                if event.message.len() > self.limits.max_message_bytes {
                    let dropped =
                        truncate_message(&mut event.message, self.limits.max_message_bytes);
                    out(Decoded::Warning(
                        line_no,
                        format!("message truncated: {dropped} bytes over max_message_bytes"),
                    ));
                }
                out(Decoded::Event(event, line_no));
            }
            Err(e) => out(Decoded::Error(line_no, e.to_string())),
        }
    }

    // ---- YAML ------------------------------------------------------------------------

    fn yaml_line(&mut self, line: &[u8], line_no: u64, out: &mut impl FnMut(Decoded)) {
        let is_separator =
            line.starts_with(b"---") && line[3..].iter().all(|b| b.is_ascii_whitespace());
        if is_separator || line == b"..." {
            if !self.frame.is_empty() {
                self.parse_yaml_frame(out);
            }
            self.commit();
            return;
        }
        if self.frame.is_empty() {
            self.frame_line = line_no;
        }
        self.frame.extend_from_slice(line);
        self.frame.push(b'\n');
    }

    fn parse_yaml_frame(&mut self, out: &mut impl FnMut(Decoded)) {
        let doc = std::mem::take(&mut self.frame);
        let base = self.frame_line;
        let value: serde_yaml::Value = match serde_yaml::from_slice(&doc) {
            Ok(v) => v,
            Err(e) => {
                let line = e.location().map_or(base, |l| base + l.line() as u64 - 1);
                out(Decoded::Error(line, format!("malformed YAML: {e}")));
                self.commit();
                return;
            }
        };
        if value.is_null() {
            return;
        }
        let items = value.get("items").or_else(|| value.get("Items")).cloned();
        match items {
            Some(serde_yaml::Value::Sequence(items)) => {
                for (i, item) in items.into_iter().enumerate() {
                    match RawEvent::deserialize(item) {
                        Ok(raw) => self.emit(Box::new(raw), base, out),
                        Err(e) => out(Decoded::Error(base, format!("malformed item {i}: {e}"))),
                    }
                }
            }
            Some(_) => out(Decoded::Error(base, "`items` is not a list".to_owned())),
            None => match RawEvent::deserialize(value) {
                Ok(raw) => {
                    self.frame_line = base;
                    self.handle_raw(Box::new(raw), &doc, out);
                }
                Err(e) => out(Decoded::Error(base, format!("malformed event: {e}"))),
            },
        }
        self.commit();
    }
}

enum FrameType {
    News,
    NoNews,
    Error,
}

fn raw_frame_type(t: &str) -> FrameType {
    match t {
        "DELETED" | "BOOKMARK" => FrameType::NoNews,
        "ERROR" => FrameType::Error,
        _ => FrameType::News,
    }
}

/// Appends to the current line unless the frame would outgrow `max`; then only flags it.
fn append_bounded(
    line: &mut Vec<u8>,
    overflow: &mut bool,
    frame_len: usize,
    max: usize,
    bytes: &[u8],
) {
    if *overflow {
        return;
    }
    if line.len() + frame_len + bytes.len() > max {
        *overflow = true;
        *line = Vec::new();
        return;
    }
    line.extend_from_slice(bytes);
}

/// Cuts `message` to at most `max` bytes on a char boundary; returns the bytes removed.
fn truncate_message(message: &mut String, max: usize) -> usize {
    let mut cut = max;
    while !message.is_char_boundary(cut) {
        cut -= 1;
    }
    let dropped = message.len() - cut;
    message.truncate(cut);
    message.push_str(" [truncated]");
    dropped
}

fn trim_ascii(b: &[u8]) -> &[u8] {
    b.trim_ascii()
}

/// True for lines that look like the start of a new top-level value, not a continuation.
fn frame_is_balanced_start(line: &[u8]) -> bool {
    // Pretty-printed values continue with indented lines; a new top-level value starts at
    // column 0 with `{` followed by a key or a newline.
    line.len() == 1 || line.get(1) == Some(&b'"')
}

/// Maps slices of a buffer to line numbers, scanning forward only.
struct LineCursor<'a> {
    buf: &'a [u8],
    pos: usize,
    line: u64,
}

impl<'a> LineCursor<'a> {
    fn new(buf: &'a [u8], first_line: u64) -> Self {
        LineCursor {
            buf,
            pos: 0,
            line: first_line,
        }
    }

    /// Line of the first byte of `slice`, which must lie inside the buffer.
    fn line_of(&mut self, slice: &[u8]) -> u64 {
        let start = (slice.as_ptr() as usize).saturating_sub(self.buf.as_ptr() as usize);
        if start >= self.pos && start <= self.buf.len() {
            self.line += memchr::memchr_iter(b'\n', &self.buf[self.pos..start]).count() as u64;
            self.pos = start;
        }
        self.line
    }
}

/// Collects the elements of a JSON array as raw values, keeping those read before an error.
struct ItemsSeed<'a, 'de> {
    out: &'a mut Vec<&'de RawValue>,
}

impl<'de> DeserializeSeed<'de> for ItemsSeed<'_, 'de> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ItemsSeed<'_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a list of events")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(item) = seq.next_element::<&'de RawValue>()? {
            self.out.push(item);
        }
        Ok(())
    }
}

/// From a damaged object, recovers the complete elements of its `items` / `Items` array.
fn salvage_items(frame: &[u8]) -> Vec<&RawValue> {
    let mut items = Vec::new();
    for key in [&b"\"items\""[..], &b"\"Items\""[..]] {
        if let Some(pos) = memchr::memmem::find(frame, key) {
            let rest = &frame[pos + key.len()..];
            if let Some(open) = memchr::memchr(b'[', rest) {
                let _ = ItemsSeed { out: &mut items }
                    .deserialize(&mut serde_json::Deserializer::from_slice(&rest[open..]));
                break;
            }
        }
    }
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_document_bytes: 1 << 20,
        max_message_bytes: 1024,
    };

    fn read_all(input: &[u8]) -> Vec<Decoded> {
        let mut found = Vec::new();
        let mut r = Reader::new(input, LIMITS);
        while r.read_available(&mut |d| found.push(d)).unwrap() > 0 {}
        r.finish(&mut |d| found.push(d));
        found
    }

    fn summary(found: &[Decoded]) -> (Vec<(String, u64)>, Vec<u64>) {
        let events = found
            .iter()
            .filter_map(|d| match d {
                Decoded::Event(e, l) => Some((e.reason.to_string(), *l)),
                _ => None,
            })
            .collect();
        let errors = found
            .iter()
            .filter_map(|d| match d {
                Decoded::Error(l, _) => Some(*l),
                _ => None,
            })
            .collect();
        (events, errors)
    }

    #[test]
    fn json_lines_with_a_bad_line_in_the_middle() {
        let found = read_all(b"{\"reason\":\"A\"}\n{\"reason\":\n{\"reason\":\"C\"}\n");
        let (events, errors) = summary(&found);
        assert_eq!(events, vec![("A".into(), 1), ("C".into(), 3)]);
        assert_eq!(errors, vec![2]);
    }

    #[test]
    fn pretty_printed_watch_stream() {
        let input = b"{\n  \"type\": \"ADDED\",\n  \"object\": {\"reason\": \"A\"}\n}\n{\n  \"type\": \"DELETED\",\n  \"object\": {\"reason\": \"B\"}\n}\n{\n  \"type\": \"MODIFIED\",\n  \"object\": {\"reason\": \"C\"}\n}\n";
        let found = read_all(input);
        let (events, errors) = summary(&found);
        assert_eq!(events, vec![("A".into(), 1), ("C".into(), 9)]);
        assert!(errors.is_empty());
        assert_eq!(
            found
                .iter()
                .filter(|d| matches!(d, Decoded::Discarded(_)))
                .count(),
            1
        );
    }

    #[test]
    fn truncated_array_keeps_items_before_the_damage() {
        let found = read_all(b"[\n {\"reason\":\"A\"},\n {\"reason\":\"B\"},\n {\"reason\":\"C\"");
        let (events, errors) = summary(&found);
        assert_eq!(events, vec![("A".into(), 2), ("B".into(), 3)]);
        assert_eq!(errors.len(), 1);
    }

    #[test]
    fn arrays_with_one_item_per_line() {
        let found = read_all(b"[{\"reason\":\"A\"},\n{\"reason\":\"B\"},\n{\"reason\":\"C\"}]\n");
        let (events, errors) = summary(&found);
        assert_eq!(
            events,
            vec![("A".into(), 1), ("B".into(), 2), ("C".into(), 3)]
        );
        assert!(errors.is_empty());
    }

    #[test]
    fn byte_order_marks_and_crlf_are_tolerated() {
        let (events, errors) = summary(&read_all(
            b"\xEF\xBB\xBF{\"reason\":\"A\"}\r\n{\"reason\":\"B\"}\r\n",
        ));
        assert_eq!(events, vec![("A".into(), 1), ("B".into(), 2)]);
        assert!(errors.is_empty());
        let (events, _) = summary(&read_all(b"\xEF\xBB\xBFreason: A\r\n"));
        assert_eq!(events.len(), 1);
    }

    #[test]
    fn yaml_multi_document_and_list() {
        let input = b"reason: A\n---\nkind: List\nitems:\n- reason: B\n- reason: C\n  count: 3\n";
        let (events, errors) = summary(&read_all(input));
        let reasons: Vec<_> = events.into_iter().map(|(r, _)| r).collect();
        assert_eq!(reasons, vec!["A", "B", "C"]);
        assert!(errors.is_empty());
    }

    #[test]
    fn invalid_utf8_is_repaired_and_reported() {
        let found = read_all(b"{\"reason\":\"A\",\"message\":\"caf\xe9\"}\n");
        let (events, _) = summary(&found);
        assert_eq!(events.len(), 1);
        assert!(found.iter().any(|d| matches!(d, Decoded::Warning(1, _))));
    }

    #[test]
    fn huge_message_is_truncated_not_dropped() {
        let line = format!(
            "{{\"reason\":\"A\",\"message\":\"{}\"}}\n",
            "x".repeat(5000)
        );
        let found = read_all(line.as_bytes());
        let event = found.iter().find_map(|d| match d {
            Decoded::Event(e, _) => Some(e),
            _ => None,
        });
        assert!(event.unwrap().message.len() < 1100);
        assert!(found.iter().any(|d| matches!(d, Decoded::Warning(1, _))));
    }

    #[test]
    fn oversized_frame_is_skipped_and_reading_continues() {
        let big = format!(
            "{{\"reason\":\"A\",\"message\":\"{}\"}}\n{{\"reason\":\"B\"}}\n",
            "x".repeat(2 << 20)
        );
        let (events, errors) = summary(&read_all(big.as_bytes()));
        assert_eq!(events, vec![("B".into(), 2)]);
        assert_eq!(errors, vec![1]);
    }
}
