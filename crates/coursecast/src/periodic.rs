//! The one way a background chore repeats: every period, for as long as what it
//! works on is alive (it holds a weak reference, so it never keeps the app up).

use std::{
    sync::{Arc, Weak},
    time::Duration,
};

/// Runs `chore` every `period`, the first time one period from now, until `owner`
/// is dropped.
pub fn every<T, F, Fut>(period: Duration, owner: Weak<T>, chore: F)
where
    T: Send + Sync + 'static,
    F: Fn(Arc<T>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(period);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let Some(owner) = owner.upgrade() else { return };
            chore(owner).await;
        }
    });
}
