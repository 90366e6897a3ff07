//! A small pool of threads for the engine's blocking work (NSS lookups, the store's durable
//! commits), so that the bus executor only moves messages: one slow fsync does not hold up
//! every other connection's calls (their caller lookups, their sessions, their replies).
#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Waker};

use twofactor_bus::BusError;

/// Threads in the daemon's pool: enough that account lookups and answers that need no store
/// go on while one thread waits for a commit (the store itself serializes its work).
pub const WORKERS: usize = 4;

type Job = Box<dyn FnOnce() + Send>;

/// The queue the threads take jobs from. A job wakes one idle thread, and only that one (a
/// receiver shared behind a mutex would wake a second thread each time, to wait in its turn:
/// one more thread competing for the CPU just when the job runs).
struct Queue {
    jobs: Mutex<Jobs>,
    ready: Condvar,
}

struct Jobs {
    waiting: VecDeque<Job>,
    /// The pool was dropped: the threads end once the jobs already queued have run.
    closed: bool,
}

/// The pool. Jobs run in the order they came, on whichever thread is free.
pub struct Workers {
    queue: Arc<Queue>,
}

impl Workers {
    /// Starts `n` threads (at least one).
    pub fn start(n: usize) -> std::io::Result<Workers> {
        let queue = Arc::new(Queue {
            jobs: Mutex::new(Jobs {
                waiting: VecDeque::new(),
                closed: false,
            }),
            ready: Condvar::new(),
        });
        for i in 0..n.max(1) {
            let queue = Arc::clone(&queue);
            std::thread::Builder::new()
                .name(format!("engine-{i}"))
                .spawn(move || {
                    loop {
                        let job = {
                            let Ok(mut jobs) = queue.jobs.lock() else {
                                return;
                            };
                            loop {
                                if let Some(job) = jobs.waiting.pop_front() {
                                    break job;
                                }
                                if jobs.closed {
                                    return;
                                }
                                jobs = match queue.ready.wait(jobs) {
                                    Ok(j) => j,
                                    Err(_) => return,
                                };
                            }
                        };
                        // A job that panics drops its reply slot (the caller gets an error);
                        // the thread goes on serving.
                        let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
                    }
                })?;
        }
        Ok(Workers { queue })
    }

    /// Runs `f` on the pool and waits (asynchronously) for its answer.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, BusError> + Send + 'static,
    ) -> Result<T, BusError> {
        let slot = Arc::new(Mutex::new(Slot {
            value: None,
            done: false,
            waker: None,
        }));
        let reply = Reply(Arc::clone(&slot));
        let job: Job = Box::new(move || {
            let r = f();
            reply.send(r);
        });
        self.queue
            .jobs
            .lock()
            .map_err(|_| gone())?
            .waiting
            .push_back(job);
        self.queue.ready.notify_one();
        Answer(slot).await
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        if let Ok(mut jobs) = self.queue.jobs.lock() {
            jobs.closed = true;
        }
        self.queue.ready.notify_all();
    }
}

fn gone() -> BusError {
    BusError::StateUnavailable("the daemon's worker threads are gone".into())
}

struct Slot<T> {
    value: Option<Result<T, BusError>>,
    /// The job ran, or was dropped without running.
    done: bool,
    waker: Option<Waker>,
}

/// The job's end of the reply: dropped without sending (a panic), it still wakes the caller.
struct Reply<T>(Arc<Mutex<Slot<T>>>);

impl<T> Reply<T> {
    fn send(self, r: Result<T, BusError>) {
        if let Ok(mut s) = self.0.lock() {
            s.value = Some(r);
        }
        // Drop wakes.
    }
}

impl<T> Drop for Reply<T> {
    fn drop(&mut self) {
        let waker = match self.0.lock() {
            Ok(mut s) => {
                s.done = true;
                s.waker.take()
            }
            Err(poisoned) => {
                let mut s = poisoned.into_inner();
                s.done = true;
                s.waker.take()
            }
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

struct Answer<T>(Arc<Mutex<Slot<T>>>);

impl<T> Future for Answer<T> {
    type Output = Result<T, BusError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut s = match self.0.lock() {
            Ok(s) => s,
            Err(_) => return Poll::Ready(Err(gone())),
        };
        if let Some(v) = s.value.take() {
            return Poll::Ready(v);
        }
        if s.done {
            return Poll::Ready(Err(BusError::StateUnavailable(
                "the request failed inside the daemon; nothing was changed".into(),
            )));
        }
        s.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn answers_come_back_and_a_slow_job_does_not_hold_up_the_others() {
        let w = Workers::start(2).expect("threads");
        zbus::block_on(async {
            assert_eq!(w.run(|| Ok(41 + 1)).await.ok(), Some(42));
            let t = Instant::now();
            let slow = w.run(|| {
                std::thread::sleep(Duration::from_millis(300));
                Ok(1)
            });
            let quick = w.run(|| Ok(2));
            // Polled together: the quick one ends first, on the other thread.
            let both = futures_util::future::join(slow, quick);
            let (a, b) = both.await;
            assert_eq!((a.ok(), b.ok()), (Some(1), Some(2)));
            assert!(t.elapsed() < Duration::from_secs(5));
        });
    }

    #[test]
    #[allow(clippy::panic)]
    fn a_job_that_panics_is_an_error_and_the_pool_goes_on() {
        let w = Workers::start(1).expect("threads");
        zbus::block_on(async {
            let r: Result<u8, BusError> = w.run(|| panic!("boom")).await;
            assert!(matches!(r, Err(BusError::StateUnavailable(_))));
            assert_eq!(w.run(|| Ok(7)).await.ok(), Some(7));
        });
    }
}
