//! The built-in demo: a small convolutional digit classifier trained (by
//! examples/digits/train_digits.py) on scikit-learn's 8x8 digits, run on held-out images.

use crate::out::outln;
use crx580::io::npy::from_npy;
use crx580::{Model, Result, Session, SessionOptions};

const MODEL: &[u8] = include_bytes!("../../../examples/digits/digits.onnx");
const SAMPLES: &[u8] = include_bytes!("../../../examples/digits/samples.npy");
const LABELS: &[u8] = include_bytes!("../../../examples/digits/labels.npy");

/// How many of the images are drawn as text.
const DRAWN: usize = 4;

pub fn run_demo(options: &SessionOptions) -> Result<()> {
    let session = Session::new(Model::from_bytes(MODEL)?, options)?;
    let images = from_npy(SAMPLES)?;
    let labels = from_npy(LABELS)?.to_i64_vec()?;
    let outputs = session.run(&[("image", &images)])?;
    let names = session.model().outputs();
    let k = names.iter().position(|o| o.name == "probabilities").unwrap_or(0);
    let probs = outputs.get(k).ok_or_else(|| crx580::err!(Runtime, "the demo model gave no outputs"))?;
    let p = probs.as_slice::<f32>()?;
    let classes = probs.shape().get(1).copied().filter(|&c| c > 0 && p.len() == c * labels.len());
    let classes =
        classes.ok_or_else(|| crx580::err!(Runtime, "the demo model gave scores of shape {:?}", probs.shape()))?;
    outln!("crx580 demo: a convolutional digit classifier (examples/digits) on {} held-out 8x8 images", labels.len());
    outln!();
    let pixels = images.as_slice::<f32>()?;
    draw(&pixels[..(DRAWN.min(labels.len()) * 64).min(pixels.len())]);
    let mut correct = 0;
    for (i, &label) in labels.iter().enumerate() {
        let row = &p[i * classes..(i + 1) * classes];
        let (pred, conf) = row.iter().enumerate().fold((0, f32::MIN), |b, (k, &v)| if v > b.1 { (k, v) } else { b });
        let ok = pred as i64 == label;
        correct += ok as usize;
        if i < DRAWN || !ok {
            outln!(
                "image {i:2}: label {label}, predicted {pred} (score {conf:.3}){}",
                if ok { "" } else { "  <- wrong" }
            );
        }
    }
    outln!();
    outln!(
        "accuracy: {correct}/{} = {:.1}% on {}",
        labels.len(),
        100.0 * correct as f64 / labels.len() as f64,
        crx580::backend::list_devices().join(", ")
    );
    Ok(())
}

/// Draws 8x8 images side by side with characters by intensity.
fn draw(pixels: &[f32]) {
    let n = pixels.len() / 64;
    for y in 0..8 {
        let mut line = String::new();
        for img in 0..n {
            for x in 0..8 {
                let v = pixels[img * 64 + y * 8 + x];
                line.push_str(match v {
                    v if v > 0.75 => "##",
                    v if v > 0.4 => "++",
                    v if v > 0.1 => "..",
                    _ => "  ",
                });
            }
            line.push_str("    ");
        }
        outln!("  {line}");
    }
    outln!();
}
