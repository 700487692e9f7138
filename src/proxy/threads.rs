//! The threads that run connections: blocking threads, two per connection, that
//! are reused instead of started anew for every connection.
//!
//! The proxy hands each connection's two directions to [`Threads::spawn`]. A thread
//! whose work is done waits a while for the next piece instead of exiting, because
//! on a busy proxy starting and ending threads cost more than short connections'
//! whole relaying (measured with `make bench`'s churn scenario).

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

/// Relay threads keep their buffers on the heap and call nothing deep, so a small
/// stack lets thousands of connections fit in little memory.
const THREAD_STACK: usize = 128 * 1024;

/// Threads that have finished wait this long for new work before they exit, and
/// at most this many wait at once.
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_IDLE: usize = 64;

/// Work for a connection thread.
pub type Job = Box<dyn FnOnce() + Send>;

/// The connection threads: blocking threads, two per connection, as before, but a
/// thread whose connection has ended waits a while for the next one instead of
/// exiting. Starting and ending a thread costs more than a short connection's
/// whole relay: its stack and signal stack are mapped and protected, then unmapped,
/// and each change to the mappings interrupts every other core to flush its TLB.
#[derive(Default)]
pub struct Threads {
    state: Mutex<Waiting>,
    wake: Condvar,
}

#[derive(Default)]
struct Waiting {
    jobs: VecDeque<Job>,
    /// Threads waiting for a job.
    idle: usize,
}

impl Threads {
    /// Runs `job` on a waiting thread if there is one, else on a new thread.
    pub fn spawn(self: &Arc<Self>, job: Job) -> io::Result<()> {
        {
            let mut waiting = self.lock();
            // Each waiting thread takes one job before it may leave, so a job
            // queued here is always picked up.
            if waiting.idle > waiting.jobs.len() {
                waiting.jobs.push_back(job);
                self.wake.notify_one();
                return Ok(());
            }
        }
        let threads = Arc::clone(self);
        thread::Builder::new()
            .stack_size(THREAD_STACK)
            .spawn(move || threads.work(job))
            .map(drop)
    }

    /// Runs jobs until none comes within the idle timeout.
    fn work(&self, first: Job) {
        let mut job = first;
        loop {
            job();
            match self.next() {
                Some(next) => job = next,
                None => return,
            }
        }
    }

    /// Waits for the next job; `None` when enough threads already wait, or none
    /// came within the idle timeout.
    fn next(&self) -> Option<Job> {
        let mut waiting = self.lock();
        if waiting.idle >= MAX_IDLE {
            return None;
        }
        waiting.idle += 1;
        let deadline = Instant::now() + IDLE_TIMEOUT;
        loop {
            if let Some(job) = waiting.jobs.pop_front() {
                waiting.idle -= 1;
                return Some(job);
            }
            let now = Instant::now();
            if now >= deadline {
                waiting.idle -= 1;
                return None;
            }
            waiting = self
                .wake
                .wait_timeout(waiting, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// The queue stays consistent between statements even if a job panicked
    /// elsewhere: jobs never run under this lock.
    fn lock(&self) -> MutexGuard<'_, Waiting> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn a_finished_thread_runs_the_next_job() {
        let threads = Arc::new(Threads::default());
        let (tx, rx) = mpsc::channel();
        let first = tx.clone();
        threads
            .spawn(Box::new(move || first.send(thread::current().id()).unwrap()))
            .unwrap();
        let a = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        // Wait until the first thread is idle, then the next job must reuse it.
        let start = Instant::now();
        while threads.lock().idle == 0 {
            assert!(start.elapsed() < Duration::from_secs(5), "the thread never went idle");
            thread::yield_now();
        }
        threads
            .spawn(Box::new(move || tx.send(thread::current().id()).unwrap()))
            .unwrap();
        let b = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn concurrent_jobs_get_threads_of_their_own() {
        let threads = Arc::new(Threads::default());
        let barrier = Arc::new(std::sync::Barrier::new(3));
        let (tx, rx) = mpsc::channel();
        for _ in 0..3 {
            let (barrier, tx) = (Arc::clone(&barrier), tx.clone());
            // Each job blocks until all three run at once: it only finishes if
            // none of them waits behind another.
            threads
                .spawn(Box::new(move || {
                    barrier.wait();
                    tx.send(()).unwrap();
                }))
                .unwrap();
        }
        for _ in 0..3 {
            rx.recv_timeout(Duration::from_secs(5)).unwrap();
        }
    }
}
