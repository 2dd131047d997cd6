//! The three things a generation is told once in its life: stop, its only
//! client left for good, and its log is complete.
//!
//! A `CancellationToken` for each is an allocation of its own (its tree
//! node, 112 bytes) to hold one flag, and every open stream holds a
//! generation. Here they are bits of one byte beside one `Notify`, inside
//! the generation itself.

use std::pin::pin;
use std::sync::atomic::{AtomicU8, Ordering};

use tokio::sync::Notify;

#[derive(Debug, Clone, Copy)]
pub(super) enum Signal {
    /// `DELETE`.
    Stop = 1,
    /// The only client left and will not come back.
    Abandon = 2,
    /// The log is complete.
    Ended = 4,
}

#[derive(Debug, Default)]
pub(super) struct Signals {
    raised: AtomicU8,
    /// Wakes everyone waiting on any signal; each looks again at its own.
    notify: Notify,
}

impl Signals {
    pub(super) fn raise(&self, signal: Signal) {
        self.raised.fetch_or(signal as u8, Ordering::Release);
        self.notify.notify_waiters();
    }

    /// Ready once `signal` is raised, at once if it already was.
    pub(super) async fn raised(&self, signal: Signal) {
        self.first_of(&[signal]).await;
    }

    /// Ready with the first of `wanted`, in their order, that is raised: one
    /// future where a wait for each would take its own room in a task that
    /// every open stream keeps.
    pub(super) async fn first_of(&self, wanted: &[Signal]) -> Signal {
        loop {
            let mut notified = pin!(self.notify.notified());
            // Registered before the look, so that a raise just after it
            // still wakes this waiter.
            notified.as_mut().enable();
            let raised = self.raised.load(Ordering::Acquire);
            if let Some(signal) = wanted.iter().find(|signal| raised & **signal as u8 != 0) {
                return *signal;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use futures_util::FutureExt;

    use super::*;

    #[tokio::test]
    async fn a_waiter_wakes_for_its_own_signal_only() {
        let signals = Arc::new(Signals::default());
        let ended = tokio::spawn({
            let signals = Arc::clone(&signals);
            async move { signals.raised(Signal::Ended).await }
        });
        // Let the waiter register before anything is raised.
        tokio::task::yield_now().await;
        signals.raise(Signal::Stop);
        signals.raise(Signal::Abandon);
        tokio::task::yield_now().await;
        assert!(!ended.is_finished(), "woke for another signal");
        assert!(signals.raised(Signal::Stop).now_or_never().is_some());
        assert!(signals.raised(Signal::Ended).now_or_never().is_none());
        let either = signals.first_of(&[Signal::Ended, Signal::Abandon]);
        assert!(matches!(either.now_or_never(), Some(Signal::Abandon)));

        signals.raise(Signal::Ended);
        let woke = tokio::time::timeout(Duration::from_secs(5), ended).await;
        assert!(matches!(woke, Ok(Ok(()))), "{woke:?}");
        // Raised once, it stays raised for every later waiter.
        assert!(signals.raised(Signal::Ended).now_or_never().is_some());
    }

    #[test]
    fn the_three_signals_live_inline_in_40_bytes() {
        assert!(
            std::mem::size_of::<Signals>() <= 40,
            "{}",
            std::mem::size_of::<Signals>()
        );
    }
}
