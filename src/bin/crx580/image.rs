//! Pictures as model inputs (`crx580 run MODEL cat.jpg`): decode a PNG or JPEG, resize it, lay it
//! out as the input wants (NCHW or NHWC) and normalise it; then show classifier-shaped outputs as
//! their top 5 classes.

use crate::shapes::shape_string;
use clap::{Args, ValueEnum};
use crx580::{bail, err, DType, Dim, IoInfo, Result, Tensor};
use image::imageops::FilterType;
use std::path::{Path, PathBuf};

#[derive(Args, Default)]
#[command(next_help_heading = "Pictures (.png, .jpg inputs)")]
pub struct ImageArgs {
    /// How pixels become numbers: imagenet ([0,1], minus the ImageNet mean, over its std, per RGB
    /// channel), scale01 ([0,1]) or none (0..255). Default: imagenet for RGB inputs, scale01 for
    /// grayscale, none for uint8 inputs.
    #[arg(long, value_enum)]
    pub preprocess: Option<Preprocess>,
    /// The input's layout; default: nhwc when only its last dim is 1 or 3 channels, else nchw.
    #[arg(long, value_enum)]
    pub layout: Option<Layout>,
    /// Resize images to WxH; default: the input's declared height and width, or the image's own.
    #[arg(long, value_name = "WxH")]
    pub size: Option<String>,
    /// Class names, one per line, for the top 5 of classifier outputs.
    #[arg(long, value_name = "FILE")]
    pub labels: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Preprocess {
    Imagenet,
    Scale01,
    None,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Layout {
    Nchw,
    Nhwc,
}

const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];
/// Decoded images larger than this on a side are refused before their pixels are allocated.
const MAX_SIDE: u32 = 16384;

pub fn is_image(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    [".png", ".jpg", ".jpeg"].iter().any(|e| lower.ends_with(e))
}

/// The image at `path` as a tensor for `input`, within `max_bytes`.
pub fn image_tensor(path: &Path, input: &IoInfo, a: &ImageArgs, max_bytes: usize) -> Result<Tensor> {
    let name = &input.name;
    let declared: Vec<Dim> = input.shape.clone().unwrap_or_else(|| vec![Dim::Unknown; 4]);
    if !(3..=4).contains(&declared.len()) {
        bail!(InvalidInput, "input '{name}' has rank {}: an image fills a rank-4 (or rank-3) input", declared.len());
    }
    let batched = declared.len() == 4;
    if batched && declared[0].known().is_some_and(|n| n != 1) {
        bail!(InvalidInput, "input '{name}' takes a batch of {}; one image is a batch of 1", declared[0]);
    }
    let is_channels = |d: &Dim| matches!(d.known(), Some(1 | 3));
    let last = declared.len() - 1;
    let first = usize::from(batched);
    let layout = a.layout.unwrap_or(if is_channels(&declared[last]) && !is_channels(&declared[first]) {
        Layout::Nhwc
    } else {
        Layout::Nchw
    });
    let (c_at, h_at, w_at) = match layout {
        Layout::Nchw => (first, first + 1, first + 2),
        Layout::Nhwc => (last, first, first + 1),
    };
    let channels = match declared[c_at].known() {
        None => 3,
        Some(c @ (1 | 3)) => c,
        Some(c) => bail!(
            InvalidInput,
            "input '{name}' {} has {c} channels in {} layout; an image gives 1 (gray) or 3 (RGB) (try --layout)",
            shape_string(&declared),
            if layout == Layout::Nchw { "nchw" } else { "nhwc" }
        ),
    };
    let dtype = input.dtype.unwrap_or(DType::F32);
    let preprocess = match (a.preprocess, dtype) {
        (None | Some(Preprocess::None), DType::U8) => Preprocess::None,
        (Some(p), DType::U8) => {
            bail!(InvalidInput, "input '{name}' is uint8: it takes raw pixels (--preprocess none), not {}", p.name())
        }
        (_, d) if !d.is_float() => bail!(InvalidInput, "input '{name}' is {d}: images fill float or uint8 inputs"),
        (Some(Preprocess::Imagenet), _) if channels == 1 => {
            bail!(InvalidInput, "input '{name}' has 1 channel: imagenet normalisation is for RGB (use scale01 or none)")
        }
        (Some(p), _) => p,
        (None, _) if channels == 1 => Preprocess::Scale01,
        (None, _) => Preprocess::Imagenet,
    };

    let decoded = decode(path)?;
    let (w, h) = target_size(a.size.as_deref(), &declared[w_at], &declared[h_at], decoded.width(), decoded.height())?;
    let elems = (w as usize).checked_mul(h as usize).and_then(|n| n.checked_mul(channels * 4));
    if elems.is_none_or(|b| b > max_bytes) {
        bail!(
            ResourceLimit,
            "{}: a {w}x{h} image of {channels} channels is over the --max-memory limit",
            path.display()
        );
    }
    let resized = if (w, h) == (decoded.width(), decoded.height()) {
        decoded
    } else {
        decoded.resize_exact(w, h, FilterType::Triangle)
    };
    let pixels: Vec<u8> = if channels == 3 { resized.into_rgb8().into_raw() } else { resized.into_luma8().into_raw() };

    let (hw, c) = ((w * h) as usize, channels);
    let mut values = vec![0f32; hw * c];
    for (p, px) in pixels.chunks_exact(c).enumerate() {
        for (k, &v) in px.iter().enumerate() {
            let x = match preprocess {
                Preprocess::None => v as f32,
                Preprocess::Scale01 => v as f32 / 255.0,
                Preprocess::Imagenet => (v as f32 / 255.0 - IMAGENET_MEAN[k]) / IMAGENET_STD[k],
            };
            values[if layout == Layout::Nchw { k * hw + p } else { p * c + k }] = x;
        }
    }
    let mut shape = match layout {
        Layout::Nchw => vec![c, h as usize, w as usize],
        Layout::Nhwc => vec![h as usize, w as usize, c],
    };
    if batched {
        shape.insert(0, 1);
    }
    let t = Tensor::new(shape, values)?;
    if dtype == DType::F32 {
        Ok(t)
    } else {
        t.cast_numeric(dtype)
    }
}

impl Preprocess {
    fn name(self) -> &'static str {
        match self {
            Preprocess::Imagenet => "imagenet",
            Preprocess::Scale01 => "scale01",
            Preprocess::None => "none",
        }
    }
}

fn decode(path: &Path) -> Result<image::DynamicImage> {
    let fail =
        |e: &dyn std::fmt::Display| err!(InvalidInput, "{}: not a PNG or JPEG image we can read: {e}", path.display());
    let mut reader = image::ImageReader::open(path)
        .map_err(|e| err!(Io, "cannot read {}: {e}", path.display()))?
        .with_guessed_format()
        .map_err(|e| fail(&e))?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    reader.limits(limits);
    reader.decode().map_err(|e| fail(&e))
}

/// `--size WxH`, else the declared dims, else the image's own size.
fn target_size(size: Option<&str>, w_dim: &Dim, h_dim: &Dim, image_w: u32, image_h: u32) -> Result<(u32, u32)> {
    if let Some(s) = size {
        let parsed = s
            .split_once(['x', 'X'])
            .and_then(|(w, h)| Some((w.trim().parse::<u32>().ok()?, h.trim().parse::<u32>().ok()?)));
        return match parsed {
            Some((w, h)) if w > 0 && h > 0 && w <= MAX_SIDE && h <= MAX_SIDE => {
                for (what, want, got) in [("width", w_dim, w), ("height", h_dim, h)] {
                    if let Some(n) = want.known().filter(|&n| n != got as usize) {
                        bail!(InvalidInput, "--size {s}: the model's input has {what} {n}");
                    }
                }
                Ok((w, h))
            }
            _ => bail!(InvalidInput, "--size '{s}' is not WIDTHxHEIGHT such as 224x224 (each 1..={MAX_SIDE})"),
        };
    }
    let fixed = |d: &Dim, own: u32| {
        d.known().and_then(|n| u32::try_from(n).ok()).filter(|&n| n > 0 && n <= MAX_SIDE).unwrap_or(own)
    };
    Ok((fixed(w_dim, image_w), fixed(h_dim, image_h)))
}

/// Reads a labels file: one class name per line.
pub fn read_labels(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| err!(Io, "cannot read labels {}: {e}", path.display()))?;
    let mut labels: Vec<String> = text.lines().map(|l| l.trim().to_string()).collect();
    while labels.last().is_some_and(|l| l.is_empty()) {
        labels.pop();
    }
    Ok(labels)
}

/// The class scores of a classifier-shaped output (one batch item: every dim but one is 1, and that
/// one has at least 2 entries), or `None`.
pub fn class_scores(t: &Tensor) -> Option<Vec<f64>> {
    if !t.dtype().is_float() {
        return None;
    }
    let big: Vec<usize> = t.shape().iter().copied().filter(|&d| d != 1).collect();
    if big.len() != 1 || big[0] < 2 {
        return None;
    }
    t.to_f64_vec().ok()
}

/// The top 5 as printable lines: rank, class index, label, score, and the softmax probability when
/// the scores are not already a distribution.
pub fn top5(scores: &[f64], labels: Option<&[String]>) -> Result<Vec<String>> {
    let label = |k: usize| -> Result<String> {
        Ok(match labels {
            None => String::new(),
            Some(l) if l.len() == scores.len() => format!("  {}", l[k]),
            // TensorFlow classifiers put a "background" class first (1001 scores for 1000 labels).
            Some(l) if l.len() + 1 == scores.len() => format!("  {}", if k == 0 { "(background)" } else { &l[k - 1] }),
            Some(l) => {
                bail!(InvalidInput, "the labels file has {} lines but the output has {} classes", l.len(), scores.len())
            }
        })
    };
    let is_distribution =
        scores.iter().all(|&s| (0.0..=1.0).contains(&s)) && (scores.iter().sum::<f64>() - 1.0).abs() < 1e-3;
    let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let z: f64 = scores.iter().map(|&s| (s - max).exp()).sum();
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    order
        .into_iter()
        .take(5)
        .enumerate()
        .map(|(rank, k)| {
            let p =
                if is_distribution { String::new() } else { format!("  softmax {:.4}", (scores[k] - max).exp() / z) };
            Ok(format!("  {}. class {k:<5} score {:.4}{p}{}", rank + 1, scores[k], label(k)?))
        })
        .collect()
}
