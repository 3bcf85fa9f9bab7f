// Data movement: strided copies (Transpose is one with permuted strides) and block copies (Concat
// copies each input into its place along the axis). One work-item per output element, no loops
// beyond the rank, so PoCL vectorises across work-items.

// y[i] = x[sum_d coord_d(i) * s_d], where coord(i) is i's coordinates in dims d0..d5 (outermost
// first, padded with leading 1s) and s0..s5 the input strides of those output axes.
// Global size: (n).
kernel void strided_copy(const global store_t *x, global store_t *y, const int n, const int d0,
                         const int d1, const int d2, const int d3, const int d4, const int d5,
                         const int s0, const int s1, const int s2, const int s3, const int s4,
                         const int s5) {
    const int i = get_global_id(0);
    if (i >= n) return;
    int rest = i, src = 0;
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
