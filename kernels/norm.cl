// Normalisations: softmax and log-softmax along an axis, inference batch normalisation, layer (and
// RMS) normalisation over the last axes, and instance normalisation. Reductions run one lane per
// work-item (a lane is short next to the tensor; PoCL runs each work-item's loop as written).

// The lane of (o, i) is x[o][0..n][i] with stride `inner`. `log_softmax` selects LogSoftmax.
// Global size: (inner, outer).
kernel void softmax(const global store_t *x, global store_t *y, const int n, const int inner,
                    const int log_softmax) {
    const int i = get_global_id(0), o = get_global_id(1);
    if (i >= inner) return;
    const int base = o * n * inner + i;
    float mx = -INFINITY;
    for (int k = 0; k < n; k++) mx = fmax(mx, LD(x, base + k * inner));
    float sum = 0.0f;
    for (int k = 0; k < n; k++) sum += exp(LD(x, base + k * inner) - mx);
    if (log_softmax) {
        const float shift = mx + log(sum);
        for (int k = 0; k < n; k++) ST(y, base + k * inner, LD(x, base + k * inner) - shift);
    } else {
        const float inv = 1.0f / sum;
        for (int k = 0; k < n; k++) ST(y, base + k * inner, exp(LD(x, base + k * inner) - mx) * inv);
    }
}

// y = (x - mean[c]) / sqrt(var[c] + eps) * scale[c] + bias[c] over [N][C][plane].
// Global size: (plane, C, N).
kernel void batch_norm(const global store_t *x, global store_t *y, const global store_t *scale,
                       const global store_t *bias, const global store_t *mean,
                       const global store_t *var, const float eps, const int C, const int plane) {
    const int p = get_global_id(0), c = get_global_id(1), n = get_global_id(2);
    if (p >= plane) return;
    const int i = (n * C + c) * plane + p;
    const float s = LD(scale, c) * rsqrt(LD(var, c) + eps);
    ST(y, i, (LD(x, i) - LD(mean, c)) * s + LD(bias, c));
}

// Each row of n: (x - mean) / sqrt(mean((x - mean)^2) + eps) * scale + bias; with `rms`
// (RMSNormalization) x / sqrt(mean(x^2) + eps) * scale + bias. `has_bias` 0: no bias (its
// argument is any buffer). Global size: (rows).
kernel void layer_norm(const global store_t *x, global store_t *y, const global store_t *scale,
                       const global store_t *bias, const int rows, const int n, const float eps,
                       const int rms, const int has_bias) {
    const int r = get_global_id(0);
    if (r >= rows) return;
    const int base = r * n;
    float mean = 0.0f;
    if (!rms) {
        float sum = 0.0f;
        for (int k = 0; k < n; k++) sum += LD(x, base + k);
        mean = sum / (float)n;
    }
    float sq = 0.0f;
    for (int k = 0; k < n; k++) {
        const float d = LD(x, base + k) - mean;
        sq += d * d;
    }
    const float inv = rsqrt(sq / (float)n + eps);
    for (int k = 0; k < n; k++) {
        const float b = has_bias ? LD(bias, k) : 0.0f;
        ST(y, base + k, (LD(x, base + k) - mean) * inv * LD(scale, k) + b);
    }
}

// Instance normalisation of [N][C][len]: each plane (n, c) by its own mean and variance, then
// scale[c] and bias[c]. Global size: (N * C).
kernel void instance_norm(const global store_t *x, global store_t *y, const global store_t *scale,
                          const global store_t *bias, const int planes, const int C, const int len,
                          const float eps) {
    const int p = get_global_id(0);
    if (p >= planes) return;
    const int base = p * len, c = p % C;
    float sum = 0.0f;
    for (int k = 0; k < len; k++) sum += LD(x, base + k);
    const float mean = sum / (float)len;
    float sq = 0.0f;
    for (int k = 0; k < len; k++) {
        const float d = LD(x, base + k) - mean;
        sq += d * d;
    }
    const float s = rsqrt(sq / (float)len + eps) * LD(scale, c), b = LD(bias, c);
    for (int k = 0; k < len; k++) ST(y, base + k, (LD(x, base + k) - mean) * s + b);
}
