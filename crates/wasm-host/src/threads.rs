//! The threads that run guest code, off the async workers.
//!
//! Guest calls are synchronous and may take up to their deadline (≤ 10 s),
//! and wasmtime-wasi's synchronous WASI bindings block on a Tokio runtime of
//! their own, which panics on a thread that is already inside one ("Cannot
//! start a runtime from within a runtime"). So every guest entry
//! (instantiation, `init`, `transform`) runs either on one of the engine's
//! fixed set of guest threads (`sy-transform-<i>`, no Tokio context), or
//! inline on a thread that has no Tokio context at all (the CLI, benchmarks,
//! tests, the file watcher). Async code hands work over and awaits it; the
//! Tokio workers never run guest code, so a module at its deadline stalls
//! neither network I/O nor other accounts. Waiting work queues in order; the
//! queue is bounded by its callers (one chain run per account task).

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{mpsc, Arc, Mutex};

type Job = Box<dyn FnOnce() + Send>;

thread_local! {
    static GUEST_THREAD: Cell<bool> = const { Cell::new(false) };
}

/// May guest code run on the current thread? On a guest thread, or on a
/// thread without a Tokio context (wasmtime-wasi then uses its own runtime).
pub(crate) fn can_run_here() -> bool {
    GUEST_THREAD.with(Cell::get) || tokio::runtime::Handle::try_current().is_err()
}

pub(crate) use switchyard_core::panic::message as panic_message;

/// A fixed set of threads fed by one queue. Dropping it lets the threads
/// exit once the queue is empty; they are not joined (a call in progress
/// ends at its deadline, and must not hold up the process).
pub(crate) struct GuestThreads {
    tx: Mutex<mpsc::Sender<Job>>,
}

impl GuestThreads {
    pub(crate) fn start(threads: usize) -> std::io::Result<GuestThreads> {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let threads = threads.max(1);
        for i in 0..threads {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("sy-transform-{i}"))
                .spawn(move || {
                    GUEST_THREAD.with(|g| g.set(true));
                    loop {
                        // The lock is held only while waiting for the next job.
                        let job = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                        match job {
                            // Jobs catch their own panics (see `wrap`).
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                })?;
        }
        Ok(GuestThreads { tx: Mutex::new(tx) })
    }

    fn submit(&self, job: Job) {
        // Cannot fail while `self` lives: the threads hold the receiver and
        // only leave when every sender is gone. (If they did, the job is
        // dropped with its reply channel and the caller sees an error.)
        let _ = self.tx.lock().unwrap_or_else(|p| p.into_inner()).send(job);
    }

    /// Run `f` on a guest thread and await its result. A panic in `f` is
    /// returned as `Err(message)`.
    pub(crate) async fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, String> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(Box::new(move || {
            let _ = tx.send(catch(f));
        }));
        rx.await
            .unwrap_or_else(|_| Err("the transform threads have stopped".into()))
    }

    /// Run `f` where guest code may run: here if [`can_run_here`], else on a
    /// guest thread, blocking this thread until it is done (async code uses
    /// [`GuestThreads::run`]). A panic in `f` is returned as `Err(message)`.
    pub(crate) fn run_blocking<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, String> {
        if can_run_here() {
            return catch(f);
        }
        let (tx, rx) = mpsc::sync_channel(1);
        self.submit(Box::new(move || {
            let _ = tx.send(catch(f));
        }));
        rx.recv()
            .unwrap_or_else(|_| Err("the transform threads have stopped".into()))
    }
}

fn catch<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| panic_message(&*p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_here_without_a_runtime_and_catches_panics() {
        let t = GuestThreads::start(1).unwrap();
        assert!(can_run_here());
        let here = std::thread::current().id();
        assert_eq!(
            t.run_blocking(move || std::thread::current().id() == here),
            Ok(true)
        );
        assert_eq!(
            t.run_blocking(|| -> () { panic!("boom {}", 1) }),
            Err("boom 1".to_string())
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn inside_a_runtime_work_goes_to_a_guest_thread() {
        let t = GuestThreads::start(2).unwrap();
        assert!(!can_run_here());
        let name = || {
            std::thread::current()
                .name()
                .unwrap_or_default()
                .to_string()
        };
        assert!(t.run_blocking(name).unwrap().starts_with("sy-transform-"));
        assert!(t.run(name).await.unwrap().starts_with("sy-transform-"));
        // On a guest thread there is no Tokio context, and a panic there is
        // an error for the caller, not a dead thread.
        assert_eq!(
            t.run(|| tokio::runtime::Handle::try_current().is_err() && can_run_here())
                .await,
            Ok(true)
        );
        for _ in 0..4 {
            assert_eq!(t.run(|| -> () { panic!("boom") }).await, Err("boom".into()));
        }
        assert_eq!(t.run(|| 7).await, Ok(7));
    }
}
