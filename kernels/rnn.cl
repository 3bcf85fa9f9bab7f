// One time step of an ONNX RNN, GRU or LSTM layer with the default activations (RNN tanh; GRU sigmoid, tanh; LSTM sigmoid, tanh, tanh), every direction at once.
// The host launches it once per step: step k of direction d reads x at time t = k, or
// seq - 1 - k for a reversed direction. One work-item per hidden unit, batch entry and direction
// computes its gates' dot products over the input and the previous hidden state (R's rows are a
// short loop next to the launch count), so h is double-buffered (h_in, h_out) and c is updated in
// place (each unit reads only its own c). A GRU that resets before the linear transform
// (linear_before_reset = 0) needs every unit's reset gate first: `gru_reset` writes r * h_prev to
// `rh`, then `recurrent_step` reads it with `reset_first`.

#define CELL_RNN 0
#define CELL_GRU 1
#define CELL_LSTM 2

inline float sigmoid_of(const float x) { return 1.0f / (1.0f + exp(-x)); }

// The time step k of direction d reads (`reversed_dir`: -1 none, 1 the second, 2 all).
inline int time_of(const int d, const int reversed_dir, const int seq, const int k) {
    return (d == reversed_dir || reversed_dir > 1) ? seq - 1 - k : k;
}

// Row `row` of a [rows, n] matrix at `m` times the n-vector at `v`.
inline float dot_row(const global store_t *m, const int row, const int n, const global store_t *v,
                     const int v_at) {
    float acc = 0.0f;
    for (int i = 0; i < n; i++) acc += LD(m, row * n + i) * LD(v, v_at + i);
    return acc;
}

// x [seq, batch, I]; W [dirs, G*H, I]; R [dirs, G*H, H]; B [dirs, 2*G*H] (has_b); P [dirs, 3H]
// (has_p, LSTM peepholes i, o, f); h_in/h_out/c_in/c_out [dirs, batch, H] (zero_h / zero_c: the
// state is zero and h_in / c_in are not read); y [seq, dirs, batch, H]. `clip` >= 0 clamps every
// gate pre-activation. `reset_first`: a GRU's hidden gate reads R_h (r * h_prev) from `rh`.
// Global size: (H, batch, dirs).
kernel void recurrent_step(const global store_t *x, const global store_t *w, const global store_t *r,
                           const global store_t *b, const global store_t *p,
                           const global store_t *h_in, global store_t *h_out,
                           const global store_t *c_in, global store_t *c_out, global store_t *y,
                           const int cell, const int seq, const int batch, const int I,
                           const int H, const int k, const int reversed_dir, const int has_b,
                           const int has_p, const int zero_h, const int zero_c,
                           const int input_forget, const float clip, const global store_t *rh,
                           const int reset_first) {
    const int j = get_global_id(0), n = get_global_id(1), d = get_global_id(2);
    if (j >= H || n >= batch) return;
    const int dirs = get_global_size(2);
    const int t = time_of(d, reversed_dir, seq, k);
    const int G = cell == CELL_LSTM ? 4 : (cell == CELL_GRU ? 3 : 1);
    const int state = (d * batch + n) * H;
    const int x_at = (t * batch + n) * I;
    const global store_t *wd = w + (size_t)d * G * H * I;
    const global store_t *rd = r + (size_t)d * G * H * H;
    float gx[4], gh[4]; // W x + Wb and R h + Rb per gate
    for (int g = 0; g < G; g++) {
        const int row = g * H + j;
        gx[g] = dot_row(wd, row, I, x, x_at);
        const global store_t *hv = (reset_first && g == 2) ? rh : h_in;
        gh[g] = zero_h ? 0.0f : dot_row(rd, row, H, hv, state);
        if (has_b) {
            gx[g] += LD(b, d * 2 * G * H + row);
            gh[g] += LD(b, d * 2 * G * H + G * H + row);
        }
    }
#define CLIP(v) (clip >= 0.0f ? clamp((v), -clip, clip) : (v))
    const float h_prev = zero_h ? 0.0f : LD(h_in, state + j);
    float h;
    if (cell == CELL_RNN) {
        h = tanh(CLIP(gx[0] + gh[0]));
    } else if (cell == CELL_GRU) {
        const float z = sigmoid_of(CLIP(gx[0] + gh[0]));
        const float reset = sigmoid_of(CLIP(gx[1] + gh[1]));
        const float candidate = tanh(CLIP(gx[2] + (reset_first ? gh[2] : gh[2] * reset)));
        h = (1.0f - z) * candidate + z * h_prev;
    } else {
        const float c_prev = zero_c ? 0.0f : LD(c_in, state + j);
        const int pd = d * 3 * H + j;
        const float pi = has_p ? LD(p, pd) : 0.0f, po = has_p ? LD(p, pd + H) : 0.0f;
        const float pf = has_p ? LD(p, pd + 2 * H) : 0.0f;
        const float i = sigmoid_of(CLIP(gx[0] + gh[0] + pi * c_prev));
        const float f = input_forget ? 1.0f - i : sigmoid_of(CLIP(gx[2] + gh[2] + pf * c_prev));
        const float candidate = tanh(CLIP(gx[3] + gh[3]));
        const float c = f * c_prev + i * candidate;
        const float o = sigmoid_of(CLIP(gx[1] + gh[1] + po * c));
        h = o * tanh(c);
        ST(c_out, state + j, c);
    }
#undef CLIP
    ST(h_out, state + j, h);
    ST(y, ((t * dirs + d) * batch + n) * H + j, h);
}

// A GRU's reset gate times the previous hidden state, rh = r * h_prev, for every unit (the
// arguments as recurrent_step's). Global size: (H, batch, dirs).
kernel void gru_reset(const global store_t *x, const global store_t *w, const global store_t *r,
                      const global store_t *b, const global store_t *h_in, global store_t *rh,
                      const int seq, const int batch, const int I, const int H, const int k,
                      const int reversed_dir, const int has_b, const int zero_h, const float clip) {
    const int j = get_global_id(0), n = get_global_id(1), d = get_global_id(2);
    if (j >= H || n >= batch) return;
    const int t = time_of(d, reversed_dir, seq, k);
    const int state = (d * batch + n) * H, row = H + j; // gate r
    if (zero_h) {
        ST(rh, state + j, 0.0f);
        return;
    }
    float v = dot_row(w + (size_t)d * 3 * H * I, row, I, x, (t * batch + n) * I) +
              dot_row(r + (size_t)d * 3 * H * H, row, H, h_in, state);
    if (has_b) v += LD(b, d * 6 * H + row) + LD(b, d * 6 * H + 3 * H + row);
    if (clip >= 0.0f) v = clamp(v, -clip, clip);
    ST(rh, state + j, sigmoid_of(v) * LD(h_in, state + j));
}
