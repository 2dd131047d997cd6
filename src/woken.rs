//! Futures that wait for something rare beside something frequent.
//!
//! A task that relays tokens wakes for every one of them, and a `select!`
//! polls every branch each time: a stop signal, a shutdown token or an idle
//! timer, each a mutex round trip, polled once per token for something that
//! happens once in the task's life (README, Performance). Wrapped in
//! [`WhenWoken`], such a future is polled only after one of its own wakers
//! has fired.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

/// A future polled only once one of the wakers it registered has fired.
pub(crate) struct WhenWoken<F> {
    future: Pin<Box<F>>,
    signal: Arc<Signal>,
}

/// Set by the wrapped future's wakers; wakes the task that polls it.
#[derive(Debug)]
struct Signal {
    fired: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<F> WhenWoken<F> {
    pub(crate) fn new(future: F) -> Self {
        Self {
            future: Box::pin(future),
            // Polled once at the start, to register its wakers.
            signal: Arc::new(Signal {
                fired: AtomicBool::new(true),
                task: AtomicWaker::new(),
            }),
        }
    }
}

impl<F: Future> Future for WhenWoken<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        // Registered before looking, so a wake that comes after the look
        // still reaches this task.
        this.signal.task.register(cx.waker());
        if !this.signal.fired.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let waker = Waker::from(Arc::clone(&this.signal));
        this.future.as_mut().poll(&mut Context::from_waker(&waker))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_when_woken_future_is_polled_at_the_start_and_after_its_wakers_fire() {
        let polls = std::cell::Cell::new(0);
        let registered = std::cell::RefCell::new(None::<Waker>);
        let inner = std::future::poll_fn(|cx| {
            polls.set(polls.get() + 1);
            *registered.borrow_mut() = Some(cx.waker().clone());
            if polls.get() == 3 {
                Poll::Ready("fired")
            } else {
                Poll::Pending
            }
        });
        let mut future = std::pin::pin!(WhenWoken::new(inner));
        let mut cx = Context::from_waker(Waker::noop());

        for _ in 0..5 {
            assert!(future.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(polls.get(), 1);
        let wake = |registered: &std::cell::RefCell<Option<Waker>>| {
            if let Some(waker) = registered.borrow_mut().take() {
                waker.wake();
            }
        };
        wake(&registered);
        assert!(future.as_mut().poll(&mut cx).is_pending());
        assert!(future.as_mut().poll(&mut cx).is_pending());
        assert_eq!(polls.get(), 2);
        wake(&registered);
        assert_eq!(future.as_mut().poll(&mut cx), Poll::Ready("fired"));
    }
}
