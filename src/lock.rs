//! The one way tokenrelay takes a lock on its shared state.
//!
//! Our locks guard plain data and are never held across an await, so a
//! poisoned lock only means another thread panicked mid-update of counters;
//! carrying on is better than taking the whole server down with it.

use std::sync::{Mutex, MutexGuard, PoisonError};

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
