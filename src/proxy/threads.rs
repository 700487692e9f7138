//! The threads that run connections: blocking threads, two per connection, that
//! are reused instead of started anew for every connection.
//!
//! The proxy hands each connection's two directions to [`Threads::spawn`]. A thread
//! whose work is done waits a while for the next piece instead of exiting, because
//! on a busy proxy starting and ending threads cost more than short connections'
//! whole relaying (measured with `make bench`'s churn scenario).

use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, Thread};
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
///
/// A job goes straight to one waiting thread, the one that started waiting last
/// (its stack and buffers are the likeliest still in the caches), through that
/// thread's own slot: the hand-off is one wake-up of one thread, and the woken
/// thread does not contend for a lock the spawner still holds.
#[derive(Default)]
pub struct Threads {
    /// The waiting threads' slots, the latest last.
    idle: Mutex<Vec<Arc<Slot>>>,
}

/// Where a waiting thread receives its next job.
struct Slot {
    job: Mutex<Option<Job>>,
    thread: Thread,
}

impl Slot {
    fn take(&self) -> Option<Job> {
        self.job.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

impl Threads {
    /// Runs `job` on a waiting thread if there is one, else on a new thread.
    pub fn spawn(self: &Arc<Self>, job: Job) -> io::Result<()> {
        // A slot taken off the list belongs to this call: its thread waits for
        // the job (see `next`), so the job is always picked up.
        let waiting = self.lock().pop();
        if let Some(slot) = waiting {
            *slot.job.lock().unwrap_or_else(|e| e.into_inner()) = Some(job);
            slot.thread.unpark();
            return Ok(());
        }
        let threads = Arc::clone(self);
        thread::Builder::new()
            .stack_size(THREAD_STACK)
            .spawn(move || threads.work(job))
            .map(drop)
    }

    /// Runs jobs until none comes within the idle timeout.
    fn work(&self, first: Job) {
        let slot = Arc::new(Slot {
            job: Mutex::new(None),
            thread: thread::current(),
        });
        let mut job = first;
        loop {
            job();
            match self.next(&slot) {
                Some(next) => job = next,
                None => return,
            }
        }
    }

    /// Waits for the next job in `slot`; `None` when enough threads already wait,
    /// or none came within the idle timeout.
    fn next(&self, slot: &Arc<Slot>) -> Option<Job> {
        {
            let mut idle = self.lock();
            if idle.len() >= MAX_IDLE {
                return None;
            }
            idle.push(Arc::clone(slot));
        }
        let deadline = Instant::now() + IDLE_TIMEOUT;
        loop {
            if let Some(job) = slot.take() {
                return Some(job);
            }
            let now = Instant::now();
            if now >= deadline {
                let mut idle = self.lock();
                if let Some(i) = idle.iter().position(|s| Arc::ptr_eq(s, slot)) {
                    idle.remove(i);
                    return None;
                }
                // A spawn has taken the slot and is about to fill it: wait for
                // the job it promised (park until then; spurious wake-ups loop).
                drop(idle);
                loop {
                    if let Some(job) = slot.take() {
                        return Some(job);
                    }
                    thread::park();
                }
            }
            thread::park_timeout(deadline - now);
        }
    }

    /// The list stays consistent between statements even if a job panicked
    /// elsewhere: jobs never run under this lock.
    fn lock(&self) -> MutexGuard<'_, Vec<Arc<Slot>>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
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
        while threads.lock().is_empty() {
            assert!(start.elapsed() < Duration::from_secs(5), "the thread never went idle");
            thread::yield_now();
        }
        threads
            .spawn(Box::new(move || tx.send(thread::current().id()).unwrap()))
            .unwrap();
        let b = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(a, b);
    }

    /// Waits until `n` threads are waiting for work.
    fn wait_idle(threads: &Threads, n: usize) {
        let start = Instant::now();
        while threads.lock().len() < n {
            assert!(start.elapsed() < Duration::from_secs(5), "the threads never went idle");
            thread::yield_now();
        }
    }

    #[test]
    fn the_thread_that_started_waiting_last_gets_the_next_job() {
        let threads = Arc::new(Threads::default());
        let (ids, started) = mpsc::channel();
        let mut release = Vec::new();
        for job in 0..2 {
            let (go, wait) = mpsc::channel::<()>();
            let ids = ids.clone();
            threads
                .spawn(Box::new(move || {
                    ids.send((job, thread::current().id())).unwrap();
                    wait.recv_timeout(Duration::from_secs(5)).unwrap();
                }))
                .unwrap();
            release.push(go);
        }
        let mut thread_of = [None, None];
        for _ in 0..2 {
            let (job, id) = started.recv_timeout(Duration::from_secs(5)).unwrap();
            thread_of[job] = Some(id);
        }
        assert_ne!(thread_of[0], thread_of[1]);
        // Job 0's thread starts waiting first, job 1's last.
        for (job, go) in release.into_iter().enumerate() {
            go.send(()).unwrap();
            wait_idle(&threads, job + 1);
        }
        threads
            .spawn(Box::new(move || ids.send((2, thread::current().id())).unwrap()))
            .unwrap();
        let (_, next) = started.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(Some(next), thread_of[1]);
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
