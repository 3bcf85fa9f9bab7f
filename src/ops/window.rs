//! Sliding-window geometry shared by Conv, ConvTranspose and the pools: the `kernel_shape`,
//! `strides`, `dilations`, `pads`, `auto_pad` and `ceil_mode` attributes, and the output size and
//! padding they give for each spatial axis.

use crate::ir::{Attributes, Dim};
use crate::{bail, err, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoPad {
    NotSet,
    SameUpper,
    SameLower,
    Valid,
}

/// The window attributes as written in the node; lists that were left out default per axis
/// (stride 1, dilation 1, no padding) once the spatial rank is known.
#[derive(Debug, Clone)]
pub struct WindowAttrs {
    pub kernel_shape: Option<Vec<usize>>,
    strides: Option<Vec<usize>>,
    dilations: Option<Vec<usize>>,
    /// All begins, then all ends, as in ONNX.
    pads: Option<Vec<usize>>,
    pub auto_pad: AutoPad,
    pub ceil_mode: bool,
}

/// One spatial axis of a resolved window: sizes, and the padding actually applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Axis {
    pub input: usize,
    pub kernel: usize,
    pub stride: usize,
    pub dilation: usize,
    pub pad_begin: usize,
    pub pad_end: usize,
    pub output: usize,
}

impl Axis {
    /// A unit axis: what the kernels put in front of 1-D and 2-D problems to loop over three axes.
    pub const UNIT: Axis = Axis { input: 1, kernel: 1, stride: 1, dilation: 1, pad_begin: 0, pad_end: 0, output: 1 };

    /// The outputs `lo..hi` whose kernel tap `k` lands inside the input (not in padding). Output `o`
    /// reads input position `o * stride + k * dilation - pad_begin`.
    pub fn outputs_reading_input(&self, k: usize) -> (usize, usize) {
        let offset = k * self.dilation;
        let lo = self.pad_begin.saturating_sub(offset).div_ceil(self.stride);
        let hi = (self.input + self.pad_begin).saturating_sub(offset).div_ceil(self.stride).min(self.output);
        (lo.min(hi), hi)
    }

    /// The input position that output `o` reads with tap `k`. Only for taps inside the input, as
    /// found by [`Axis::outputs_reading_input`] or [`Axis::taps_below`].
    pub fn input_position(&self, o: usize, k: usize) -> usize {
        o * self.stride + k * self.dilation - self.pad_begin
    }

    /// How many of output `o`'s taps fall before `bound`, a position counted from the start of
    /// the leading padding. `taps_below(o, pad_begin)..taps_below(o, pad_begin + input)` are the
    /// taps inside the input.
    pub fn taps_below(&self, o: usize, bound: usize) -> usize {
        let start = o * self.stride;
        if start >= bound {
            0
        } else {
            (bound - start).div_ceil(self.dilation).min(self.kernel)
        }
    }
}

/// Reads an optional list attribute whose entries must all be at least `min`.
fn list_attr(attrs: &Attributes, name: &str, min: i64) -> Result<Option<Vec<usize>>> {
    let Some(values) = attrs.ints(name)? else { return Ok(None) };
    values
        .iter()
        .map(|&v| {
            if v < min {
                bail!(InvalidModel, "attribute '{name}' has {v}, values must be at least {min}");
            }
            usize::try_from(v).map_err(|_| err!(InvalidModel, "attribute '{name}' value {v} is too large"))
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

/// Reads an optional list attribute of non-negative sizes (`output_padding`, `output_shape`).
pub fn sizes_attr(attrs: &Attributes, name: &str) -> Result<Option<Vec<usize>>> {
    list_attr(attrs, name, 0)
}

/// `(k - 1) * d + 1`: how far a dilated kernel reaches.
fn extent(kernel: usize, dilation: usize) -> Result<usize> {
    kernel
        .checked_sub(1)
        .and_then(|k| k.checked_mul(dilation))
        .and_then(|k| k.checked_add(1))
        .ok_or_else(|| err!(Shape, "kernel size {kernel} with dilation {dilation} is out of range"))
}

impl WindowAttrs {
    pub fn parse(attrs: &Attributes) -> Result<WindowAttrs> {
        let auto_pad = match attrs.string_or("auto_pad", "NOTSET".into())?.as_str() {
            "NOTSET" | "" => AutoPad::NotSet,
            "SAME_UPPER" => AutoPad::SameUpper,
            "SAME_LOWER" => AutoPad::SameLower,
            "VALID" => AutoPad::Valid,
            other => bail!(InvalidModel, "auto_pad '{other}' is not one of NOTSET, SAME_UPPER, SAME_LOWER, VALID"),
        };
        let pads = list_attr(attrs, "pads", 0)?;
        if pads.as_ref().is_some_and(|p| p.len() % 2 != 0) {
            bail!(
                InvalidModel,
                "attribute 'pads' needs a begin and an end per axis, got {} values",
                pads.map_or(0, |p| p.len())
            );
        }
        Ok(WindowAttrs {
            kernel_shape: list_attr(attrs, "kernel_shape", 1)?,
            strides: list_attr(attrs, "strides", 1)?,
            dilations: list_attr(attrs, "dilations", 1)?,
            pads,
            auto_pad,
            ceil_mode: attrs.int_or("ceil_mode", 0)? != 0,
        })
    }

    /// Checks that every given list has one entry per spatial axis (two for `pads`).
    pub fn check_rank(&self, spatial: usize) -> Result<()> {
        let lists =
            [("kernel_shape", &self.kernel_shape, 1), ("strides", &self.strides, 1), ("dilations", &self.dilations, 1)];
        for (name, list, per_axis) in lists.into_iter().chain([("pads", &self.pads, 2)]) {
            if let Some(l) = list {
                if l.len() != spatial * per_axis {
                    bail!(Shape, "attribute '{name}' has {} values, the input has {spatial} spatial axes", l.len());
                }
            }
        }
        Ok(())
    }

    pub fn stride(&self, axis: usize) -> usize {
        self.strides.as_ref().and_then(|s| s.get(axis).copied()).unwrap_or(1)
    }

    pub fn dilation(&self, axis: usize) -> usize {
        self.dilations.as_ref().and_then(|s| s.get(axis).copied()).unwrap_or(1)
    }

    /// Explicit `(begin, end)` padding of an axis; ignored unless `auto_pad` is NOTSET.
    fn explicit_pads(&self, axis: usize) -> (usize, usize) {
        match &self.pads {
            Some(p) if p.len() % 2 == 0 && axis < p.len() / 2 => (p[axis], p[axis + p.len() / 2]),
            _ => (0, 0),
        }
    }

    /// The geometry of one spatial axis of a forward window (Conv and the pools): output length
    /// per the ONNX formulas for each `auto_pad`, with `ceil_mode` for pools.
    pub fn forward_axis(&self, axis: usize, input: usize, kernel: usize) -> Result<Axis> {
        let (stride, dilation) = (self.stride(axis), self.dilation(axis));
        let reach = extent(kernel, dilation)?;
        let (pad_begin, pad_end, output) = match self.auto_pad {
            AutoPad::NotSet | AutoPad::Valid => {
                let (b, e) = if self.auto_pad == AutoPad::Valid { (0, 0) } else { self.explicit_pads(axis) };
                let padded = input.saturating_add(b).saturating_add(e);
                let Some(room) = padded.checked_sub(reach) else {
                    bail!(
                        Shape,
                        "window of extent {reach} (kernel {kernel}, dilation {dilation}) does not fit spatial axis {axis} \
                         of size {input} with padding {b}+{e}"
                    );
                };
                let mut out = if self.ceil_mode { room.div_ceil(stride) + 1 } else { room / stride + 1 };
                // In ceil mode the last window must still start inside the input or its leading pad.
                if self.ceil_mode && (out - 1) * stride >= input + b {
                    out -= 1;
                }
                (b, e, out)
            }
            AutoPad::SameUpper | AutoPad::SameLower => {
                let out = input.div_ceil(stride);
                let total = (out.saturating_sub(1) * stride + reach).saturating_sub(input);
                let small = total / 2;
                if self.auto_pad == AutoPad::SameUpper {
                    (small, total - small, out)
                } else {
                    (total - small, small, out)
                }
            }
        };
        Ok(Axis { input, kernel, stride, dilation, pad_begin, pad_end, output })
    }

    /// The output dim of a forward window for inference: computed when the input dim is known,
    /// and the input's own dim (symbol included) when the window provably keeps the size.
    pub fn forward_dim(&self, axis: usize, input: &Dim, kernel: usize) -> Result<Dim> {
        if let Dim::Known(n) = input {
            return Ok(Dim::Known(self.forward_axis(axis, *n, kernel)?.output));
        }
        let keeps_size = self.stride(axis) == 1
            && match self.auto_pad {
                AutoPad::SameUpper | AutoPad::SameLower => true,
                AutoPad::NotSet => {
                    let (b, e) = self.explicit_pads(axis);
                    extent(kernel, self.dilation(axis)).is_ok_and(|r| b + e + 1 == r)
                }
                AutoPad::Valid => kernel == 1,
            };
        Ok(if keeps_size { input.clone() } else { Dim::Unknown })
    }

    /// The geometry of one spatial axis of a transposed window (ConvTranspose), described as the
    /// forward convolution whose adjoint it is: the returned `input` is the ConvTranspose output
    /// (the large side) and `output` its input, so both directions share one position formula.
    pub fn transposed_axis(
        &self,
        axis: usize,
        input: usize,
        kernel: usize,
        output_padding: usize,
        output_shape: Option<usize>,
    ) -> Result<Axis> {
        let (stride, dilation) = (self.stride(axis), self.dilation(axis));
        let reach = extent(kernel, dilation)?;
        let full = input
            .saturating_sub(1)
            .checked_mul(stride)
            .and_then(|v| v.checked_add(output_padding))
            .and_then(|v| v.checked_add(reach))
            .ok_or_else(|| err!(Shape, "ConvTranspose output on spatial axis {axis} overflows"))?;
        let target = match (output_shape, self.auto_pad) {
            (Some(out), _) => Some(out),
            // `input * stride`, as the spec says, but never more than the full result: ONNX
            // Runtime pads only to trim, never to grow the output.
            (None, AutoPad::SameUpper | AutoPad::SameLower) => Some(input.saturating_mul(stride).min(full)),
            (None, _) => None,
        };
        let (pad_begin, pad_end, large) = match target {
            // Padding only ever trims; an output longer than the full result just gets zeros at the end.
            Some(out) => {
                let total = full.saturating_sub(out);
                let small = total / 2;
                let pad_begin = if self.auto_pad == AutoPad::SameUpper { small } else { total - small };
                (pad_begin, total - pad_begin, out)
            }
            None => {
                let (b, e) = if self.auto_pad == AutoPad::Valid { (0, 0) } else { self.explicit_pads(axis) };
                let Some(out) = full.checked_sub(b + e) else {
                    bail!(Shape, "ConvTranspose pads {b}+{e} exceed the output size {full} on spatial axis {axis}");
                };
                (b, e, out)
            }
        };
        Ok(Axis { input: large, kernel, stride, dilation, pad_begin, pad_end, output: input })
    }
}

/// The axes of a window problem, padded at the front with unit axes to exactly three so that the
/// kernels loop over a fixed depth.
pub fn three_axes(axes: &[Axis]) -> Result<[Axis; 3]> {
    if axes.len() > 3 {
        bail!(Unsupported, "windows over {} spatial axes are not supported (at most 3)", axes.len());
    }
    let mut out = [Axis::UNIT; 3];
    out[3 - axes.len()..].copy_from_slice(axes);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::Attr;

    fn attrs(items: Vec<(&str, Attr)>) -> WindowAttrs {
        WindowAttrs::parse(&Attributes::new(items.into_iter().map(|(n, a)| (n.to_string(), a)).collect())).unwrap()
    }

    #[test]
    fn explicit_padding_and_strides() {
        // (5 + 1 + 1 - 3) / 2 + 1 = 3
        let w = attrs(vec![("pads", Attr::Ints(vec![1, 1])), ("strides", Attr::Ints(vec![2]))]);
        let a = w.forward_axis(0, 5, 3).unwrap();
        assert_eq!((a.pad_begin, a.pad_end, a.output), (1, 1, 3));
    }

    #[test]
    fn ceil_mode_drops_a_window_that_starts_in_the_end_padding() {
        // in 4, k 1, s 2, ceil: ceil(3/2)+1 = 3, but window 2 would start at 4 >= 4 + 0.
        let w = attrs(vec![("strides", Attr::Ints(vec![2])), ("ceil_mode", Attr::Int(1))]);
        assert_eq!(w.forward_axis(0, 4, 1).unwrap().output, 2);
        assert_eq!(w.forward_axis(0, 5, 3).unwrap().output, 2);
        assert_eq!(w.forward_axis(0, 6, 3).unwrap().output, 3);
    }

    #[test]
    fn same_padding_puts_the_odd_cell_where_asked() {
        let upper = attrs(vec![("auto_pad", Attr::String("SAME_UPPER".into())), ("strides", Attr::Ints(vec![2]))]);
        let a = upper.forward_axis(0, 5, 2).unwrap();
        // out = 3, total = 2*2 + 2 - 5 = 1
        assert_eq!((a.pad_begin, a.pad_end, a.output), (0, 1, 3));
        let lower = attrs(vec![("auto_pad", Attr::String("SAME_LOWER".into())), ("strides", Attr::Ints(vec![2]))]);
        let a = lower.forward_axis(0, 5, 2).unwrap();
        assert_eq!((a.pad_begin, a.pad_end, a.output), (1, 0, 3));
    }

    #[test]
    fn symbolic_dims_survive_size_keeping_windows() {
        let n = Dim::Symbol("H".into());
        let same = attrs(vec![("pads", Attr::Ints(vec![1, 1]))]);
        assert_eq!(same.forward_dim(0, &n, 3).unwrap(), n);
        let strided = attrs(vec![("strides", Attr::Ints(vec![2]))]);
        assert_eq!(strided.forward_dim(0, &n, 3).unwrap(), Dim::Unknown);
    }

    #[test]
    fn transposed_output_sizes() {
        // 3 * (3 - 1) + 1 + 3 = 10, minus pads 1 + 1.
        let w = attrs(vec![("strides", Attr::Ints(vec![3])), ("pads", Attr::Ints(vec![1, 1]))]);
        assert_eq!(w.transposed_axis(0, 3, 3, 1, None).unwrap().input, 8);
        // Requested output 10 from a full size of 9: no trimming, one extra cell at the end.
        let a = w.transposed_axis(0, 3, 3, 0, Some(10)).unwrap();
        assert_eq!((a.pad_begin, a.input, a.output), (0, 10, 3));
    }

    #[test]
    fn taps_inside_the_input() {
        // input 5, kernel 3, dilation 2, stride 2, pads 2+2: output o reads 2o - 2 + 2k.
        let a = Axis { input: 5, kernel: 3, stride: 2, dilation: 2, pad_begin: 2, pad_end: 2, output: 4 };
        // tap 0 reads -2, 0, 2, 4: outputs 1..4; tap 2 reads 2, 4, 6, 8: outputs 0..2.
        assert_eq!(a.outputs_reading_input(0), (1, 4));
        assert_eq!(a.outputs_reading_input(2), (0, 2));
        // output 0 reads -2, 0, 2: taps 1..3 are inside; output 3 reads 4, 6, 8: tap 0 only.
        assert_eq!((a.taps_below(0, 2), a.taps_below(0, 7)), (1, 3));
        assert_eq!((a.taps_below(3, 2), a.taps_below(3, 7), a.taps_below(3, 9)), (0, 1, 2));
        assert_eq!(a.input_position(3, 0), 4);
    }

    #[test]
    fn bad_windows_are_errors() {
        let w = attrs(vec![]);
        assert!(w.forward_axis(0, 2, 3).is_err());
        let bad = Attributes::new(vec![("strides".into(), Attr::Ints(vec![0]))]);
        assert!(WindowAttrs::parse(&bad).is_err());
        let odd = Attributes::new(vec![("pads".into(), Attr::Ints(vec![1, 1, 1]))]);
        assert!(WindowAttrs::parse(&odd).is_err());
        assert!(attrs(vec![("strides", Attr::Ints(vec![1, 1]))]).check_rank(1).is_err());
    }
}
