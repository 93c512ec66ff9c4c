//! Client-side strictness: refuse to send what the server did not advertise or
//! what the protocol forbids, before it reaches the wire.

use super::{Client, Command, CommandKind, Payload, SubmitError};
use crate::consts::{cmd_flags, limits, transmission_flags as tf};

/// Bits of [`super::Config::strict`], with libnbd's values.
pub mod strict {
    /// Refuse commands and flags the server did not advertise.
    pub const COMMANDS: u32 = 1 << 0;
    /// Refuse flags that are unknown or not valid for the command.
    pub const FLAGS: u32 = 1 << 1;
    /// Refuse requests past the end of the export.
    pub const BOUNDS: u32 = 1 << 2;
    /// Refuse zero-length requests.
    pub const ZERO_SIZE: u32 = 1 << 3;
    /// Refuse requests not aligned to the minimum block size.
    pub const ALIGN: u32 = 1 << 4;
    /// Refuse READ/WRITE payloads over 64 MiB.
    pub const PAYLOAD: u32 = 1 << 5;
    /// Every rule.
    pub const ALL: u32 = COMMANDS | FLAGS | BOUNDS | ZERO_SIZE | ALIGN | PAYLOAD;
}

/// Flags each command may carry.
fn allowed_flags(kind: CommandKind) -> u16 {
    use cmd_flags::*;
    match kind {
        CommandKind::Read => DF,
        CommandKind::Write => FUA | PAYLOAD_LEN,
        CommandKind::Flush => 0,
        CommandKind::Trim => FUA,
        CommandKind::Cache => 0,
        CommandKind::WriteZeroes => FUA | NO_HOLE | FAST_ZERO,
        CommandKind::BlockStatus => REQ_ONE,
        CommandKind::Disconnect => 0,
    }
}

fn name(kind: CommandKind) -> &'static str {
    match kind {
        CommandKind::Read => "read",
        CommandKind::Write => "write",
        CommandKind::Flush => "flush",
        CommandKind::Trim => "trim",
        CommandKind::Cache => "cache",
        CommandKind::WriteZeroes => "write zeroes",
        CommandKind::BlockStatus => "block status",
        CommandKind::Disconnect => "disconnect",
    }
}

impl<U> Client<U> {
    /// Checks a command against the protocol and the strict-mode rules.
    pub(super) fn check_command(&self, c: &Command) -> Result<(), SubmitError> {
        let strict = self.config.strict;
        let on = |bit: u32| strict & bit != 0;
        let export = &self.export;

        // Rules that are never optional: they keep the wire well-formed.
        // NBD_CMD_FLAG_PAYLOAD_LEN only where the header's length is the
        // payload's: a WRITE with extended headers (where it changes
        // nothing), and a context list, for which `submit` sets it.
        if c.flags & cmd_flags::PAYLOAD_LEN != 0 && !(c.kind == CommandKind::Write && self.extended)
        {
            return Err(SubmitError::BadFlags(c.flags));
        }
        if let Payload::Contexts(ids) = &c.payload {
            if !self.extended {
                return Err(SubmitError::NotSupported(
                    "a block status context list without extended headers",
                ));
            }
            if 8 + 4 * ids.len() as u64 > limits::MAX_REQUEST_PAYLOAD {
                return Err(SubmitError::TooLarge);
            }
        }
        if !self.extended && c.length > u64::from(u32::MAX) {
            return Err(SubmitError::TooLarge);
        }
        match (&c.kind, &c.payload) {
            (CommandKind::Write, Payload::Owned(b)) if b.len() as u64 != c.length => {
                return Err(SubmitError::Invalid("payload length differs from length"))
            }
            (CommandKind::Write, Payload::None) => {
                return Err(SubmitError::Invalid("write without payload"))
            }
            (CommandKind::Write, Payload::Contexts(_)) => {
                return Err(SubmitError::Invalid("write with a context list"))
            }
            (CommandKind::Write, _) => {}
            (_, Payload::None) | (CommandKind::BlockStatus, Payload::Contexts(_)) => {}
            _ => {
                return Err(SubmitError::Invalid(
                    "payload on a command other than write",
                ))
            }
        }
        if c.kind == CommandKind::Disconnect {
            return Ok(());
        }
        if c.kind == CommandKind::Flush && (c.offset != 0 || c.length != 0) {
            return Err(SubmitError::Invalid("flush takes no range"));
        }
        // A read buffer must be addressable by the driver.
        if c.kind == CommandKind::Read && usize::try_from(c.length).is_err() {
            return Err(SubmitError::TooLarge);
        }

        if on(strict::FLAGS) && c.flags & !allowed_flags(c.kind) != 0 {
            return Err(SubmitError::BadFlags(c.flags));
        }
        if on(strict::COMMANDS) {
            let needs = |flag: u16, what| {
                if export.has(flag) {
                    Ok(())
                } else {
                    Err(SubmitError::NotSupported(what))
                }
            };
            let writes = matches!(
                c.kind,
                CommandKind::Write | CommandKind::Trim | CommandKind::WriteZeroes
            );
            match c.kind {
                CommandKind::Flush => needs(tf::SEND_FLUSH, name(c.kind))?,
                CommandKind::Trim => needs(tf::SEND_TRIM, name(c.kind))?,
                CommandKind::Cache => needs(tf::SEND_CACHE, name(c.kind))?,
                CommandKind::WriteZeroes => needs(tf::SEND_WRITE_ZEROES, name(c.kind))?,
                CommandKind::BlockStatus if self.contexts.is_empty() => {
                    return Err(SubmitError::NoMetaContext);
                }
                _ => {}
            }
            // After the per-command check, as libnbd does: a trim on a
            // read-only export that offers no trim is "not supported".
            if writes && export.has(tf::READ_ONLY) {
                return Err(SubmitError::ReadOnly);
            }
            if c.flags & cmd_flags::FUA != 0 {
                needs(tf::SEND_FUA, "FUA")?;
            }
            if c.flags & cmd_flags::DF != 0 {
                needs(tf::SEND_DF, "DF")?;
                if !self.structured {
                    return Err(SubmitError::NotSupported("DF without structured replies"));
                }
            }
            if c.flags & cmd_flags::FAST_ZERO != 0 {
                needs(tf::SEND_FAST_ZERO, "fast zero")?;
            }
        }
        if on(strict::ZERO_SIZE) && c.length == 0 && c.kind != CommandKind::Flush {
            return Err(SubmitError::ZeroSize);
        }
        if on(strict::BOUNDS) {
            let end = c.offset.checked_add(c.length);
            if end.is_none_or(|e| e > export.size) {
                return Err(match c.kind {
                    CommandKind::Write | CommandKind::Trim | CommandKind::WriteZeroes => {
                        SubmitError::OutOfBoundsWrite
                    }
                    _ => SubmitError::OutOfBounds,
                });
            }
        }
        if on(strict::ALIGN) {
            if let Some(bs) = export.block_size {
                let min = u64::from(bs.minimum);
                if min > 1 && (!c.offset.is_multiple_of(min) || !c.length.is_multiple_of(min)) {
                    return Err(SubmitError::Unaligned(bs.minimum));
                }
            }
        }
        if on(strict::PAYLOAD) && matches!(c.kind, CommandKind::Read | CommandKind::Write) {
            // libnbd's fixed cap; a server's smaller maximum is its to enforce.
            let max = limits::MAX_REQUEST_PAYLOAD;
            if c.length > max {
                return Err(SubmitError::TooLarge);
            }
        }
        Ok(())
    }
}
