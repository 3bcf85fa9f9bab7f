//! NonMaxSuppression (opsets 10 and 11): greedy per-(batch, class) box selection by score, dropping
//! boxes whose IoU with an already selected box exceeds the threshold.

use super::{input, opt_input, BuildCtx, Op, Registry};
use crate::ir::{DType, Dim, Fact, Tensor};
use crate::{bail, Result};

pub fn register(r: &mut Registry) {
    r.add("NonMaxSuppression", build_nms);
}

#[derive(Debug)]
pub struct NonMaxSuppression {
    /// Boxes are `[x_center, y_center, width, height]` instead of two corners `[y1, x1, y2, x2]`.
    center_point_box: bool,
}

fn build_nms(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    if ctx.opset < 10 {
        return Err(ctx.unsupported_version());
    }
    let center_point_box = match ctx.attrs.int_or("center_point_box", 0)? {
        0 => false,
        1 => true,
        other => bail!(InvalidModel, "NonMaxSuppression: center_point_box must be 0 or 1, got {other}"),
    };
    Ok(Box::new(NonMaxSuppression { center_point_box }))
}

/// A box as `(x_min, y_min, x_max, y_max)`.
type Corners = (f64, f64, f64, f64);

impl NonMaxSuppression {
    fn corners(&self, b: &[f64]) -> Corners {
        if self.center_point_box {
            let (hw, hh) = (b[2] / 2.0, b[3] / 2.0);
            (b[0] - hw, b[1] - hh, b[0] + hw, b[1] + hh)
        } else {
            // Corners may come in either order.
            (b[1].min(b[3]), b[0].min(b[2]), b[1].max(b[3]), b[0].max(b[2]))
        }
    }
}

/// Whether the IoU of `a` and `b` is above `threshold`; boxes without area never suppress.
fn overlaps(a: Corners, b: Corners, threshold: f64) -> bool {
    let (ix0, iy0, ix1, iy1) = (a.0.max(b.0), a.1.max(b.1), a.2.min(b.2), a.3.min(b.3));
    if ix1 <= ix0 || iy1 <= iy0 {
        return false;
    }
    let inter = (ix1 - ix0) * (iy1 - iy0);
    let area_a = (a.2 - a.0) * (a.3 - a.1);
    let area_b = (b.2 - b.0) * (b.3 - b.1);
    let union = area_a + area_b - inter;
    if area_a <= 0.0 || area_b <= 0.0 || union <= 0.0 {
        return false;
    }
    inter / union > threshold
}

/// The first value of an optional scalar input, if it has one.
fn scalar(inputs: &[Option<&Tensor>], i: usize) -> Result<Option<f64>> {
    Ok(opt_input(inputs, i).map(|t| t.to_f64_vec()).transpose()?.and_then(|v| v.first().copied()))
}

impl Op for NonMaxSuppression {
    fn infer(&self, _inputs: &[Option<&Fact>]) -> Result<Vec<Fact>> {
        Ok(vec![Fact::new(DType::I64, vec![Dim::Unknown, Dim::Known(3)])])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (boxes_t, scores_t) = (input(inputs, 0)?, input(inputs, 1)?);
        let (&[batches, num_boxes, 4], &[score_batches, classes, score_boxes]) = (boxes_t.shape(), scores_t.shape())
        else {
            bail!(
                Shape,
                "NonMaxSuppression: boxes must be [batch, boxes, 4] and scores [batch, classes, boxes], got {:?} and {:?}",
                boxes_t.shape(),
                scores_t.shape()
            )
        };
        if score_batches != batches || score_boxes != num_boxes {
            bail!(
                Shape,
                "NonMaxSuppression: boxes {:?} and scores {:?} disagree on batch or box count",
                boxes_t.shape(),
                scores_t.shape()
            );
        }
        let max_per_class = opt_input(inputs, 2).map(|t| t.to_i64_vec()).transpose()?;
        let max_per_class = max_per_class.and_then(|v| v.first().copied()).unwrap_or(0).max(0) as usize;
        let iou_threshold = scalar(inputs, 3)?.unwrap_or(0.0);
        let score_threshold = scalar(inputs, 4)?;
        let boxes = boxes_t.to_f64_vec()?;
        let scores = scores_t.to_f64_vec()?;
        let corners: Vec<Corners> = boxes.chunks_exact(4).map(|b| self.corners(b)).collect();

        let mut selected: Vec<i64> = Vec::new();
        let mut candidates: Vec<(f64, usize)> = Vec::with_capacity(num_boxes);
        let mut kept: Vec<usize> = Vec::new();
        for b in 0..batches {
            let batch_corners = &corners[b * num_boxes..(b + 1) * num_boxes];
            for c in 0..classes {
                let class_scores = &scores[(b * classes + c) * num_boxes..(b * classes + c + 1) * num_boxes];
                candidates.clear();
                candidates.extend(
                    class_scores
                        .iter()
                        .enumerate()
                        .filter(|(_, &s)| score_threshold.is_none_or(|t| s > t))
                        .map(|(i, &s)| (s, i)),
                );
                // Highest score first; among equal scores the lower box index wins.
                candidates.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)));
                kept.clear();
                for &(_, i) in &candidates {
                    if kept.len() >= max_per_class {
                        break;
                    }
                    if kept.iter().all(|&k| !overlaps(batch_corners[i], batch_corners[k], iou_threshold)) {
                        kept.push(i);
                        selected.extend([b as i64, c as i64, i as i64]);
                    }
                }
            }
        }
        let rows = selected.len() / 3;
        Ok(vec![Tensor::new(vec![rows, 3], selected)?])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::activation::test_util::build;
    use crate::ErrorKind;

    fn run(center: i64, boxes: Vec<f32>, scores: Vec<f32>, max: i64, iou: f32, score: Option<f32>) -> Result<Vec<i64>> {
        let op = build("NonMaxSuppression", 11, vec![("center_point_box", crate::ir::Attr::Int(center))], 1)?;
        let n = boxes.len() / 4;
        let boxes = Tensor::new(vec![1, n, 4], boxes)?;
        let classes = scores.len() / n;
        let scores = Tensor::new(vec![1, classes, n], scores)?;
        let (max, iou) = (Tensor::vector(vec![max]), Tensor::vector(vec![iou]));
        let score = score.map(|s| Tensor::vector(vec![s]));
        let out = op.eval(&[Some(&boxes), Some(&scores), Some(&max), Some(&iou), score.as_ref()])?.remove(0);
        out.into_vec()
    }

    // The ONNX node test "suppress_by_IOU": boxes 0, 1, 2 overlap heavily, as do 3, 4, 5.
    const BOXES: [f32; 24] = [
        0.0, 0.0, 1.0, 1.0, 0.0, 0.1, 1.0, 1.1, 0.0, -0.1, 1.0, 0.9, 0.0, 10.0, 1.0, 11.0, 0.0, 10.1, 1.0, 11.1, 0.0,
        100.0, 1.0, 101.0,
    ];
    const SCORES: [f32; 6] = [0.9, 0.75, 0.6, 0.95, 0.5, 0.3];

    #[test]
    fn suppresses_overlapping_boxes() {
        let got = run(0, BOXES.to_vec(), SCORES.to_vec(), 3, 0.5, Some(0.0)).unwrap();
        assert_eq!(got, vec![0, 0, 3, 0, 0, 0, 0, 0, 5]);
        // Limit to 2 per class, and a score threshold that drops box 5 (0.3).
        let got = run(0, BOXES.to_vec(), SCORES.to_vec(), 2, 0.5, Some(0.4)).unwrap();
        assert_eq!(got, vec![0, 0, 3, 0, 0, 0]);
        // Without max_output_boxes_per_class nothing is selected.
        assert!(run(0, BOXES.to_vec(), SCORES.to_vec(), 0, 0.5, None).unwrap().is_empty());
    }

    #[test]
    fn center_point_boxes() {
        // Same boxes as BOXES, written as centers and sizes.
        let boxes = vec![
            0.5, 0.5, 1.0, 1.0, 0.5, 0.6, 1.0, 1.0, 0.5, 0.4, 1.0, 1.0, 0.5, 10.5, 1.0, 1.0, 0.5, 10.6, 1.0, 1.0, 0.5,
            100.5, 1.0, 1.0,
        ];
        assert_eq!(run(1, boxes, SCORES.to_vec(), 3, 0.5, Some(0.0)).unwrap(), vec![0, 0, 3, 0, 0, 0, 0, 0, 5]);
    }

    #[test]
    fn mismatched_shapes_are_errors() {
        let op = build("NonMaxSuppression", 10, vec![], 1).unwrap();
        let boxes = Tensor::new(vec![1, 6, 4], BOXES.to_vec()).unwrap();
        let scores = Tensor::new(vec![1, 1, 5], vec![0.5f32; 5]).unwrap();
        let e = op.eval(&[Some(&boxes), Some(&scores)]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Shape, "{e}");
        let flat = Tensor::new(vec![6, 4], BOXES.to_vec()).unwrap();
        assert!(op.eval(&[Some(&flat), Some(&scores)]).is_err());
    }
}
