//! `crx580 run`: the demo, or a model on input files, printing or writing its outputs.

use crate::image::{class_scores, is_image, read_labels, top5, ImageArgs};
use crate::out::outln;
use crate::shapes::ShapeArgs;
use crate::{demo, load_input, read_inputs, summarize, DeviceArgs};
use clap::Args;
use crx580::{err, Result, Session, Tensor};
use std::path::PathBuf;

#[derive(Args)]
pub struct RunArgs {
    /// The .onnx model; leave out to run the built-in demo.
    model: Option<PathBuf>,
    /// Inputs as PATH or NAME=PATH: .npy, ONNX TensorProto .pb, or a .png/.jpg image (see
    /// --preprocess, --layout, --size); bare PATHs bind in input order.
    inputs: Vec<String>,
    /// Write output k as DIR/output_<k>.npy instead of printing a summary. Types numpy lacks:
    /// bfloat16 as its uint16 bits, float8/float4 as uint8 bit codes, int4/int2 as int8 values,
    /// uint4/uint2 as uint8 values.
    #[arg(long, value_name = "DIR")]
    output_dir: Option<PathBuf>,
    #[command(flatten)]
    images: ImageArgs,
    #[command(flatten)]
    shapes: ShapeArgs,
    #[command(flatten)]
    device: DeviceArgs,
}

pub fn run(a: RunArgs) -> Result<()> {
    let options = a.device.session_options()?;
    let Some(model_path) = &a.model else {
        return demo::run_demo(&options);
    };
    let model = a.shapes.apply(a.device.limits.load(model_path)?)?;
    let any_image = a.inputs.iter().any(|i| is_image(i));
    let labels = a.images.labels.as_deref().map(read_labels).transpose()?;
    let max_bytes = a.device.limits.max_tensor_bytes()?;
    let inputs = read_inputs(&model, &a.inputs, |p, i| load_input(p, i, &a.images, max_bytes))?;
    let session = Session::new(model, &options)?;
    let refs: Vec<&Tensor> = inputs.iter().collect();
    let outputs = session.run_positional(&refs)?;
    let infos = session.model().outputs();
    match &a.output_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| err!(Io, "cannot create {}: {e}", dir.display()))?;
            for (k, t) in outputs.iter().enumerate() {
                crx580::io::write_npy(&dir.join(format!("output_{k}.npy")), t)?;
            }
            outln!("wrote {} outputs to {}", outputs.len(), dir.display());
        }
        None => {
            for (info, t) in infos.iter().zip(&outputs) {
                // Top 5 when classes are what the user is after: a picture went in, or labels were given.
                let classes = if any_image || labels.is_some() { class_scores(t) } else { None };
                match classes {
                    Some(scores) => {
                        outln!("{}: {} {:?}, top 5 of {} classes:", info.name, t.dtype(), t.shape(), scores.len());
                        top5(&scores, labels.as_deref())?.iter().for_each(|l| outln!("{l}"));
                    }
                    None => outln!("{}: {} {:?} {}", info.name, t.dtype(), t.shape(), summarize(t)),
                }
            }
        }
    }
    Ok(())
}
