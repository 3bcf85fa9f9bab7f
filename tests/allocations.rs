//! The engine's memory plan, checked with a counting allocator rather than a timer: once a session
//! has run an input shape, later runs of it make no tensor-sized heap allocation except for the
//! outputs they hand to the caller. Dead values' buffers go back to the plan's pool and the next
//! kernels take them from there (src/backend/buffers.rs).
//!
//! What is still allocated per run is small bookkeeping (shape vectors, per-node argument lists,
//! the output list): this test prints its count, and bounds its bytes.

use crx580::{Device, Model, Session, SessionOptions, Tensor};
use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};

/// Allocations at least this big count as tensor-sized. The models below run at batch sizes that
/// make every intermediate tensor bigger than this; the bookkeeping stays well below it.
const LARGE: usize = 64 * 1024;

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static SMALL: AtomicUsize = AtomicUsize::new(0);
static SMALL_BYTES: AtomicUsize = AtomicUsize::new(0);
static LARGE_COUNT: AtomicUsize = AtomicUsize::new(0);
static LARGE_BYTES: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Relaxed) {
            if layout.size() >= LARGE {
                LARGE_COUNT.fetch_add(1, Relaxed);
                LARGE_BYTES.fetch_add(layout.size(), Relaxed);
            } else {
                SMALL.fetch_add(1, Relaxed);
                SMALL_BYTES.fetch_add(layout.size(), Relaxed);
            }
        }
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` above, i.e. from the system allocator with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Relaxed) && new_size > layout.size() {
            let counter = if new_size >= LARGE { &LARGE_COUNT } else { &SMALL };
            counter.fetch_add(1, Relaxed);
            let bytes = if new_size >= LARGE { &LARGE_BYTES } else { &SMALL_BYTES };
            bytes.fetch_add(new_size, Relaxed);
        }
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The counters are global: tests that count take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

struct PerRun {
    large: usize,
    large_bytes: usize,
    small: usize,
    small_bytes: usize,
}

/// Allocations per run over `runs` runs of `session` on `inputs`, after three warm runs.
fn allocations_per_run(session: &Session, inputs: &[&Tensor], runs: usize) -> (PerRun, usize) {
    for _ in 0..3 {
        session.run_positional(inputs).unwrap();
    }
    let out_bytes: usize = session.run_positional(inputs).unwrap().iter().map(|t| t.len() * t.dtype().size()).sum();
    for c in [&SMALL, &SMALL_BYTES, &LARGE_COUNT, &LARGE_BYTES] {
        c.store(0, Relaxed);
    }
    COUNTING.store(true, Relaxed);
    for _ in 0..runs {
        drop(session.run_positional(inputs).unwrap());
    }
    COUNTING.store(false, Relaxed);
    let per = |c: &AtomicUsize| c.load(Relaxed) / runs;
    let counts = PerRun {
        large: per(&LARGE_COUNT),
        large_bytes: per(&LARGE_BYTES),
        small: per(&SMALL),
        small_bytes: per(&SMALL_BYTES),
    };
    (counts, out_bytes)
}

/// Golden models whose nodes all have fast kernels (which take their outputs from the pool), or
/// run as views (Flatten, Reshape), at a batch size where every intermediate tensor is tensor-sized.
const MODELS: &[(&str, &[usize])] =
    &[("cnn_bn", &[64, 3, 16, 16]), ("mlp", &[4096, 16]), ("digits", &[256, 1, 8, 8]), ("qdq_cnn", &[512, 3, 8, 8])];

#[test]
fn steady_state_runs_allocate_no_intermediate_tensors() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/models/golden");
    let mut failures = vec![];
    for (name, shape) in MODELS {
        let model = Model::load(golden.join(name).join("model.onnx")).unwrap();
        let n: usize = shape.iter().product();
        let x = Tensor::new(shape.to_vec(), (0..n).map(|i| (i % 17) as f32 / 17.0).collect::<Vec<f32>>()).unwrap();
        for threads in [1, 2] {
            let options = SessionOptions { device: Device::Cpu, threads, ..SessionOptions::default() };
            let session = Session::new(model.clone(), &options).unwrap();
            let kernels = session.kernels();
            let reference: Vec<&String> =
                kernels.iter().filter(|(_, k, _)| *k == "reference").map(|(op, _, _)| op).collect();
            assert!(
                reference.iter().all(|op| *op == "Flatten" || *op == "Reshape"),
                "{name}: reference kernels {reference:?}"
            );
            let (per, out_bytes) = allocations_per_run(&session, &[&x], 5);
            println!(
                "{name} {shape:?} ({threads} threads, {} nodes): per run {} tensor-sized allocations ({} bytes; \
                 outputs {out_bytes} bytes) and {} small ones ({} bytes)",
                kernels.len(),
                per.large,
                per.large_bytes,
                per.small,
                per.small_bytes
            );
            // The outputs handed back are the only tensor-sized allocations: one each. An output
            // may leave in a recycled buffer up to 4 times its size (the pool's best fit), and
            // then the next run makes a new buffer of that size in its place.
            let outputs = session.model().outputs().len();
            if per.large > outputs || per.large_bytes > 4 * out_bytes {
                failures.push(format!(
                    "{name} at {threads} threads: {} tensor-sized allocations per run ({} bytes), for {outputs} outputs \
                     of {out_bytes} bytes",
                    per.large, per.large_bytes
                ));
            }
            // Outputs under LARGE, and bookkeeping: shapes, argument lists, and the conv kernel's
            // per-image patch descriptors (a few dozen bytes an image).
            if per.small_bytes > out_bytes + 128 * 1024 {
                failures.push(format!("{name} at {threads} threads: {} small bytes per run", per.small_bytes));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A server batching requests runs one session on a few batch sizes, interleaved. Each input-shape
/// signature keeps its own buffers (a bounded number of signatures), so switching between them
/// costs no more tensor-sized allocation than running one shape: one per output.
#[test]
fn interleaved_input_shapes_reuse_their_own_buffers() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/models/golden");
    let model = Model::load(golden.join("cnn_bn").join("model.onnx")).unwrap();
    let input = |batch: usize| {
        let n = batch * 3 * 16 * 16;
        Tensor::new(vec![batch, 3, 16, 16], (0..n).map(|i| (i % 13) as f32 / 13.0).collect::<Vec<f32>>()).unwrap()
    };
    // Every intermediate tensor of both is tensor-sized; the outputs (10 classes) are not.
    let (big, small) = (input(64), input(16));
    let session =
        Session::new(model, &SessionOptions { device: Device::Cpu, threads: 1, ..SessionOptions::default() }).unwrap();
    let run_both = || {
        drop(session.run_positional(&[&big]).unwrap());
        drop(session.run_positional(&[&small]).unwrap());
    };
    for _ in 0..3 {
        run_both();
    }
    LARGE_COUNT.store(0, Relaxed);
    COUNTING.store(true, Relaxed);
    for _ in 0..5 {
        run_both();
    }
    COUNTING.store(false, Relaxed);
    let per_pair = LARGE_COUNT.load(Relaxed) as f64 / 5.0;
    assert!(per_pair == 0.0, "{per_pair} tensor-sized allocations per pair of runs");
}
