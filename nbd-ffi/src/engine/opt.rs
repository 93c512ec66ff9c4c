//! Opt mode: the option request a caller issued and its result.

use super::{Engine, EngineError, OptHooks, ProtoClient};
use nbd_proto::client::State;

/// The opt-mode request a caller issued, until its final option completes.
pub(super) struct UserOpt {
    /// The option whose completion ends the user's request.
    pub(super) option: u32,
    pub(super) hooks: Option<Box<dyn OptHooks>>,
    pub(super) count: i32,
}

/// Result of the last opt-mode request, for the synchronous `nbd_opt_*`.
#[derive(Debug, Clone)]
pub(crate) struct OptResult {
    pub(crate) error: i32,
    pub(crate) message: String,
    pub(crate) count: i32,
}

impl Engine {
    pub(crate) fn start_opt(
        &mut self,
        final_option: u32,
        hooks: Option<Box<dyn OptHooks>>,
        issue: impl FnOnce(&mut ProtoClient) -> Result<(), nbd_proto::client::SubmitError>,
    ) -> Result<(), EngineError> {
        let Some(c) = self.client.as_mut() else {
            return Err(EngineError::NotConnected(
                "invalid state: the handle is not connected",
            ));
        };
        if c.state() != State::Negotiating {
            return Err(EngineError::InvalidState(
                "invalid state: the handle must be negotiating",
            ));
        }
        issue(c).map_err(EngineError::Submit)?;
        self.opt_result = None;
        self.user_opt = Some(UserOpt {
            option: final_option,
            hooks,
            count: 0,
        });
        self.notify_write();
        Ok(())
    }

    /// The result of the last opt-mode request, once finished.
    pub(crate) fn take_opt_result(&mut self) -> Option<OptResult> {
        self.opt_result.take()
    }

    /// Whether an opt-mode request is still running.
    pub(crate) fn opt_running(&self) -> bool {
        self.user_opt.is_some()
    }
}
