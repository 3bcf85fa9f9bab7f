// Resize (and Upsample) as the reference computes it: one axis at a time, each output position a
// weighted sum of taps along that axis. The host computes the taps once per shape (nearest,
// linear, cubic, antialiasing and every coordinate mode alike) and uploads them as tables.

// x is [outer, len, inner], y [outer, out_len, inner]. Output position p of the axis sums
// weight[t] * x[o][index[t]][i] over taps t in starts[p]..starts[p + 1]; a tap with index -1 is an
// extrapolated position whose weight is its value. Global size: (inner, out_len, outer).
kernel void resample_axis(const global store_t *x, global store_t *y, const global int *starts,
                          const global int *index, const global float *weight, const int len,
                          const int out_len, const int inner) {
    const int i = get_global_id(0), p = get_global_id(1), o = get_global_id(2);
    if (i >= inner || p >= out_len) return;
    const int src = o * len * inner + i;
    float acc = 0.0f;
    for (int t = starts[p]; t < starts[p + 1]; t++) {
        const int at = index[t];
        if (at < 0) {
            acc = weight[t];
        } else {
            acc += weight[t] * LD(x, src + at * inner);
        }
    }
    ST(y, (o * out_len + p) * inner + i, acc);
}
