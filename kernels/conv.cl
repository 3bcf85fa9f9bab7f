// Convolution of NCHW tensors (a 1-D convolution is a 2-D one of height 1). Two paths, chosen by
// the host (src/backend/opencl/conv.rs):
// - group 1: `im2col` lays each image's receptive fields out as a (C*KH*KW) x (OH*OW) matrix,
//   then gemm.cl multiplies the weights (M x C*KH*KW) by it with the bias, residual and
//   activation in its epilogue. A 1x1, stride-1, unpadded convolution skips im2col: the image
//   already is that matrix.
// - grouped and depthwise: `conv_direct`, one work-item per output element, summing its window.
// im2col loops along an output row (its divisions once per row); conv_direct is loop-free in the
// index math PoCL vectorises across work-items where it can.

// col[n][(c * KH + ky) * KW + kx][oy * OW + ox] = x[n][c][iy][ix], 0 where the tap is in padding.
// Global size: (C * KH * KW, N): one tap's whole OH x OW plane per work-item, so the index math
// (integer divisions, the cost of a one-element-per-work-item im2col on a CPU device) runs once
// per plane, PoCL schedules few, fat work-groups (one a row cost as much in scheduling as in
// copying), and the taps inside the image are one branch-free copy per row, contiguous at stride 1.
kernel void im2col(const global store_t *x, global store_t *col, const int C, const int H, const int W,
                   const int KH, const int KW, const int OH, const int OW, const int sh, const int sw,
                   const int dh, const int dw, const int ph, const int pw) {
    const int row = get_global_id(0), n = get_global_id(1);
    const int c = row / (KH * KW), r = row % (KH * KW);
    const int ky = r / KW, kx = r % KW;
    // Output columns lo..hi read ix = ox * sw + off inside [0, W); the others are padding.
    const int off = kx * dw - pw;
    int lo = 0, hi = 0;
    if (W - 1 - off >= 0) {
        lo = min(off < 0 ? (sw - 1 - off) / sw : 0, OW);
        hi = clamp((W - 1 - off) / sw + 1, lo, OW);
    }
    const global store_t *plane = x + (n * C + c) * H * W + off;
    global store_t *out = col + (n * (C * KH * KW) + row) * (OH * OW);
    for (int oy = 0; oy < OH; oy++, out += OW) {
        const int iy = oy * sh + ky * dh - ph;
        if (iy < 0 || iy >= H) {
            for (int ox = 0; ox < OW; ox++) ST(out, ox, 0.0f);
            continue;
        }
        const global store_t *in = plane + iy * W;
        for (int ox = 0; ox < lo; ox++) ST(out, ox, 0.0f);
        if (sw == 1) {
            for (int ox = lo; ox < hi; ox++) ST(out, ox, LD(in, ox));
        } else {
            for (int ox = lo; ox < hi; ox++) ST(out, ox, LD(in, ox * sw));
        }
        for (int ox = hi; ox < OW; ox++) ST(out, ox, 0.0f);
    }
}

// y = act(conv(x, w) + bias + residual) for G groups of C/G input and M/G output channels each.
// Global size: (OW, OH, N * M).
// The geometry arguments (C, H, W, KH, KW, OH, OW, strides, dilations, pads) come last, as in
// im2col: the host passes the same list to both.
kernel void conv_direct(const global store_t *x, const global store_t *w, const global store_t *bias,
                        const int has_bias, const global store_t *res, const int has_res,
                        global store_t *y, const int M, const int G, const int act, const float act_a,
                        const float act_b, const int C, const int H, const int W, const int KH,
                        const int KW, const int OH, const int OW, const int sh, const int sw,
                        const int dh, const int dw, const int ph, const int pw) {
    const int ox = get_global_id(0), oy = get_global_id(1), nm = get_global_id(2);
    if (ox >= OW || oy >= OH) return;
    const int n = nm / M, m = nm % M;
    const int cg = C / G, g = m / (M / G);
    float acc = 0.0f;
    for (int c = 0; c < cg; c++) {
        const int xc = (n * C + g * cg + c) * H * W;
        const int wc = (m * cg + c) * KH * KW;
        for (int ky = 0; ky < KH; ky++) {
            const int iy = oy * sh + ky * dh - ph;
            if (iy < 0 || iy >= H) continue;
            for (int kx = 0; kx < KW; kx++) {
                const int ix = ox * sw + kx * dw - pw;
                if (ix < 0 || ix >= W) continue;
                acc = fma(LD(x, xc + iy * W + ix), LD(w, wc + ky * KW + kx), acc);
            }
        }
    }
    const int out = (nm * OH + oy) * OW + ox;
    if (has_bias) acc += LD(bias, m);
    if (has_res) acc += LD(res, out);
    ST(y, out, crx_activate(acc, act, act_a, act_b));
}

// ConvTranspose's scatter, as a gather: y[n][m][yy][yx] = bias[m] + the sum of the columns whose
// taps land on (yy, yx). The geometry is the forward view's (C = ConvTranspose's output channels,
// H x W its output plane, OH x OW its input plane): col holds, per image, (C*KH*KW) x (OH*OW)
// values, W^T x X from gemm.cl. Global size: (W, H, N * C); no atomics, each output owned once.
kernel void col2im(const global store_t *col, const global store_t *bias, const int has_bias,
                   global store_t *y, const int C, const int H, const int W, const int KH, const int KW,
                   const int OH, const int OW, const int sh, const int sw, const int dh, const int dw,
                   const int ph, const int pw) {
    const int yx = get_global_id(0), yy = get_global_id(1), nc = get_global_id(2);
    if (yx >= W || yy >= H) return;
    float acc = has_bias ? LD(bias, nc % C) : 0.0f;
    const global store_t *taps = col + nc * (KH * KW) * (OH * OW);
    for (int ky = 0; ky < KH; ky++) {
        const int t = yy + ph - ky * dh;
        if (t < 0 || t % sh != 0 || t / sh >= OH) continue;
        for (int kx = 0; kx < KW; kx++) {
            const int u = yx + pw - kx * dw;
            if (u < 0 || u % sw != 0 || u / sw >= OW) continue;
            acc += LD(taps, (ky * KW + kx) * (OH * OW) + (t / sh) * OW + u / sw);
        }
    }
    ST(y, nc * (H * W) + yy * W + yx, acc);
}
