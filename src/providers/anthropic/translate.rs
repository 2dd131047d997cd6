//! Placeholder translator.

use crate::event::{ErrorCode, StreamEvent};
use crate::providers::{DISCONNECTED, Translate};

#[derive(Debug, Default)]
pub(super) struct Translator {
    done: bool,
}

impl Translate for Translator {
    fn push(&mut self, _event_type: &str, _data: &str, _out: &mut Vec<StreamEvent>) {}

    fn end(&mut self, out: &mut Vec<StreamEvent>) {
        self.done = true;
        out.push(StreamEvent::error(
            ErrorCode::UpstreamDisconnected,
            DISCONNECTED,
        ));
    }

    fn is_done(&self) -> bool {
        self.done
    }
}
