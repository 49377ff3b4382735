//! Rows for `COPY … FROM STDIN (FORMAT binary)`, each field encoded by sqlx's own encoder: the
//! binary COPY field format is the binary format of bind parameters. The server reads binary
//! fields with each type's receive function instead of parsing text (a text COPY of the payments
//! took it longer than generating them itself).

use sqlx::encode::{Encode, IsNull};
use sqlx::postgres::{PgArgumentBuffer, PgConnection, PgCopyIn};
use sqlx::Postgres;

use lakehouse_api::CliResult;

/// What is sent to the server at once.
const CHUNK_BYTES: usize = 1 << 20;

/// A binary COPY in progress: buffers rows and sends them a chunk at a time.
pub struct BinaryCopy<'c> {
    copy: PgCopyIn<&'c mut PgConnection>,
    buffer: PgArgumentBuffer,
}

impl<'c> BinaryCopy<'c> {
    /// Starts `statement`, a `COPY … FROM STDIN (FORMAT binary)`.
    pub async fn begin(conn: &'c mut PgConnection, statement: &str) -> CliResult<Self> {
        let copy = conn.copy_in_raw(statement).await?;
        let mut buffer = PgArgumentBuffer::default();
        // Signature, flags (no OIDs), header extension length.
        buffer.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
        buffer.extend_from_slice(&0_i32.to_be_bytes());
        buffer.extend_from_slice(&0_i32.to_be_bytes());
        Ok(Self { copy, buffer })
    }

    /// Starts a row of `fields` fields; follow it with exactly that many [`Self::field`] calls.
    pub fn row(&mut self, fields: i16) {
        self.buffer.extend_from_slice(&fields.to_be_bytes());
    }

    /// One field: its length, then its binary form (a length of -1 is NULL). For built-in
    /// scalar types (uuid, text, numeric, timestamptz, date, integers): sqlx patches the type
    /// oids of records, arrays and custom types into a bind buffer later, which never happens
    /// here, and its `Json` writes the jsonb version byte, wrong for a `json` column.
    pub fn field<'q, T: Encode<'q, Postgres>>(&mut self, value: &T) -> CliResult {
        let at = self.buffer.len();
        self.buffer.extend_from_slice(&0_i32.to_be_bytes());
        let length = match value.encode_by_ref(&mut self.buffer)? {
            IsNull::Yes => {
                self.buffer.truncate(at + 4);
                -1
            }
            IsNull::No => i32::try_from(self.buffer.len() - at - 4)?,
        };
        self.buffer[at..at + 4].copy_from_slice(&length.to_be_bytes());
        Ok(())
    }

    /// Sends what is buffered once it makes a chunk.
    pub async fn send_full_chunk(&mut self) -> CliResult {
        if self.buffer.len() >= CHUNK_BYTES {
            self.copy.send(self.buffer.as_slice()).await?;
            self.buffer.clear();
        }
        Ok(())
    }

    /// Sends the rest and the trailer; returns the rows the server copied.
    pub async fn finish(mut self) -> CliResult<u64> {
        self.buffer.extend_from_slice(&(-1_i16).to_be_bytes());
        self.copy.send(self.buffer.as_slice()).await?;
        Ok(self.copy.finish().await?)
    }
}
