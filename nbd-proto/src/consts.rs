//! Numeric constants of the NBD wire protocol (doc/proto.md of the NBD project).
//!
//! Everything on the wire is big-endian. Names follow the specification with the
//! `NBD_` prefix dropped, grouped by the message family they belong to.

/// `"NBDMAGIC"`: the first eight bytes every server sends.
pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
/// `"IHAVEOPT"`: newstyle greeting magic, and the prefix of every option request.
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// The `cliserv_magic` of an oldstyle greeting.
pub const OLDSTYLE_MAGIC: u64 = 0x0000_4202_8186_1253;
/// Magic that starts every fixed-newstyle option reply.
pub const OPTION_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// Magic of a compact (28-byte) request.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// Magic of an extended (32-byte) request.
pub const EXTENDED_REQUEST_MAGIC: u32 = 0x21e4_1c71;
/// Magic of a simple (16-byte) reply.
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
/// Magic of a structured (20-byte) reply chunk.
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;
/// Magic of an extended (32-byte) reply chunk.
pub const EXTENDED_REPLY_MAGIC: u32 = 0x6e8a_278c;

/// Sizes of the fixed parts of messages, in bytes.
pub mod size {
    /// Oldstyle greeting: magic, magic, size, flags, 124 zero bytes.
    pub const OLDSTYLE_GREETING: usize = 152;
    /// Newstyle greeting: two magics and 16 bits of handshake flags.
    pub const NEWSTYLE_GREETING: usize = 18;
    /// The 16 bytes both greetings start with.
    pub const GREETING_PREFIX: usize = 16;
    /// Client flags sent after a newstyle greeting.
    pub const CLIENT_FLAGS: usize = 4;
    /// Option request header: magic, option, length.
    pub const OPTION_HEADER: usize = 16;
    /// Option reply header: magic, option, type, length.
    pub const OPTION_REPLY_HEADER: usize = 20;
    /// Reply to `NBD_OPT_EXPORT_NAME` without the trailing zeroes.
    pub const EXPORT_NAME_REPLY: usize = 10;
    /// The zeroes that follow it unless `NO_ZEROES` was negotiated.
    pub const EXPORT_NAME_ZEROES: usize = 124;
    /// Compact request header.
    pub const REQUEST: usize = 28;
    /// Extended request header.
    pub const EXTENDED_REQUEST: usize = 32;
    /// Simple reply header.
    pub const SIMPLE_REPLY: usize = 16;
    /// Structured reply chunk header.
    pub const STRUCTURED_REPLY: usize = 20;
    /// Extended reply chunk header.
    pub const EXTENDED_REPLY: usize = 32;
}

/// Limits the protocol sets, or that this implementation enforces.
pub mod limits {
    /// Longest string (export name, description, error message) the spec allows.
    pub const MAX_STRING: usize = 4096;
    /// Largest option payload accepted from a peer (libnbd uses the same cap).
    pub const MAX_OPTION_PAYLOAD: u32 = 64 * 1024 * 1024;
    /// Largest READ/WRITE length the client sends without being told otherwise,
    /// and the payload cap libnbd's strict mode enforces.
    pub const MAX_REQUEST_PAYLOAD: u64 = 64 * 1024 * 1024;
    /// Largest non-data structured chunk payload (block status, errors) accepted.
    pub const MAX_CHUNK_METADATA: u64 = 64 * 1024 * 1024 + 64;
    /// Largest minimum block size the spec allows.
    pub const MAX_MIN_BLOCK_SIZE: u32 = 64 * 1024;
}

/// Handshake flags sent by the server in the newstyle greeting (16 bits).
pub mod handshake_flags {
    /// The server speaks fixed newstyle.
    pub const FIXED_NEWSTYLE: u16 = 1 << 0;
    /// The server can omit the 124 zero bytes after `NBD_OPT_EXPORT_NAME`.
    pub const NO_ZEROES: u16 = 1 << 1;
}

/// Client flags answered to the newstyle greeting (32 bits).
pub mod client_flags {
    /// The client speaks fixed newstyle.
    pub const FIXED_NEWSTYLE: u32 = 1 << 0;
    /// The client wants no zero padding after `NBD_OPT_EXPORT_NAME`.
    pub const NO_ZEROES: u32 = 1 << 1;
    /// Every flag a client may set.
    pub const MASK: u32 = FIXED_NEWSTYLE | NO_ZEROES;
}

/// Transmission flags of an export (16 bits).
pub mod transmission_flags {
    /// The flags field is valid (always set).
    pub const HAS_FLAGS: u16 = 1 << 0;
    /// The export is read-only.
    pub const READ_ONLY: u16 = 1 << 1;
    /// `NBD_CMD_FLUSH` is supported.
    pub const SEND_FLUSH: u16 = 1 << 2;
    /// `NBD_CMD_FLAG_FUA` is supported.
    pub const SEND_FUA: u16 = 1 << 3;
    /// The backing store is rotational.
    pub const ROTATIONAL: u16 = 1 << 4;
    /// `NBD_CMD_TRIM` is supported.
    pub const SEND_TRIM: u16 = 1 << 5;
    /// `NBD_CMD_WRITE_ZEROES` is supported.
    pub const SEND_WRITE_ZEROES: u16 = 1 << 6;
    /// `NBD_CMD_FLAG_DF` is supported.
    pub const SEND_DF: u16 = 1 << 7;
    /// Several connections see a consistent view.
    pub const CAN_MULTI_CONN: u16 = 1 << 8;
    /// `NBD_CMD_RESIZE` is supported.
    pub const SEND_RESIZE: u16 = 1 << 9;
    /// `NBD_CMD_CACHE` is supported.
    pub const SEND_CACHE: u16 = 1 << 10;
    /// `NBD_CMD_FLAG_FAST_ZERO` is supported.
    pub const SEND_FAST_ZERO: u16 = 1 << 11;
    /// `NBD_CMD_BLOCK_STATUS` accepts a payload (with extended headers).
    pub const BLOCK_STAT_PAYLOAD: u16 = 1 << 12;
}

/// Option codes (`NBD_OPT_*`).
pub mod opt {
    /// Choose an export and enter transmission (no reply on failure).
    pub const EXPORT_NAME: u32 = 1;
    /// End the negotiation.
    pub const ABORT: u32 = 2;
    /// List the exports.
    pub const LIST: u32 = 3;
    /// Withdrawn; never sent.
    pub const PEEK_EXPORT: u32 = 4;
    /// Upgrade the connection to TLS.
    pub const STARTTLS: u32 = 5;
    /// Ask about an export.
    pub const INFO: u32 = 6;
    /// Ask about an export and enter transmission.
    pub const GO: u32 = 7;
    /// Enable structured replies.
    pub const STRUCTURED_REPLY: u32 = 8;
    /// List metadata contexts.
    pub const LIST_META_CONTEXT: u32 = 9;
    /// Select metadata contexts.
    pub const SET_META_CONTEXT: u32 = 10;
    /// Enable extended (64-bit) headers.
    pub const EXTENDED_HEADERS: u32 = 11;
}

/// Option reply types (`NBD_REP_*`).
pub mod rep {
    /// Final successful reply.
    pub const ACK: u32 = 1;
    /// One export of `NBD_OPT_LIST`.
    pub const SERVER: u32 = 2;
    /// One piece of export information.
    pub const INFO: u32 = 3;
    /// One metadata context.
    pub const META_CONTEXT: u32 = 4;
    /// Bit set on every error reply.
    pub const FLAG_ERROR: u32 = 1 << 31;
    /// Option not supported.
    pub const ERR_UNSUP: u32 = FLAG_ERROR | 1;
    /// Forbidden by server policy.
    pub const ERR_POLICY: u32 = FLAG_ERROR | 2;
    /// Syntactically or semantically invalid.
    pub const ERR_INVALID: u32 = FLAG_ERROR | 3;
    /// Not supported on this platform.
    pub const ERR_PLATFORM: u32 = FLAG_ERROR | 4;
    /// TLS is required first.
    pub const ERR_TLS_REQD: u32 = FLAG_ERROR | 5;
    /// No such export.
    pub const ERR_UNKNOWN: u32 = FLAG_ERROR | 6;
    /// The server is shutting down.
    pub const ERR_SHUTDOWN: u32 = FLAG_ERROR | 7;
    /// The client must ask for block sizes.
    pub const ERR_BLOCK_SIZE_REQD: u32 = FLAG_ERROR | 8;
    /// A request or reply would be too big.
    pub const ERR_TOO_BIG: u32 = FLAG_ERROR | 9;
    /// Extended headers are required.
    pub const ERR_EXT_HEADER_REQD: u32 = FLAG_ERROR | 10;
}

/// Information types of `NBD_OPT_INFO` / `NBD_OPT_GO` (`NBD_INFO_*`).
pub mod info {
    /// Size and transmission flags (mandatory).
    pub const EXPORT: u16 = 0;
    /// Canonical export name.
    pub const NAME: u16 = 1;
    /// Human-readable description.
    pub const DESCRIPTION: u16 = 2;
    /// Minimum, preferred and maximum block sizes.
    pub const BLOCK_SIZE: u16 = 3;
}

/// Command types (`NBD_CMD_*`).
pub mod cmd {
    /// Read data.
    pub const READ: u16 = 0;
    /// Write data.
    pub const WRITE: u16 = 1;
    /// Disconnect.
    pub const DISC: u16 = 2;
    /// Flush to stable storage.
    pub const FLUSH: u16 = 3;
    /// Discard.
    pub const TRIM: u16 = 4;
    /// Prefetch.
    pub const CACHE: u16 = 5;
    /// Write zeroes.
    pub const WRITE_ZEROES: u16 = 6;
    /// Query block status.
    pub const BLOCK_STATUS: u16 = 7;
    /// Resize the export (experimental).
    pub const RESIZE: u16 = 8;
}

/// Command flags (`NBD_CMD_FLAG_*`, 16 bits).
pub mod cmd_flags {
    /// Force unit access.
    pub const FUA: u16 = 1 << 0;
    /// Write zeroes without punching holes.
    pub const NO_HOLE: u16 = 1 << 1;
    /// Don't fragment a structured read.
    pub const DF: u16 = 1 << 2;
    /// Block status: one extent only.
    pub const REQ_ONE: u16 = 1 << 3;
    /// Write zeroes: fail rather than be slow.
    pub const FAST_ZERO: u16 = 1 << 4;
    /// Extended headers: the length field is the payload length.
    pub const PAYLOAD_LEN: u16 = 1 << 5;
    /// Every flag this implementation knows.
    pub const MASK: u16 = FUA | NO_HOLE | DF | REQ_ONE | FAST_ZERO | PAYLOAD_LEN;
}

/// Structured reply flags.
pub mod reply_flags {
    /// Last chunk of the reply.
    pub const DONE: u16 = 1 << 0;
}

/// Structured reply chunk types (`NBD_REPLY_TYPE_*`).
pub mod reply_type {
    /// No payload; used to end a reply.
    pub const NONE: u16 = 0;
    /// Data at an offset.
    pub const OFFSET_DATA: u16 = 1;
    /// A hole (reads as zeroes) at an offset.
    pub const OFFSET_HOLE: u16 = 2;
    /// Block status with 32-bit descriptors.
    pub const BLOCK_STATUS: u16 = 5;
    /// Block status with 64-bit descriptors (extended headers).
    pub const BLOCK_STATUS_EXT: u16 = 6;
    /// Bit set on every error chunk type.
    pub const FLAG_ERROR: u16 = 1 << 15;
    /// An error for the whole request.
    pub const ERROR: u16 = FLAG_ERROR | 1;
    /// An error at an offset.
    pub const ERROR_OFFSET: u16 = FLAG_ERROR | 2;
}

/// Error values carried in replies (`NBD_E*`), and their meaning.
pub mod errno {
    /// Operation not permitted.
    pub const EPERM: u32 = 1;
    /// Input/output error.
    pub const EIO: u32 = 5;
    /// Out of memory.
    pub const ENOMEM: u32 = 12;
    /// Invalid argument.
    pub const EINVAL: u32 = 22;
    /// No space left.
    pub const ENOSPC: u32 = 28;
    /// Value too large.
    pub const EOVERFLOW: u32 = 75;
    /// Not supported.
    pub const ENOTSUP: u32 = 95;
    /// Server is shutting down.
    pub const ESHUTDOWN: u32 = 108;
}

/// Block status flags of the `base:allocation` context.
pub mod state {
    /// The extent is a hole (unallocated).
    pub const HOLE: u32 = 1 << 0;
    /// The extent reads as zeroes.
    pub const ZERO: u32 = 1 << 1;
}

/// The name of the standard allocation metadata context.
pub const CONTEXT_BASE_ALLOCATION: &str = "base:allocation";
