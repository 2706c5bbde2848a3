//! Where the blocking facade runs the async core: [`IoExecutor`].
//!
//! OpenDAL is async and needs a Tokio runtime. A blocking call must work
//! from any thread: a plain thread (the runtime's upload threads), and a
//! thread of someone else's Tokio runtime (an async engine that embeds the
//! state layer), where `Runtime::block_on` would panic with "Cannot start a
//! runtime from within a runtime". So:
//!
//! * outside any runtime, the calling thread drives the future on the
//!   executor's runtime (`Handle::block_on`);
//! * inside a runtime, the future runs on a short-lived scoped thread that
//!   is outside it, and the caller waits for it; on a multi-thread runtime
//!   the wait is wrapped in `block_in_place`, so the caller's other tasks
//!   move to other workers meanwhile. A current-thread runtime is blocked
//!   for the call, as any blocking call blocks it; it never deadlocks,
//!   because the I/O is driven by the executor's own threads.

use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::{Handle, RuntimeFlavor};

use crate::{Error, Result};

/// The runtime that drives a [`crate::CheckpointStorage`]'s I/O: the
/// crate's shared one (two worker threads, started on first use) or one the
/// embedder passes in.
///
/// ```
/// use streamstate_api::storage::IoExecutor;
/// let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
/// let executor = IoExecutor::from_handle(runtime.handle().clone()).unwrap();
/// assert_eq!(executor.block_on(async { 1 + 1 }), 2);
/// ```
#[derive(Debug, Clone, Default)]
pub struct IoExecutor {
    handle: Option<Handle>,
}

impl IoExecutor {
    /// The crate's shared I/O runtime.
    pub fn shared() -> Self {
        Self { handle: None }
    }

    /// The embedder's runtime. It must be a multi-thread runtime with I/O
    /// and time enabled: a current-thread runtime only drives I/O inside
    /// its own `block_on`, which a blocking call from another thread cannot
    /// count on.
    ///
    /// # Errors
    /// [`crate::ErrorKind::Config`] for a current-thread runtime.
    pub fn from_handle(handle: Handle) -> Result<Self> {
        if handle.runtime_flavor() == RuntimeFlavor::CurrentThread {
            return Err(Error::config(
                "a storage I/O runtime must be multi-threaded: a current-thread runtime drives I/O only inside its own block_on",
            ));
        }
        Ok(Self { handle: Some(handle) })
    }

    fn handle(&self) -> &Handle {
        match &self.handle {
            Some(handle) => handle,
            None => shared_runtime().handle(),
        }
    }

    /// Runs `future` to completion on this executor's runtime and returns
    /// its output, from any thread (see the [`crate::storage`] docs).
    pub fn block_on<F>(&self, future: F) -> F::Output
    where
        F: Future + Send,
        F::Output: Send,
    {
        let handle = self.handle();
        match Handle::try_current() {
            Err(_) => handle.block_on(future),
            Ok(current) => {
                let wait = || {
                    std::thread::scope(|scope| {
                        let driver = std::thread::Builder::new()
                            .name("streamstate-io-call".into())
                            .spawn_scoped(scope, || handle.block_on(future))
                            .unwrap_or_else(|e| panic!("cannot start a thread for a storage call: {e}"));
                        driver.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                    })
                };
                match current.runtime_flavor() {
                    RuntimeFlavor::MultiThread => tokio::task::block_in_place(wait),
                    _ => wait(),
                }
            }
        }
    }
}

/// The I/O runtime storages share unless given one. Built on first use.
fn shared_runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("streamstate-io")
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("cannot start the storage I/O runtime: {e}"))
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A future that needs the runtime's timer, as OpenDAL's do.
    async fn sleepy() -> u32 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        7
    }

    #[test]
    fn blocks_from_a_plain_thread() {
        assert_eq!(IoExecutor::shared().block_on(sleepy()), 7);
    }

    #[test]
    fn blocks_from_inside_a_current_thread_runtime() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let got = runtime.block_on(async { IoExecutor::shared().block_on(sleepy()) });
        assert_eq!(got, 7);
    }

    #[test]
    fn blocks_from_a_task_of_the_multi_thread_runtime_it_runs_on() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let executor = IoExecutor::from_handle(runtime.handle().clone()).unwrap();
        let task = runtime.spawn(async move { executor.block_on(sleepy()) });
        assert_eq!(runtime.block_on(task).unwrap(), 7);
        let executor = IoExecutor::from_handle(runtime.handle().clone()).unwrap();
        let blocking = runtime.spawn_blocking(move || executor.block_on(sleepy()));
        assert_eq!(runtime.block_on(blocking).unwrap(), 7);
    }

    #[test]
    fn a_current_thread_handle_is_refused_with_a_config_error() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let err = IoExecutor::from_handle(runtime.handle().clone()).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Config);
        assert!(err.to_string().contains("multi-threaded"), "{err}");
    }
}
