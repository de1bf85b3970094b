//! A spawned task that ends with its owner: dropping a [`TaskGuard`] aborts the task, and
//! with it the sockets the task owns. Connections are closed this way when a link or listener
//! stops, instead of lingering until the peer hangs up.

use std::future::Future;

use tokio::task::JoinHandle;

/// Owns a task on the current arbiter; the task is aborted when the guard is dropped.
pub(crate) struct TaskGuard(Option<JoinHandle<()>>);

impl TaskGuard {
    /// Spawns `task` on the current arbiter.
    pub(crate) fn spawn(task: impl Future<Output = ()> + 'static) -> TaskGuard {
        TaskGuard(Some(actix::spawn(task)))
    }

    /// Waits until the task ends by itself; dropped before then, aborts it like the guard.
    pub(crate) async fn finish(mut self) {
        if let Some(handle) = &mut self.0 {
            // As in `cancel`: nothing to report.
            let _ = handle.await;
        }
    }

    /// Aborts the task and waits until it is gone (its sockets are closed then).
    pub(crate) async fn cancel(mut self) {
        if let Some(handle) = self.0.take() {
            handle.abort();
            // The result is always a cancellation or the task's `()`: nothing to report.
            let _ = handle.await;
        }
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        if let Some(handle) = &self.0 {
            handle.abort();
        }
    }
}
