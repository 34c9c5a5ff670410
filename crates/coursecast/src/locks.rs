//! The one rule for the process's plain mutexes: a poisoned lock is used anyway.
//!
//! Every critical section in this crate is a few map or vector operations that keep
//! the data consistent at each step, and none awaits. A panic inside one is a bug
//! that has already been reported; refusing every later request that touches the
//! same map would turn that bug into an outage.

use std::sync::{Mutex, MutexGuard, PoisonError};

pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
