//! Splits a streamed body into JSON records without holding the body: NDJSON (one value per
//! line) or a JSON array (`[ {...}, {...} ]`). Bytes are fed as they arrive; complete records
//! come out; only the current partial record is buffered.

use axum::body::{Body, BodyDataStream};
use futures_util::StreamExt;
use tokio::time::Instant;

use crate::platform::error::ApiError;

/// The two accepted shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    NdJson,
    JsonArray,
}

/// One record's bytes, with its 1-based position in the body.
#[derive(Debug, PartialEq, Eq)]
pub struct RawRecord {
    pub number: i32,
    pub bytes: Vec<u8>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct SplitError(pub String);

/// A byte-level scanner that tracks strings, escapes and nesting, so commas and newlines inside
/// values never split a record.
#[derive(Debug)]
pub struct Splitter {
    format: Format,
    current: Vec<u8>,
    depth: u32,
    in_string: bool,
    escaped: bool,
    /// JSON array: whether the opening `[` was seen, and the closing `]`.
    opened: bool,
    closed: bool,
    count: i32,
    max_record_bytes: usize,
}

impl Splitter {
    pub fn new(format: Format, max_record_bytes: usize) -> Self {
        Self {
            format,
            current: Vec::new(),
            depth: 0,
            in_string: false,
            escaped: false,
            opened: false,
            closed: false,
            count: 0,
            max_record_bytes,
        }
    }

    fn emit(&mut self, out: &mut Vec<RawRecord>) {
        let trimmed = self.current.trim_ascii();
        if !trimmed.is_empty() {
            self.count += 1;
            out.push(RawRecord {
                number: self.count,
                bytes: trimmed.to_vec(),
            });
        }
        self.current.clear();
    }

    /// Feeds bytes; returns the records they completed.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<RawRecord>, SplitError> {
        let mut out = Vec::new();
        for &b in chunk {
            if self.closed {
                if !b.is_ascii_whitespace() {
                    return Err(SplitError("content after the closing ']'".into()));
                }
                continue;
            }
            if self.format == Format::JsonArray && !self.opened {
                match b {
                    b'[' => self.opened = true,
                    b if b.is_ascii_whitespace() => {}
                    _ => return Err(SplitError("a JSON array must start with '['".into())),
                }
                continue;
            }
            // NDJSON: a newline always ends a record (a raw newline cannot be inside a JSON
            // value), so one broken record never swallows the next.
            if self.format == Format::NdJson && b == b'\n' {
                self.emit(&mut out);
                self.depth = 0;
                self.in_string = false;
                self.escaped = false;
                continue;
            }
            if self.in_string {
                self.current.push(b);
                match (self.escaped, b) {
                    (true, _) => self.escaped = false,
                    (false, b'\\') => self.escaped = true,
                    (false, b'"') => self.in_string = false,
                    _ => {}
                }
            } else {
                match (self.format, b, self.depth) {
                    (Format::JsonArray, b',', 0) => self.emit(&mut out),
                    (Format::JsonArray, b']', 0) => {
                        self.emit(&mut out);
                        self.closed = true;
                    }
                    _ => {
                        match b {
                            b'"' => self.in_string = true,
                            b'{' | b'[' => self.depth += 1,
                            b'}' | b']' => self.depth = self.depth.saturating_sub(1),
                            _ => {}
                        }
                        self.current.push(b);
                    }
                }
            }
            if self.current.len() > self.max_record_bytes {
                return Err(SplitError(format!(
                    "record {} is longer than {} bytes",
                    self.count + 1,
                    self.max_record_bytes
                )));
            }
        }
        Ok(out)
    }

    /// Ends the body; returns the last record, if the body did not end with a separator.
    pub fn finish(mut self) -> Result<Vec<RawRecord>, SplitError> {
        if self.format == Format::JsonArray && (!self.opened || !self.closed) {
            return Err(SplitError("the JSON array is not closed with ']'".into()));
        }
        let mut out = Vec::new();
        self.emit(&mut out);
        Ok(out)
    }
}

/// An upload's body as records, a chunk at a time, so that each chunk is staged in a
/// transaction of its own: the body's bytes count against `limit`, and it must have arrived by
/// `deadline`.
pub struct RecordChunks {
    stream: BodyDataStream,
    splitter: Option<Splitter>,
    ready: Vec<RawRecord>,
    received: usize,
    limit: usize,
    deadline: Instant,
    size: usize,
    read: i64,
}

impl RecordChunks {
    pub fn new(
        body: Body,
        splitter: Splitter,
        limit: usize,
        deadline: Instant,
        size: usize,
    ) -> Self {
        Self {
            stream: body.into_data_stream(),
            splitter: Some(splitter),
            ready: Vec::with_capacity(size),
            received: 0,
            limit,
            deadline,
            size,
            read: 0,
        }
    }

    /// The next `size` records (fewer at the end of the body), or `None` once all are out.
    pub async fn next(&mut self) -> Result<Option<Vec<RawRecord>>, ApiError> {
        while self.ready.len() < self.size {
            let Some(splitter) = self.splitter.as_mut() else {
                break;
            };
            let arrived = tokio::time::timeout_at(self.deadline, self.stream.next())
                .await
                .map_err(|_| ApiError::RequestTimeout)?;
            let records = match arrived {
                Some(bytes) => {
                    let bytes = bytes
                        .map_err(|_| ApiError::BadRequest("the upload was interrupted".into()))?;
                    self.received += bytes.len();
                    if self.received > self.limit {
                        return Err(ApiError::PayloadTooLarge);
                    }
                    splitter.feed(&bytes)
                }
                None => self
                    .splitter
                    .take()
                    .map_or(Ok(Vec::new()), Splitter::finish),
            };
            self.ready
                .extend(records.map_err(|e| ApiError::BadRequest(e.0))?);
        }
        if self.ready.is_empty() {
            return Ok(None);
        }
        let rest = self.ready.split_off(self.size.min(self.ready.len()));
        let chunk = std::mem::replace(&mut self.ready, rest);
        self.read += chunk.len() as i64;
        Ok(Some(chunk))
    }

    /// How many records have been handed out.
    pub fn read(&self) -> i64 {
        self.read
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(frames: &[&'static str]) -> Body {
        let frames: Vec<Result<&'static str, std::io::Error>> =
            frames.iter().map(|f| Ok(*f)).collect();
        Body::from_stream(futures_util::stream::iter(frames))
    }

    fn later() -> Instant {
        Instant::now() + std::time::Duration::from_secs(30)
    }

    fn numbers(chunk: Option<Vec<RawRecord>>) -> Vec<i32> {
        chunk.unwrap_or_default().iter().map(|r| r.number).collect()
    }

    #[tokio::test]
    async fn records_come_a_chunk_at_a_time_and_the_last_with_the_end_of_the_body() {
        let frames = body(&["{\"a\":1}\n{\"a\":2}\n{\"a\"", ":3}\n{\"a\":4}\n{\"a\":5}"]);
        let splitter = Splitter::new(Format::NdJson, 1024);
        let mut records = RecordChunks::new(frames, splitter, 1 << 20, later(), 2);
        assert_eq!(numbers(records.next().await.ok().flatten()), [1, 2]);
        assert_eq!(numbers(records.next().await.ok().flatten()), [3, 4]);
        // The fifth has no newline after it: only the end of the body lets it out.
        assert_eq!(numbers(records.next().await.ok().flatten()), [5]);
        assert!(matches!(records.next().await, Ok(None)));
        assert_eq!(records.read(), 5);
    }

    #[tokio::test]
    async fn a_body_over_the_limit_or_past_the_deadline_is_refused() {
        let splitter = || Splitter::new(Format::NdJson, 1024);
        let frames = body(&["{\"a\":1}\n", "{\"a\":2}\n"]);
        let mut over = RecordChunks::new(frames, splitter(), 10, later(), 100);
        assert!(matches!(over.next().await, Err(ApiError::PayloadTooLarge)));
        let never =
            Body::from_stream(futures_util::stream::pending::<Result<&str, std::io::Error>>());
        let mut late = RecordChunks::new(never, splitter(), 1 << 20, Instant::now(), 100);
        assert!(matches!(late.next().await, Err(ApiError::RequestTimeout)));
        let unclosed = body(&["[{\"a\":1}"]);
        let array = Splitter::new(Format::JsonArray, 1024);
        let mut broken = RecordChunks::new(unclosed, array, 1 << 20, later(), 100);
        assert!(matches!(broken.next().await, Err(ApiError::BadRequest(_))));
    }

    fn split(format: Format, body: &str, chunk: usize) -> Result<Vec<String>, SplitError> {
        let mut s = Splitter::new(format, 1 << 20);
        let mut out = Vec::new();
        for piece in body.as_bytes().chunks(chunk) {
            out.extend(s.feed(piece)?);
        }
        out.extend(s.finish()?);
        Ok(out
            .into_iter()
            .map(|r| String::from_utf8(r.bytes).unwrap())
            .collect())
    }

    #[test]
    fn ndjson_splits_on_lines_whatever_the_chunking() {
        let body = "{\"a\":\"x\\ny\"}\n\n{\"b\":[1,\n{\"c\":1}";
        for chunk in [1, 3, 100] {
            assert_eq!(
                split(Format::NdJson, body, chunk).unwrap(),
                ["{\"a\":\"x\\ny\"}", "{\"b\":[1,", "{\"c\":1}"],
                "a broken record ends at its line"
            );
        }
    }

    #[test]
    fn arrays_split_on_top_level_commas_only() {
        let body = " [ {\"a\":\"1,]\"}, {\"b\":{\"c\":[1,2]}} ,{\"d\":\"\\\"\"} ] ";
        for chunk in [1, 7, 100] {
            assert_eq!(
                split(Format::JsonArray, body, chunk).unwrap(),
                [
                    "{\"a\":\"1,]\"}",
                    "{\"b\":{\"c\":[1,2]}}",
                    "{\"d\":\"\\\"\"}"
                ]
            );
        }
    }

    #[test]
    fn broken_arrays_are_refused() {
        assert!(split(Format::JsonArray, "{\"a\":1}", 10).is_err());
        assert!(split(Format::JsonArray, "[{\"a\":1}", 10).is_err());
        assert!(split(Format::JsonArray, "[{\"a\":1}] x", 10).is_err());
    }

    #[test]
    fn an_overlong_record_is_refused() {
        let mut s = Splitter::new(Format::NdJson, 8);
        assert!(s.feed(b"{\"a\":\"0123456789\"}").is_err());
    }
}
