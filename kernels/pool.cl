// Pooling of NCHW tensors (1-D as height 1): max and average over windows, and global pooling of
// whole planes. One work-item per output element (or per plane for global pooling).

// Global size: (OW, OH, N * C). Taps in the padding are skipped. `avg` divides the sum by the
// taps inside the input, or with `count_pad` (count_include_pad) by the taps inside the padded
// input, which ends eh rows and ew columns after the input (a ceil_mode window may pass even that).
kernel void pool2d(const global store_t *x, global store_t *y, const int H, const int W, const int OH,
                   const int OW, const int KH, const int KW, const int sh, const int sw, const int dh,
                   const int dw, const int ph, const int pw, const int avg, const int count_pad,
                   const int eh, const int ew) {
    const int ox = get_global_id(0), oy = get_global_id(1), nc = get_global_id(2);
    if (ox >= OW || oy >= OH) return;
    const int plane = nc * H * W;
    float acc = avg ? 0.0f : -INFINITY;
    int taps = 0, rows = 0, cols = 0;
    for (int ky = 0; ky < KH; ky++) {
        const int iy = oy * sh + ky * dh - ph;
        rows += iy < H + eh;
        if (iy < 0 || iy >= H) continue;
        for (int kx = 0; kx < KW; kx++) {
            const int ix = ox * sw + kx * dw - pw;
            if (ix < 0 || ix >= W) continue;
            const float v = LD(x, plane + iy * W + ix);
            acc = avg ? acc + v : fmax(acc, v);
            taps++;
        }
    }
    for (int kx = 0; kx < KW; kx++) cols += ox * sw + kx * dw - pw < W + ew;
    if (avg) acc /= (float)max(count_pad ? rows * cols : taps, 1);
    ST(y, (nc * OH + oy) * OW + ox, acc);
}

// y[p] = mean or max of plane p of `len` elements. Global size: (planes).
kernel void global_pool(const global store_t *x, global store_t *y, const int planes, const int len,
                        const int avg) {
    const int p = get_global_id(0);
    if (p >= planes) return;
    float acc = avg ? 0.0f : -INFINITY;
    for (int i = 0; i < len; i++) {
        const float v = LD(x, p * len + i);
        acc = avg ? acc + v : fmax(acc, v);
    }
    ST(y, p, avg ? acc / (float)len : acc);
}
