//! The bandwidth-bound kernels against the triad: the depthwise conv (3x3, stride 1 and 2, with
//! bias and Relu6 fused), max pooling (3x3 stride 2) and an elementwise Add, each on tensors far
//! larger than the caches, on one thread. Bytes are what the kernel must move at least: its input
//! read once and its output written once (as the triad counts), so the figure is comparable with
//! the triad's GB/s.

use crx580::backend::cpu::activation::Activation;
use crx580::backend::cpu::binary;
use crx580::backend::cpu::depthwise::{self, Depthwise};
use crx580::backend::cpu::maxpool;
use crx580::backend::cpu::pool::ThreadPool;
use crx580::ops::window::Axis;

use crate::huge::Huge;

/// One measured kernel: its name and a closure that runs it once and returns the bytes moved.
pub struct Case {
    pub name: String,
    pub run: Box<dyn FnMut() -> f64>,
}

/// A 3x3 (or `kernel`) window axis over `input` with stride `stride` and "same"-style padding.
fn axis(input: usize, kernel: usize, stride: usize) -> Axis {
    let pad = kernel / 2;
    let output = (input + 2 * pad - kernel) / stride + 1;
    Axis { input, kernel, stride, dilation: 1, pad_begin: pad, pad_end: pad, output }
}

/// MobileNetV2's depthwise layers (channels, input side, stride), all 3x3 with Relu6: tensors
/// of 0.1-1.5 MiB that live in the caches, so the figures show the kernel's own speed, not
/// memory's. `CRX580_DEPTHWISE=plane`, `=blocked` or `=rows` runs them all on one of the three
/// depthwise kernels (those it can take), to compare them (the default picks by plane shape).
pub const MOBILENET_V2: [(usize, usize, usize); 10] = [
    (32, 112, 1),
    (96, 112, 2),
    (144, 56, 1),
    (144, 56, 2),
    (192, 28, 1),
    (192, 28, 2),
    (384, 14, 1),
    (576, 14, 1),
    (576, 14, 2),
    (960, 7, 1),
];

/// One depthwise 3x3 + bias + Relu6 layer on `channels` planes of `side x side`.
pub fn depthwise_case(channels: usize, side: usize, stride: usize) -> Case {
    let plane = side * side;
    let x = Huge::from_fn(channels * plane, |i| (i % 13) as f32 * 0.1 - 0.5);
    let weights: Vec<f32> = (0..channels * 9).map(|i| (i % 7) as f32 * 0.05).collect();
    let bias: Vec<f32> = (0..channels).map(|i| i as f32 * 0.01).collect();
    let (h, w) = (axis(side, 3, stride), axis(side, 3, stride));
    let mut y = Huge::filled(channels * h.output * w.output, 0f32);
    let pool = ThreadPool::new(1);
    Case {
        name: format!("depthwise 3x3 stride {stride} + bias + Relu6, {channels} x {side}x{side}"),
        run: Box::new(move || {
            let p = Depthwise {
                x: &x,
                weights: &weights,
                bias: Some(&bias),
                residual: None,
                act: Activation::Clip(0.0, 6.0),
                channels,
                h,
                w,
            };
            depthwise::run(&pool, &p, channels, &mut y);
            assert!(y[y.len() / 2].is_finite());
            ((x.len() + y.len()) * 4) as f64
        }),
    }
}

/// The cases on planes of `side x side` (`channels` of them): about 2 x 4 x channels x side^2
/// bytes each.
pub fn cases(channels: usize, side: usize) -> Vec<Case> {
    let mut out = vec![];
    let plane = side * side;
    for stride in [1, 2] {
        out.push(depthwise_case(channels, side, stride));
    }
    let x = Huge::from_fn(channels * plane, |i| (i % 11) as f32);
    let (h, w) = (axis(side, 3, 2), axis(side, 3, 2));
    // As the engine's MaxPool decides, by the whole input's size.
    let ahead = crx580::backend::cpu::isa::prefetch_pays(x.len());
    let mut y = Huge::filled(channels * h.output * w.output, 0f32);
    out.push(Case {
        name: format!("max pool 3x3 stride 2, {channels} x {side}x{side}"),
        run: Box::new(move || {
            let out_plane = h.output * w.output;
            for (c, dst) in y.chunks_exact_mut(out_plane).enumerate() {
                maxpool::max_plane(&x[c * plane..(c + 1) * plane], &h, &w, dst, ahead);
            }
            assert!(y[y.len() / 2] >= 0.0);
            ((x.len() + y.len()) * 4) as f64
        }),
    });
    let len = channels * plane;
    let (a, b) = (Huge::filled(len, 1f32), Huge::filled(len, 2f32));
    let mut y = Huge::filled(len, 0f32);
    out.push(Case {
        name: format!("Add, 3 x {} MiB", (len * 4) >> 20),
        run: Box::new(move || {
            binary::add(&a, &b, &mut y);
            assert_eq!(y[len / 2], 3.0);
            (3 * len * 4) as f64
        }),
    });
    out
}
