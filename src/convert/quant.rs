//! Quantization arithmetic for the int8 methods: symmetric int8 weights, per tensor or per channel
//! along one axis.

/// Symmetric int8 quantization of `values` (shape `dims`): one scale for the whole tensor, or one
/// per index of `axis`. Scales are max|w| / 127 (1 for an all-zero channel); zero points are 0.
pub fn quantize_int8_symmetric(values: &[f32], dims: &[usize], axis: Option<usize>) -> (Vec<i8>, Vec<f32>) {
    let (channels, inner) = match axis {
        Some(a) => (dims[a], dims[a + 1..].iter().product::<usize>()),
        None => (1, values.len()),
    };
    let channel_of = |i: usize| (i / inner.max(1)) % channels.max(1);
    let mut max = vec![0f32; channels];
    for (i, v) in values.iter().enumerate() {
        let c = channel_of(i);
        max[c] = max[c].max(v.abs());
    }
    let scales: Vec<f32> = max.iter().map(|&m| if m > 0.0 { m / 127.0 } else { 1.0 }).collect();
    let q = values
        .iter()
        .enumerate()
        .map(|(i, v)| (v / scales[channel_of(i)]).round().clamp(-127.0, 127.0) as i8)
        .collect();
    (q, scales)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_channel_scales_follow_each_channels_range() {
        // [2, 3] quantized per column (axis 1): columns have max 1, 2, 0.
        let w = [1.0, -2.0, 0.0, -0.5, 1.0, 0.0];
        let (q, s) = quantize_int8_symmetric(&w, &[2, 3], Some(1));
        assert_eq!(s, [1.0 / 127.0, 2.0 / 127.0, 1.0]);
        assert_eq!(q, [127, -127, 0, -64, 64, 0]);
        let (q, s) = quantize_int8_symmetric(&w, &[2, 3], None);
        assert_eq!(s, [2.0 / 127.0]);
        assert_eq!(q[0], 64);
        // Per row (axis 0).
        let (_, s) = quantize_int8_symmetric(&w, &[2, 3], Some(0));
        assert_eq!(s, [2.0 / 127.0, 1.0 / 127.0]);
    }
}
