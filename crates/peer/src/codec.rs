//! Sans-IO encoders and decoders for etcd's rafthttp byte formats.
//!
//! Nothing here does IO: callers feed bytes in whatever chunks the network
//! delivered (`feed`), then pull complete messages out (`next`). Chunk
//! boundaries carry no meaning in rafthttp (they are HTTP chunked-encoding
//! artefacts), so every decoder accepts arbitrary splits. Decoders never panic
//! on hostile input: oversize lengths and malformed protobuf are errors, after
//! which the decoder stays failed (the caller drops the connection, as etcd
//! does).
//!
//! Formats (see the shared reference, §4):
//! * "message" stream: repeated `u64be len` + `raftpb.Message`.
//! * msgappv2 stream: a type byte per record — `0x00` link heartbeat,
//!   `0x01` AppEntries (compact MsgApp with implied fields), `0x02` full
//!   MsgApp — with per-connection implied term/index state.
//! * snapshot body header: `u64be len` + MsgSnap `raftpb.Message`, followed by
//!   the database bytes (not handled here).

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use etcd_standby_proto::raftpb::{
    ConfState, Entry, Message, MessageType, Snapshot, SnapshotMetadata,
};
use prost::Message as _;

/// Largest message etcd's "message" stream decoder accepts (512 MiB). We apply
/// the same cap to msgappv2 records and entries, and to the snapshot header.
pub const MAX_MESSAGE_SIZE: u64 = 512 * 1024 * 1024;

/// How often every stream writer sends a link heartbeat (etcd: ConnReadTimeout / 3).
pub const LINK_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(5000 / 3);

/// The exact 38-byte "message" stream frame of a link heartbeat as etcd writes
/// it (reference §4.1): length 30, then `Message{Type: MsgHeartbeat}` with
/// every gogo non-nullable field present and the empty snapshot sub-message.
pub const LINK_HEARTBEAT_FRAME: [u8; 38] = [
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1e, 0x08, 0x08, 0x10, 0x00, 0x18, 0x00, 0x20, 0x00,
    0x28, 0x00, 0x30, 0x00, 0x40, 0x00, 0x4a, 0x0a, 0x12, 0x08, 0x0a, 0x02, 0x28, 0x00, 0x10, 0x00,
    0x18, 0x00, 0x50, 0x00, 0x58, 0x00,
];

/// msgappv2 record type: link heartbeat (no payload).
pub const MSGAPPV2_LINK_HEARTBEAT: u8 = 0x00;
/// msgappv2 record type: AppEntries (compact MsgApp, implied fields).
pub const MSGAPPV2_APP_ENTRIES: u8 = 0x01;
/// msgappv2 record type: full MsgApp message.
pub const MSGAPPV2_MSG_APP: u8 = 0x02;

/// Why a byte stream could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// A length field (or the running total of an AppEntries record) exceeds the limit.
    #[error("length {len} exceeds the limit of {limit} bytes")]
    TooLarge {
        /// the announced length
        len: u64,
        /// the limit in force
        limit: u64,
    },
    /// The protobuf payload did not decode.
    #[error("protobuf decode failed: {0}")]
    Decode(#[from] prost::DecodeError),
    /// A msgappv2 record started with a type byte other than 0, 1 or 2.
    #[error("failed to parse type {0} in msgappv2 stream")]
    UnknownType(u8),
    /// The msgappv2 encoder was given a message that is neither MsgApp nor a link heartbeat.
    #[error("msgappv2 stream can only carry MsgApp, not message type {0}")]
    NotMsgApp(i32),
    /// The decoder already failed; the connection must be dropped.
    #[error("decoder already failed on this connection")]
    Failed,
}

/// etcd's shape of "no snapshot": every non-nullable field present and zero.
/// Encodes as `4a 0a 12 08 0a 02 28 00 10 00 18 00` inside a Message.
pub fn etcd_empty_snapshot() -> Snapshot {
    Snapshot {
        data: None,
        metadata: Some(SnapshotMetadata {
            conf_state: Some(ConfState::default()),
            index: 0,
            term: 0,
        }),
    }
}

/// The link heartbeat message (MsgHeartbeat, From = To = 0), etcd-shaped so it
/// encodes to exactly [`LINK_HEARTBEAT_FRAME`].
pub fn link_heartbeat() -> Message {
    Message {
        r#type: MessageType::MsgHeartbeat as i32,
        snapshot: Some(etcd_empty_snapshot()),
        ..Message::default()
    }
}

/// True for the keep-alive messages stream writers interleave (receivers drop them).
pub fn is_link_heartbeat(m: &Message) -> bool {
    m.r#type == MessageType::MsgHeartbeat as i32 && m.from == 0 && m.to == 0
}

fn check_len(len: u64, limit: u64) -> Result<usize, CodecError> {
    if len > limit {
        return Err(CodecError::TooLarge { len, limit });
    }
    usize::try_from(len).map_err(|_| CodecError::TooLarge { len, limit })
}

/// Appends one "message" stream frame (`u64be len` + Message) to `out`.
pub fn encode_message_frame(m: &Message, out: &mut BytesMut) -> Result<(), CodecError> {
    let len = m.encoded_len() as u64;
    check_len(len, MAX_MESSAGE_SIZE)?;
    out.reserve(8 + len as usize);
    out.put_u64(len);
    m.encode_raw(out);
    Ok(())
}

/// Incremental decoder for the "message" stream (`/raft/stream/message/...`).
#[derive(Debug)]
pub struct MessageStreamDecoder {
    buf: BytesMut,
    limit: u64,
    failed: bool,
}

impl Default for MessageStreamDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl MessageStreamDecoder {
    /// A decoder with etcd's 512 MiB per-message limit.
    pub fn new() -> Self {
        Self::with_limit(MAX_MESSAGE_SIZE)
    }

    /// A decoder with a custom per-message limit (tests, tighter deployments).
    pub fn with_limit(limit: u64) -> Self {
        Self {
            buf: BytesMut::new(),
            limit,
            failed: false,
        }
    }

    /// Appends received bytes (any chunking).
    pub fn feed(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes received but not yet consumed by a complete frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Returns the next complete message, `Ok(None)` if more bytes are needed.
    /// Link heartbeats are returned too (see [`is_link_heartbeat`]).
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Message>, CodecError> {
        if self.failed {
            return Err(CodecError::Failed);
        }
        if self.buf.len() < 8 {
            return Ok(None);
        }
        let mut len_bytes = [0u8; 8];
        len_bytes.copy_from_slice(&self.buf[..8]);
        let len = u64::from_be_bytes(len_bytes);
        let len = match check_len(len, self.limit) {
            Ok(l) => l,
            Err(e) => {
                self.failed = true;
                return Err(e);
            }
        };
        if self.buf.len() - 8 < len {
            // Reserve up front so a large message is not re-copied on every chunk.
            self.buf.reserve(len + 8 - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(8);
        let body = self.buf.split_to(len).freeze();
        match Message::decode(body) {
            Ok(m) => Ok(Some(m)),
            Err(e) => {
                self.failed = true;
                Err(e.into())
            }
        }
    }
}

/// Per-connection msgappv2 encoder (the sending side of `/raft/stream/msgapp/...`).
///
/// Keeps the implied `term`/`index` so consecutive MsgApps in the same term are
/// written as compact AppEntries records, exactly like etcd.
#[derive(Debug, Default, Clone)]
pub struct MsgAppV2Encoder {
    term: u64,
    index: u64,
}

impl MsgAppV2Encoder {
    /// A fresh encoder (state term = index = 0, so the first MsgApp is full).
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends the record for `m` to `out`. `m` must be a MsgApp or a link heartbeat.
    pub fn encode(&mut self, m: &Message, out: &mut BytesMut) -> Result<(), CodecError> {
        if is_link_heartbeat(m) {
            out.put_u8(MSGAPPV2_LINK_HEARTBEAT);
            return Ok(());
        }
        if m.r#type != MessageType::MsgApp as i32 {
            return Err(CodecError::NotMsgApp(m.r#type));
        }
        if self.index == m.index && self.term == m.log_term && m.log_term == m.term {
            let mut total: u64 = 0;
            for e in &m.entries {
                total = total.saturating_add(e.encoded_len() as u64 + 8);
            }
            check_len(total, MAX_MESSAGE_SIZE)?;
            out.reserve(1 + 8 + total as usize + 8);
            out.put_u8(MSGAPPV2_APP_ENTRIES);
            out.put_u64(m.entries.len() as u64);
            for e in &m.entries {
                out.put_u64(e.encoded_len() as u64);
                e.encode_raw(out);
            }
            out.put_u64(m.commit);
            self.index = self.index.wrapping_add(m.entries.len() as u64);
        } else {
            let len = m.encoded_len() as u64;
            check_len(len, MAX_MESSAGE_SIZE)?;
            out.reserve(1 + 8 + len as usize);
            out.put_u8(MSGAPPV2_MSG_APP);
            out.put_u64(len);
            m.encode_raw(out);
            self.term = m.term;
            self.index = m.entries.last().map_or(m.index, |e| e.index);
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy)]
enum V2State {
    Type,
    AppCount,
    EntrySize,
    EntryBody(usize),
    AppCommit,
    MsgSize,
    MsgBody(usize),
}

/// Per-connection msgappv2 decoder (the reading side of `/raft/stream/msgapp/...`).
///
/// AppEntries records are rebuilt into full MsgApp messages with
/// `From = remote`, `To = local`, `Term = LogTerm = state term`,
/// `Index = state index` (the previous log index), then `index += n`.
/// A full MsgApp resets the state to its term and last entry index.
#[derive(Debug)]
pub struct MsgAppV2Decoder {
    local: u64,
    remote: u64,
    term: u64,
    index: u64,
    buf: BytesMut,
    state: V2State,
    remaining: u64,
    record_bytes: u64,
    entries: Vec<Entry>,
    limit: u64,
    failed: bool,
}

impl MsgAppV2Decoder {
    /// A decoder for one connection: `local` is our member ID, `remote` the peer
    /// that writes this stream (implied To/From of AppEntries).
    pub fn new(local: u64, remote: u64) -> Self {
        Self::with_limit(local, remote, MAX_MESSAGE_SIZE)
    }

    /// Same with a custom size limit (per full message, and per AppEntries record).
    pub fn with_limit(local: u64, remote: u64, limit: u64) -> Self {
        Self {
            local,
            remote,
            term: 0,
            index: 0,
            buf: BytesMut::new(),
            state: V2State::Type,
            remaining: 0,
            record_bytes: 0,
            entries: Vec::new(),
            limit,
            failed: false,
        }
    }

    /// Appends received bytes (any chunking).
    pub fn feed(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes received but not yet consumed.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    fn fail<T>(&mut self, e: CodecError) -> Result<T, CodecError> {
        self.failed = true;
        self.entries = Vec::new();
        Err(e)
    }

    fn take_u64(&mut self) -> Option<u64> {
        if self.buf.len() < 8 {
            return None;
        }
        Some(self.buf.get_u64())
    }

    fn take_body(&mut self, len: usize) -> Option<Bytes> {
        if self.buf.len() < len {
            self.buf.reserve(len - self.buf.len());
            return None;
        }
        Some(self.buf.split_to(len).freeze())
    }

    /// Returns the next complete message (`Ok(None)` = need more bytes).
    /// Link heartbeats are returned as [`link_heartbeat`] messages.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Message>, CodecError> {
        if self.failed {
            return Err(CodecError::Failed);
        }
        loop {
            match self.state {
                V2State::Type => {
                    if self.buf.is_empty() {
                        return Ok(None);
                    }
                    match self.buf.get_u8() {
                        MSGAPPV2_LINK_HEARTBEAT => return Ok(Some(link_heartbeat())),
                        MSGAPPV2_APP_ENTRIES => self.state = V2State::AppCount,
                        MSGAPPV2_MSG_APP => self.state = V2State::MsgSize,
                        t => return self.fail(CodecError::UnknownType(t)),
                    }
                }
                V2State::AppCount => {
                    let Some(n) = self.take_u64() else {
                        return Ok(None);
                    };
                    self.remaining = n;
                    self.record_bytes = 0;
                    // Never trust n for allocation: every entry needs >= 8 bytes anyway.
                    self.entries = Vec::with_capacity(n.min(1024) as usize);
                    self.state = if n == 0 {
                        V2State::AppCommit
                    } else {
                        V2State::EntrySize
                    };
                }
                V2State::EntrySize => {
                    let Some(size) = self.take_u64() else {
                        return Ok(None);
                    };
                    self.record_bytes = self.record_bytes.saturating_add(size.saturating_add(8));
                    if self.record_bytes > self.limit {
                        let len = self.record_bytes;
                        return self.fail(CodecError::TooLarge {
                            len,
                            limit: self.limit,
                        });
                    }
                    match check_len(size, self.limit) {
                        Ok(s) => self.state = V2State::EntryBody(s),
                        Err(e) => return self.fail(e),
                    }
                }
                V2State::EntryBody(size) => {
                    let Some(body) = self.take_body(size) else {
                        return Ok(None);
                    };
                    match Entry::decode(body) {
                        Ok(e) => self.entries.push(e),
                        Err(e) => return self.fail(e.into()),
                    }
                    self.remaining -= 1;
                    self.state = if self.remaining == 0 {
                        V2State::AppCommit
                    } else {
                        V2State::EntrySize
                    };
                }
                V2State::AppCommit => {
                    let Some(commit) = self.take_u64() else {
                        return Ok(None);
                    };
                    let entries = std::mem::take(&mut self.entries);
                    let n = entries.len() as u64;
                    let m = Message {
                        r#type: MessageType::MsgApp as i32,
                        from: self.remote,
                        to: self.local,
                        term: self.term,
                        log_term: self.term,
                        index: self.index,
                        entries,
                        commit,
                        ..Message::default()
                    };
                    self.index = self.index.wrapping_add(n);
                    self.state = V2State::Type;
                    return Ok(Some(m));
                }
                V2State::MsgSize => {
                    let Some(size) = self.take_u64() else {
                        return Ok(None);
                    };
                    match check_len(size, self.limit) {
                        Ok(s) => self.state = V2State::MsgBody(s),
                        Err(e) => return self.fail(e),
                    }
                }
                V2State::MsgBody(size) => {
                    let Some(body) = self.take_body(size) else {
                        return Ok(None);
                    };
                    let m = match Message::decode(body) {
                        Ok(m) => m,
                        Err(e) => return self.fail(e.into()),
                    };
                    self.term = m.term;
                    self.index = m.entries.last().map_or(m.index, |e| e.index);
                    self.state = V2State::Type;
                    return Ok(Some(m));
                }
            }
        }
    }
}

/// Encodes the head of a `POST /raft/snapshot` body: `u64be len` + the MsgSnap
/// message. The database bytes follow it directly.
pub fn encode_snapshot_header(m: &Message) -> Result<Bytes, CodecError> {
    let mut out = BytesMut::new();
    encode_message_frame(m, &mut out)?;
    Ok(out.freeze())
}

/// Incremental decoder for the head of a snapshot body. Once it yields the
/// message, [`SnapshotHeaderDecoder::into_remainder`] returns the bytes that
/// already belong to the database.
#[derive(Debug)]
pub struct SnapshotHeaderDecoder {
    inner: MessageStreamDecoder,
}

impl Default for SnapshotHeaderDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl SnapshotHeaderDecoder {
    /// A decoder with the 512 MiB limit (the message is held in memory; etcd
    /// allows more, but its v2 store JSON is a few KB in practice).
    pub fn new() -> Self {
        Self::with_limit(MAX_MESSAGE_SIZE)
    }

    /// A decoder with a custom limit.
    pub fn with_limit(limit: u64) -> Self {
        Self {
            inner: MessageStreamDecoder::with_limit(limit),
        }
    }

    /// Appends received bytes.
    pub fn feed(&mut self, data: &[u8]) {
        self.inner.feed(data);
    }

    /// The message once complete (`Ok(None)` = need more bytes).
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Message>, CodecError> {
        self.inner.next()
    }

    /// Bytes fed after the message (the start of the database).
    pub fn into_remainder(self) -> Bytes {
        self.inner.buf.freeze()
    }
}
