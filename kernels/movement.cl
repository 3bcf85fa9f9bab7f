// Data movement: strided copies (Transpose is one with permuted strides, Slice and Split ones with
// an offset), block copies (Concat copies each input into its place along the axis), padding and
// gathering along an axis. One work-item per output element, no loops beyond the rank, so PoCL
// vectorises across work-items.

// y[i] = x[base + sum_d coord_d(i) * s_d], where coord(i) is i's coordinates in dims d0..d5
// (outermost first, padded with leading 1s) and s0..s5 the input strides of those output axes
// (negative for a slice with negative steps). Global size: (n).
kernel void strided_copy(const global store_t *x, global store_t *y, const int n, const int base,
                         const int d0, const int d1, const int d2, const int d3, const int d4,
                         const int d5, const int s0, const int s1, const int s2, const int s3,
                         const int s4, const int s5) {
    const int i = get_global_id(0);
    if (i >= n) return;
    int rest = i, src = base;
    src += (rest % d5) * s5; rest /= d5;
    src += (rest % d4) * s4; rest /= d4;
    src += (rest % d3) * s3; rest /= d3;
    src += (rest % d2) * s2; rest /= d2;
    src += (rest % d1) * s1; rest /= d1;
    src += rest * s0;
    ST(y, i, LD(x, src));
}

// x is [outer, a, inner]; y is [outer, total, inner] and x goes at offset `at` on its middle axis.
// Global size: (outer * a * inner).
kernel void copy_block(const global store_t *x, global store_t *y, const int n, const int a,
                       const int inner, const int total, const int at) {
    const int i = get_global_id(0);
    if (i >= n) return;
    const int block = a * inner;
    const int o = i / block, r = i % block;
    ST(y, o * total * inner + at * inner + r, LD(x, i));
}

// Where output position i (relative to the input's first element) of an axis of n input elements
// reads from, or -1 for the fill value. mode: 0 constant, 1 reflect, 2 edge, 3 wrap (ONNX Pad).
inline int pad_source(const int mode, const int i, const int n) {
    if (i >= 0 && i < n) return i;
    if (mode == 0) return -1;
    if (mode == 2) return clamp(i, 0, n - 1);
    if (mode == 3) return ((i % n) + n) % n;
    if (n == 1) return 0;
    const int period = 2 * (n - 1);
    const int m = ((i % period) + period) % period;
    return m < n ? m : period - m;
}

// y (dims o0..o5, outermost first, padded with leading 1s) is x (dims n0..n5, contiguous) padded
// by b0..b5 elements before each axis. Global size: (len of y).
kernel void pad(const global store_t *x, global store_t *y, const int len, const int mode,
                const float fill, const int o0, const int o1, const int o2, const int o3,
                const int o4, const int o5, const int n0, const int n1, const int n2, const int n3,
                const int n4, const int n5, const int b0, const int b1, const int b2, const int b3,
                const int b4, const int b5) {
    const int i = get_global_id(0);
    if (i >= len) return;
    int rest = i, src = 0, stride = 1, at;
#define PAD_AXIS(o, n, b)                       \
    at = pad_source(mode, rest % o - b, n);     \
    if (at < 0) { ST(y, i, fill); return; }     \
    src += at * stride; stride *= n; rest /= o;
    PAD_AXIS(o5, n5, b5)
    PAD_AXIS(o4, n4, b4)
    PAD_AXIS(o3, n3, b3)
    PAD_AXIS(o2, n2, b2)
    PAD_AXIS(o1, n1, b1)
    PAD_AXIS(o0, n0, b0)
#undef PAD_AXIS
    ST(y, i, LD(x, src));
}

// x is [outer, dim, inner]; y is [outer, count, inner] with y[o][j][k] = x[o][idx[j]][k]. The host
// checks every index and makes negative ones positive. Global size: (outer * count * inner).
kernel void gather(const global store_t *x, const global int *idx, global store_t *y, const int len,
                   const int dim, const int count, const int inner) {
    const int i = get_global_id(0);
    if (i >= len) return;
    const int k = i % inner, j = (i / inner) % count, o = i / (inner * count);
    ST(y, i, LD(x, (o * dim + idx[j]) * inner + k));
}
