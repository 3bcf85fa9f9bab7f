//! The fixed pool of inference workers, and batching along dim 0.
//!
//! A request becomes a job in its model's queue plus a ticket (the model) in the pool's queue;
//! a worker that takes a ticket runs whatever that model has waiting: one job, or, with batching
//! on, up to `max_batch` rows of compatible jobs (same dtypes and non-batch dims), waiting up to
//! `delay` after the oldest one arrived for more. Every job has a ticket, so none is left behind;
//! a ticket whose job went out in an earlier batch finds nothing and costs nothing.
//!
//! Deadlines: a job whose deadline passed while queued is answered 504 without running; a run
//! gets the latest deadline of its jobs as its time limit (the engine stops between nodes), and
//! each job past its own deadline afterwards is answered 504 too. The worker lives on.

use super::metrics::Metrics;
use super::repository::Served;
use super::ApiError;
use crate::ir::bytes::{from_le_bytes, to_le_bytes};
use crate::ir::limits::with_time_limit;
use crate::{ErrorKind, Tensor};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub type Outputs = Result<Vec<Tensor>, ApiError>;

struct Job {
    id: u64,
    /// In model input order, checked against the model's declaration.
    inputs: Vec<Tensor>,
    arrived: Instant,
    deadline: Instant,
    reply: mpsc::Sender<Outputs>,
}

/// A model's waiting jobs.
#[derive(Default)]
pub struct Queue {
    jobs: Mutex<VecDeque<Job>>,
    arrived: Condvar,
}

#[derive(Debug, Clone)]
pub struct BatchConfig {
    /// Most rows (dim-0 entries) in one run; 1 turns batching off.
    pub max_batch: usize,
    /// How long a worker waits for more jobs after the oldest one arrived.
    pub delay: Duration,
}

pub struct Workers {
    tickets: Mutex<Option<SyncSender<Arc<Served>>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    next_id: AtomicU64,
    metrics: Arc<Metrics>,
}

impl Workers {
    /// `threads` workers, and room for `queue_capacity` waiting requests in all.
    pub fn start(
        threads: usize,
        queue_capacity: usize,
        config: BatchConfig,
        metrics: Arc<Metrics>,
    ) -> crate::Result<Workers> {
        let (send, receive) = mpsc::sync_channel::<Arc<Served>>(queue_capacity.max(1));
        let receive = Arc::new(Mutex::new(receive));
        let mut handles = Vec::new();
        for k in 0..threads.max(1) {
            let (receive, config, metrics) = (receive.clone(), config.clone(), metrics.clone());
            let handle = std::thread::Builder::new()
                .name(format!("crx580-worker-{k}"))
                .spawn(move || work(&receive, &config, &metrics))
                .map_err(|e| crate::err!(Io, "cannot start a worker thread: {e}"))?;
            handles.push(handle);
        }
        Ok(Workers {
            tickets: Mutex::new(Some(send)),
            threads: Mutex::new(handles),
            next_id: AtomicU64::new(0),
            metrics,
        })
    }

    /// Runs `inputs` (model order, already checked) on `model` and waits for the outputs, at most
    /// until `deadline` (plus a little, for the worker to notice).
    pub fn infer(&self, model: &Arc<Served>, inputs: Vec<Tensor>, deadline: Instant) -> Outputs {
        let (reply, answer) = mpsc::channel();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        model.queue.jobs.lock().unwrap_or_else(|e| e.into_inner()).push_back(Job {
            id,
            inputs,
            arrived: now,
            deadline,
            reply,
        });
        self.metrics.queue_depth.fetch_add(1, Ordering::Relaxed);
        model.queue.arrived.notify_all();
        let sent = match &*self.tickets.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(tickets) => tickets.try_send(model.clone()),
            None => Err(TrySendError::Disconnected(model.clone())),
        };
        if let Err(e) = sent {
            // No ticket: take the job back unless a worker already took it with another's ticket.
            let mut jobs = model.queue.jobs.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(k) = jobs.iter().position(|j| j.id == id) {
                jobs.remove(k);
                self.metrics.queue_depth.fetch_sub(1, Ordering::Relaxed);
                return Err(match e {
                    TrySendError::Full(_) => ApiError::new(503, "the server's request queue is full; try again")
                        .with_header("Retry-After", "1"),
                    TrySendError::Disconnected(_) => ApiError::new(503, "the server is stopping"),
                });
            }
        }
        let wait = deadline.saturating_duration_since(Instant::now()) + Duration::from_millis(500);
        match answer.recv_timeout(wait) {
            Ok(outputs) => outputs,
            Err(mpsc::RecvTimeoutError::Timeout) => Err(deadline_error()),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                Err(ApiError::new(500, "the worker dropped the request (a bug)"))
            }
        }
    }

    /// Lets the workers finish what is queued, then joins them.
    pub fn stop(&self) {
        self.tickets.lock().unwrap_or_else(|e| e.into_inner()).take();
        let threads: Vec<_> = self.threads.lock().unwrap_or_else(|e| e.into_inner()).drain(..).collect();
        threads.into_iter().for_each(|t| {
            let _ = t.join();
        });
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop();
    }
}

fn deadline_error() -> ApiError {
    ApiError::new(504, "the request passed its deadline")
}

fn work(tickets: &Mutex<Receiver<Arc<Served>>>, config: &BatchConfig, metrics: &Metrics) {
    loop {
        let ticket = tickets.lock().unwrap_or_else(|e| e.into_inner()).recv();
        let Ok(model) = ticket else { return };
        let batch = take_batch(&model, config);
        if batch.is_empty() {
            continue;
        }
        metrics.queue_depth.fetch_sub(batch.len() as i64, Ordering::Relaxed);
        metrics.observe_batch(batch.len());
        run_batch(&model, batch);
    }
}

/// Rows along dim 0 of a job (its first input's; the model's batch symbol ties them together).
fn rows(job: &Job) -> usize {
    job.inputs.first().and_then(|t| t.shape().first().copied()).unwrap_or(0)
}

/// Jobs can share a run when each input has the same dtype and the same dims after dim 0.
fn compatible(a: &Job, b: &Job) -> bool {
    a.inputs.len() == b.inputs.len()
        && a.inputs.iter().zip(&b.inputs).all(|(x, y)| {
            x.dtype() == y.dtype() && x.rank() == y.rank() && x.rank() > 0 && x.shape()[1..] == y.shape()[1..]
        })
}

fn take_batch(model: &Served, config: &BatchConfig) -> Vec<Job> {
    let mut jobs = model.queue.jobs.lock().unwrap_or_else(|e| e.into_inner());
    let Some(first) = jobs.pop_front() else { return Vec::new() };
    let batching = config.max_batch > 1 && model.batchable && rows(&first) > 0;
    let mut total = rows(&first);
    let wait_until = first.arrived + config.delay;
    let mut batch = vec![first];
    while batching && total < config.max_batch {
        let mut k = 0;
        while k < jobs.len() && total < config.max_batch {
            let n = rows(&jobs[k]);
            if n > 0 && total + n <= config.max_batch && compatible(&batch[0], &jobs[k]) {
                total += n;
                batch.extend(jobs.remove(k));
            } else {
                k += 1;
            }
        }
        let left = wait_until.saturating_duration_since(Instant::now());
        if total >= config.max_batch || left.is_zero() {
            break;
        }
        jobs = model.queue.arrived.wait_timeout(jobs, left).unwrap_or_else(|e| e.into_inner()).0;
    }
    batch
}

fn run_batch(model: &Served, batch: Vec<Job>) {
    let now = Instant::now();
    let (live, late): (Vec<Job>, Vec<Job>) = batch.into_iter().partition(|j| j.deadline > now);
    for job in late {
        let _ = job.reply.send(Err(ApiError::new(504, "the request passed its deadline while waiting for a worker")));
    }
    let Some(latest) = live.iter().map(|j| j.deadline).max() else { return };
    let limit = latest.saturating_duration_since(now);
    let results = if live.len() == 1 {
        vec![run_one(model, &live[0], limit)]
    } else {
        // A batch that fails as a whole (one bad request, or outputs that do not split along
        // dim 0) is run again request by request, so that one request cannot fail the others.
        run_stacked(model, &live, limit).unwrap_or_else(|_| live.iter().map(|j| run_one(model, j, limit)).collect())
    };
    let done = Instant::now();
    for (job, result) in live.into_iter().zip(results) {
        let answer = match result {
            Ok(_) if done > job.deadline => Err(deadline_error()),
            Ok(outputs) => Ok(outputs),
            Err(e) if e.kind == ErrorKind::ResourceLimit && done >= job.deadline => Err(deadline_error()),
            Err(e) => Err(ApiError::from_run(e)),
        };
        let _ = job.reply.send(answer);
    }
}

fn run_one(model: &Served, job: &Job, limit: Duration) -> crate::Result<Vec<Tensor>> {
    let refs: Vec<&Tensor> = job.inputs.iter().collect();
    with_time_limit(Some(limit), || model.session.run_positional(&refs))
}

/// Stacks the jobs' inputs along dim 0, runs once, and cuts each output back into per-job parts.
fn run_stacked(model: &Served, jobs: &[Job], limit: Duration) -> crate::Result<Vec<crate::Result<Vec<Tensor>>>> {
    let counts: Vec<usize> = jobs.iter().map(rows).collect();
    let total: usize = counts.iter().sum();
    let mut stacked = Vec::with_capacity(jobs[0].inputs.len());
    for k in 0..jobs[0].inputs.len() {
        let parts: Vec<&Tensor> = jobs.iter().map(|j| &j.inputs[k]).collect();
        stacked.push(stack(&parts, total)?);
    }
    let refs: Vec<&Tensor> = stacked.iter().collect();
    let outputs = with_time_limit(Some(limit), || model.session.run_positional(&refs))?;
    let mut per_job: Vec<Vec<Tensor>> = vec![Vec::with_capacity(outputs.len()); jobs.len()];
    for out in &outputs {
        for (j, part) in split(out, &counts, total)?.into_iter().enumerate() {
            per_job[j].push(part);
        }
    }
    Ok(per_job.into_iter().map(Ok).collect())
}

fn stack(parts: &[&Tensor], total: usize) -> crate::Result<Tensor> {
    let mut shape = parts[0].shape().to_vec();
    shape[0] = total;
    let mut bytes = Vec::new();
    for p in parts {
        bytes.extend(to_le_bytes(p)?);
    }
    let n = crate::ir::tensor::checked_len(&shape, parts[0].dtype())?;
    Tensor::from_data(shape, from_le_bytes(parts[0].dtype(), n, &bytes)?)
}

/// `t` cut along dim 0 into parts of `counts` rows; an error if dim 0 is not `total`.
fn split(t: &Tensor, counts: &[usize], total: usize) -> crate::Result<Vec<Tensor>> {
    if t.shape().first() != Some(&total) {
        crate::bail!(Shape, "an output of shape {:?} does not have the batch's {total} rows", t.shape());
    }
    let bytes = to_le_bytes(t)?;
    let row_bytes = bytes.len() / total.max(1);
    let mut parts = Vec::with_capacity(counts.len());
    let mut offset = 0;
    for &n in counts {
        let mut shape = t.shape().to_vec();
        shape[0] = n;
        let chunk = &bytes[offset..offset + n * row_bytes];
        offset += n * row_bytes;
        let len = crate::ir::tensor::checked_len(&shape, t.dtype())?;
        parts.push(Tensor::from_data(shape, from_le_bytes(t.dtype(), len, chunk)?)?);
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stacking_and_splitting_are_inverse() {
        let a = Tensor::new(vec![1, 2], vec![1f32, 2.]).unwrap();
        let b = Tensor::new(vec![2, 2], vec![3f32, 4., 5., 6.]).unwrap();
        let s = stack(&[&a, &b], 3).unwrap();
        assert_eq!(s, Tensor::new(vec![3, 2], vec![1f32, 2., 3., 4., 5., 6.]).unwrap());
        assert_eq!(split(&s, &[1, 2], 3).unwrap(), vec![a, b]);
        assert!(split(&s, &[1, 1], 2).is_err());
    }
}
