//! A pool of worker threads made once per session, and `parallel_for` over it.
//!
//! Own code on std threads rather than crossbeam or rayon: kernels need only "run these n tasks
//! and wait", the calling thread should work too (a pool of `threads` uses `threads - 1` workers),
//! and a job borrows the caller's stack, which a plain `std::thread::scope` would give only by
//! spawning threads on every call. One job runs at a time; a second `parallel_for` that finds the
//! pool busy (another thread's `Session::run`, or a kernel nested in a task) runs its tasks on its
//! own thread instead of waiting, so concurrent runs never deadlock or oversubscribe the cores.
//!
//! Each thread first runs its own contiguous share of a job's tasks (the caller the first share,
//! worker i the (i+1)th), then helps with the others' shares. Consecutive nodes of one shape thus
//! give a thread the same part of the data: at two threads, MobileNetV2's layers found half their
//! inputs in the other core's L2 when tasks went to whichever thread came first.
//!
//! A hand-off to spinning workers makes no system call: a new job wakes the condition variable
//! only when some worker sleeps on it, and a finished job wakes the caller only when it sleeps.
//! While a run is in progress ([`ThreadPool::engage`]) the workers keep spinning between jobs, so
//! the serial nodes between two parallel ones do not put them to sleep.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, TryLockError};
use std::thread::JoinHandle;
use std::time::Duration;

/// Multiply-adds (or comparable element steps) below which a job runs on the calling thread:
/// waking a worker costs tens of microseconds on a busy machine.
pub const MIN_PARALLEL_WORK: usize = 1 << 18;
/// The least work one task of a split job should carry.
const MIN_TASK_WORK: usize = 1 << 16;
/// How long an idle worker, and a caller waiting for the last task, spin before they sleep
/// (unless the pool is made without spinning). A run hands the pool one job per node,
/// microseconds apart: a sleeping thread takes tens of microseconds to wake (more on a VM), a
/// spinning one a fraction of one. Short, so an idle session costs no CPU.
pub const SPIN: Duration = Duration::from_micros(50);

pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// Held while a job runs: at most one job at a time.
    busy: Mutex<()>,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    /// `State::generation`, readable without the lock by spinning workers.
    published: AtomicU64,
    /// Workers asleep on `wake`; changed under `state`'s lock, so that a new job (published under
    /// it) notifies only when someone sleeps.
    sleeping: AtomicUsize,
    /// Runs in progress that keep the workers spinning between jobs ([`ThreadPool::engage`]).
    engaged: AtomicUsize,
    /// How long waiting threads spin before they sleep ([`SPIN`], or zero).
    spin: Duration,
}

struct State {
    job: Option<Arc<Job>>,
    /// Bumped for every new job, so a worker takes each job once.
    generation: u64,
    shutdown: bool,
}

/// Shares a job's tasks are cut into at most: threads past it share the shares.
const MAX_SHARES: usize = 16;

/// One `parallel_for` call: tasks `0..count`, in `shares` contiguous shares, each claimed from
/// the front through its cursor.
struct Job {
    /// The caller's closure with its lifetime erased; see `parallel_for` for why that is sound.
    task: *const (dyn Fn(usize) + Sync),
    count: usize,
    shares: usize,
    /// The next unclaimed task of each share (past the share's end once it is all claimed).
    next: [AtomicUsize; MAX_SHARES],
    finished: AtomicUsize,
    panicked: AtomicBool,
    /// Whether the caller sleeps waiting for the last task (set under the lock), so that the
    /// thread finishing it notifies only then.
    done: (Mutex<bool>, Condvar),
}

// SAFETY: `task` points to a `Sync` closure, and is only called while `parallel_for` (which owns
// the closure) waits for every claimed task to finish.
unsafe impl Send for Job {}
unsafe impl Sync for Job {}

impl Job {
    /// A job of `count` tasks cut into a share for each of `threads` threads.
    fn new(task: *const (dyn Fn(usize) + Sync), count: usize, threads: usize) -> Job {
        let shares = count.min(threads).clamp(1, MAX_SHARES);
        let mut job = Job {
            task,
            count,
            shares,
            next: std::array::from_fn(|_| AtomicUsize::new(0)),
            finished: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            done: (Mutex::new(false), Condvar::new()),
        };
        for s in 0..shares {
            *job.next[s].get_mut() = job.share_start(s);
        }
        job
    }

    /// The first task of share `s` (`s == shares` gives the end).
    fn share_start(&self, s: usize) -> usize {
        s * self.count / self.shares
    }

    /// Claims and runs tasks until none are left: those of the share of thread `me` first, then
    /// those of the following shares.
    fn work(&self, me: usize) {
        for k in 0..self.shares {
            let s = (me + k) % self.shares;
            let end = self.share_start(s + 1);
            loop {
                let i = self.next[s].fetch_add(1, Ordering::Relaxed);
                if i >= end {
                    break;
                }
                self.run(i);
            }
        }
    }

    /// Runs claimed task `i`, and wakes the caller if it was the last.
    fn run(&self, i: usize) {
        // SAFETY: task i is claimed and unfinished, so parallel_for still holds the closure.
        let task = unsafe { &*self.task };
        if catch_unwind(AssertUnwindSafe(|| task(i))).is_err() {
            self.panicked.store(true, Ordering::Relaxed);
        }
        if self.finished.fetch_add(1, Ordering::AcqRel) + 1 == self.count {
            // The caller checks `finished` under this lock before it sleeps, so either it
            // sees the count complete or it is waiting here by the time the lock is ours.
            let (lock, cv) = &self.done;
            if *lock.lock().unwrap_or_else(|e| e.into_inner()) {
                cv.notify_all();
            }
        }
    }
}

impl ThreadPool {
    /// A pool that runs jobs on `threads` threads: the caller plus `threads - 1` workers, which
    /// spin for [`SPIN`] before they sleep.
    pub fn new(threads: usize) -> ThreadPool {
        ThreadPool::with_spin(threads, SPIN)
    }

    /// A pool whose waiting threads spin for `spin` before they sleep: zero for a pool that
    /// never burns CPU waiting (many sessions sharing few cores), at some cost in latency.
    pub fn with_spin(threads: usize, spin: Duration) -> ThreadPool {
        let shared = Arc::new(Shared {
            state: Mutex::new(State { job: None, generation: 0, shutdown: false }),
            wake: Condvar::new(),
            published: AtomicU64::new(0),
            sleeping: AtomicUsize::new(0),
            engaged: AtomicUsize::new(0),
            spin,
        });
        let workers = (1..threads.max(1))
            .filter_map(|i| {
                let shared = shared.clone();
                std::thread::Builder::new()
                    .name(format!("crx580-worker-{i}"))
                    .spawn(move || worker_loop(&shared, i))
                    .map_err(|e| log::warn!("cannot start worker thread {i}: {e}; running with fewer"))
                    .ok()
            })
            .collect();
        ThreadPool { shared, workers, busy: Mutex::new(()) }
    }

    /// Keeps the workers spinning between jobs until the guard drops, and wakes those asleep now,
    /// so that they are spinning by the time the first parallel node comes: a run hands the pool
    /// one job per node, and the serial nodes between two parallel ones (tens of microseconds
    /// and more) would otherwise put the workers to sleep, and a sleeping worker takes tens of
    /// microseconds to wake. A pool made without spinning ignores it. Engagements nest.
    pub fn engage(&self) -> Engaged<'_> {
        if self.workers.is_empty() || self.shared.spin.is_zero() {
            return Engaged { shared: None };
        }
        self.shared.engaged.fetch_add(1, Ordering::SeqCst);
        if self.shared.sleeping.load(Ordering::SeqCst) > 0 {
            let _state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.wake.notify_all();
        }
        Engaged { shared: Some(&self.shared) }
    }

    /// Threads a job runs on (the caller included).
    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// [`parallel_for`](Self::parallel_for) for tasks of about `work` multiply-adds each: work
    /// too small to repay waking a thread runs on the caller alone, and small tasks are grouped
    /// so that each hand-off carries enough. (MobileNetV2 ran slower on two threads than on one
    /// when every small layer was split.)
    pub fn parallel_for_work(&self, count: usize, work: usize, task: &(dyn Fn(usize) + Sync)) {
        let total = count.saturating_mul(work.max(1));
        if self.workers.is_empty() || total < MIN_PARALLEL_WORK {
            (0..count).for_each(task);
            return;
        }
        let group = (MIN_TASK_WORK / work.max(1)).max(1);
        if group == 1 {
            return self.parallel_for(count, task);
        }
        self.parallel_for(count.div_ceil(group), &|g| (g * group..((g + 1) * group).min(count)).for_each(task));
    }

    /// Runs `task(i)` for every `i` in `0..count`, spread over the pool, and returns when all are
    /// done. A panic in a task is re-raised here after the others finish.
    pub fn parallel_for(&self, count: usize, task: &(dyn Fn(usize) + Sync)) {
        if count == 0 {
            return;
        }
        let guard = match self.busy.try_lock() {
            Ok(g) => Some(g),
            Err(TryLockError::Poisoned(e)) => Some(e.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        };
        if count == 1 || self.workers.is_empty() || guard.is_none() {
            (0..count).for_each(task);
            return;
        }
        // SAFETY: the erased closure is called only for claimed tasks i < count, and this
        // function does not return until all `count` tasks have finished, so no call outlives
        // the borrow. Workers that wake late find every share claimed and never call it.
        let task: *const (dyn Fn(usize) + Sync + '_) = task;
        let task: *const (dyn Fn(usize) + Sync + 'static) = unsafe { std::mem::transmute(task) };
        let job = Arc::new(Job::new(task, count, self.threads()));
        {
            let mut state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
            state.job = Some(job.clone());
            state.generation += 1;
            self.shared.published.store(state.generation, Ordering::Release);
            if self.shared.sleeping.load(Ordering::SeqCst) > 0 {
                self.shared.wake.notify_all();
            }
        }
        job.work(0);
        let finished = || job.finished.load(Ordering::Acquire) == count;
        spin_until(self.shared.spin, finished);
        if !finished() {
            let (lock, cv) = &job.done;
            let mut waiting = lock.lock().unwrap_or_else(|e| e.into_inner());
            *waiting = true;
            while !finished() {
                waiting = cv.wait(waiting).unwrap_or_else(|e| e.into_inner());
            }
        }
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner()).job = None;
        drop(guard);
        if job.panicked.load(Ordering::Relaxed) {
            panic!("a parallel task panicked");
        }
    }
}

/// Spins for at most `spin` until `ready` holds, yielding the core between checks so that on a
/// machine with more runnable threads than cores the spinner gives way instead of taking the
/// time the thread it waits for needs.
fn spin_until(spin: Duration, ready: impl Fn() -> bool) {
    if spin.is_zero() {
        return;
    }
    let start = std::time::Instant::now();
    while !ready() {
        for _ in 0..32 {
            std::hint::spin_loop();
        }
        std::thread::yield_now();
        if start.elapsed() > spin {
            return;
        }
    }
}

fn worker_loop(shared: &Shared, me: usize) {
    let mut seen = 0u64;
    loop {
        shared.wait_for_job(seen);
        let job = {
            let state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
            if state.shutdown {
                return;
            }
            // A job that is over already has been taken away (`job` is None): wait for the next.
            seen = state.generation;
            state.job.clone()
        };
        if let Some(job) = job {
            job.work(me);
        }
    }
}

impl Shared {
    /// Returns once a job newer than generation `seen` is published, or the pool shuts down:
    /// spins for `spin`, on and on while a run is engaged, then sleeps until notified.
    fn wait_for_job(&self, seen: u64) {
        let ready = || self.published.load(Ordering::Acquire) != seen;
        loop {
            spin_until(self.spin, ready);
            if ready() {
                return;
            }
            if self.engaged.load(Ordering::SeqCst) > 0 {
                continue;
            }
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            // Counted before `engaged` is read again: `engage` bumps `engaged` before it reads
            // `sleeping`, so one of the two sees the other (both SeqCst) and no worker sleeps
            // through an engagement.
            self.sleeping.fetch_add(1, Ordering::SeqCst);
            while !state.shutdown && state.generation == seen && self.engaged.load(Ordering::SeqCst) == 0 {
                state = self.wake.wait(state).unwrap_or_else(|e| e.into_inner());
            }
            self.sleeping.fetch_sub(1, Ordering::SeqCst);
            if state.shutdown || state.generation != seen {
                return;
            }
        }
    }
}

/// Keeps the pool's workers spinning between jobs while it lives; see [`ThreadPool::engage`].
pub struct Engaged<'a> {
    shared: Option<&'a Shared>,
}

impl Drop for Engaged<'_> {
    fn drop(&mut self) {
        if let Some(shared) = self.shared {
            shared.engaged.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        {
            let mut state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
            state.shutdown = true;
            // Spinning workers see a new generation and come to the lock, where they find the
            // shutdown.
            state.generation += 1;
            self.shared.published.store(state.generation, Ordering::Release);
        }
        self.shared.wake.notify_all();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// A pointer into an output buffer that parallel tasks share, each writing its own disjoint part
/// (a tile, a plane, a chunk). Whoever makes one promises that disjointness.
pub struct SharedMut<T = f32>(pub *mut T);
impl<T> Clone for SharedMut<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for SharedMut<T> {}
// SAFETY: tasks write disjoint parts of the buffer, which outlives the parallel_for call.
unsafe impl<T: Send> Send for SharedMut<T> {}
unsafe impl<T: Send> Sync for SharedMut<T> {}

impl std::fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ThreadPool({} threads)", self.threads())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_runs_once_and_the_caller_waits() {
        // With and without spinning: both ways of waiting must see every task finished.
        for pool in [ThreadPool::new(3), ThreadPool::with_spin(3, Duration::ZERO)] {
            for count in [0, 1, 2, 7, 1000] {
                let hits: Vec<AtomicUsize> = (0..count).map(|_| AtomicUsize::new(0)).collect();
                pool.parallel_for(count, &|i| {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                });
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1), "count {count}");
            }
        }
    }

    #[test]
    fn a_thread_runs_its_own_share_first_then_the_others() {
        let order = Mutex::new(Vec::new());
        let task = |i: usize| order.lock().unwrap().push(i);
        let task: &(dyn Fn(usize) + Sync) = &task;
        // SAFETY: the job is worked here, on this thread, while `task` lives.
        let task: *const (dyn Fn(usize) + Sync + 'static) = unsafe { std::mem::transmute(task) };
        // 10 tasks on 3 threads: shares 0..3, 3..6, 6..10; thread 1 alone takes them all.
        Job::new(task, 10, 3).work(1);
        assert_eq!(*order.lock().unwrap(), [3, 4, 5, 6, 7, 8, 9, 0, 1, 2]);
        // More shares than MAX_SHARES threads: the threads past it share the shares.
        order.lock().unwrap().clear();
        let job = Job::new(task, 40, 20);
        assert_eq!(job.shares, MAX_SHARES);
        job.work(MAX_SHARES + 1);
        let mut seen = order.lock().unwrap().clone();
        assert_eq!(seen[0], job.share_start(1));
        seen.sort_unstable();
        assert_eq!(seen, (0..40).collect::<Vec<_>>());
    }

    #[test]
    fn nested_and_concurrent_jobs_finish() {
        let pool = Arc::new(ThreadPool::new(2));
        let total = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    pool.parallel_for(8, &|_| {
                        pool.parallel_for(4, &|_| {
                            total.fetch_add(1, Ordering::Relaxed);
                        })
                    })
                });
            }
        });
        assert_eq!(total.load(Ordering::Relaxed), 4 * 8 * 4);
    }

    /// Waits up to five seconds for `cond`: thread scheduling on a loaded machine is slow, not
    /// wrong.
    fn eventually(cond: impl Fn() -> bool) -> bool {
        let start = std::time::Instant::now();
        while !cond() {
            if start.elapsed() > Duration::from_secs(5) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }

    #[test]
    fn engaging_wakes_the_workers_and_keeps_them_spinning_until_released() {
        let pool = ThreadPool::with_spin(3, Duration::from_micros(50));
        let sleeping = || pool.shared.sleeping.load(Ordering::SeqCst);
        assert!(eventually(|| sleeping() == 2), "idle workers fall asleep after their spin");
        let run = pool.engage();
        assert!(eventually(|| sleeping() == 0), "an engagement wakes the sleeping workers");
        // They stay awake between jobs, and jobs still see every task.
        for count in [2, 5, 64] {
            std::thread::sleep(Duration::from_millis(2));
            assert_eq!(sleeping(), 0, "a worker slept during the engagement");
            let hits = AtomicUsize::new(0);
            pool.parallel_for(count, &|_| {
                hits.fetch_add(1, Ordering::Relaxed);
            });
            assert_eq!(hits.load(Ordering::Relaxed), count);
        }
        drop(run);
        assert!(eventually(|| sleeping() == 2), "released workers sleep again");
        // A pool that never spins ignores engagements: its workers stay asleep.
        let quiet = ThreadPool::with_spin(2, Duration::ZERO);
        assert!(eventually(|| quiet.shared.sleeping.load(Ordering::SeqCst) == 1));
        let _run = quiet.engage();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(quiet.shared.sleeping.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_panicking_task_is_reported_and_the_pool_lives_on() {
        let pool = ThreadPool::new(2);
        let r = catch_unwind(AssertUnwindSafe(|| pool.parallel_for(4, &|i| assert!(i != 2, "task 2 fails"))));
        assert!(r.is_err());
        let n = AtomicUsize::new(0);
        pool.parallel_for(5, &|_| {
            n.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(n.load(Ordering::Relaxed), 5);
    }
}
