// Elementwise kernels: binary arithmetic with numpy broadcasting, and the unary activations of
// activation.cl (which the host prepends). Each output element is one work-item; PoCL vectorises
// such loop-free kernels across work-items, so the same-shape case has its own kernel without the
// index arithmetic of broadcasting.
// Binary op codes: 0 add, 1 sub, 2 mul, 3 div, 4 pow, 5 max, 6 min. The activation `act` (codes in
// activation.cl) is applied to the result, so Add + Relu is one kernel.

#ifndef MAX_RANK
#define MAX_RANK 6 // the most dimensions a broadcast shape may have
#endif

inline float crx_binary(int op, float a, float b) {
    switch (op) {
    case 0: return a + b;
    case 1: return a - b;
    case 2: return a * b;
    case 3: return a / b;
    case 4: return pow(a, b);
    case 5: return fmax(a, b);
    case 6: return fmin(a, b);
    default: return a;
    }
}

// out[i] = act(a[i] op b[i]) for i < n: both inputs have the output's shape.
kernel void binary_flat(const int n, const global store_t *a, const global store_t *b,
                        global store_t *out, const int op, const int act, const float act_a,
                        const float act_b) {
    const int i = get_global_id(0);
    if (i < n) ST(out, i, crx_activate(crx_binary(op, LD(a, i), LD(b, i)), act, act_a, act_b));
}

// Broadcasting: `meta` holds the output's dims, then a's and b's element strides per output
// dimension (0 where that input is broadcast), MAX_RANK each, outermost first, padded with
// dims of 1 in front.
kernel void binary_broadcast(const int n, const global store_t *a, const global store_t *b,
                             global store_t *out, const global int *meta, const int op, const int act,
                             const float act_a, const float act_b) {
    const int i = get_global_id(0);
    if (i >= n) return;
    int rest = i, ia = 0, ib = 0;
    for (int d = MAX_RANK - 1; d >= 0; d--) {
        const int dim = meta[d];
        const int coord = rest % dim;
        rest /= dim;
        ia += coord * meta[MAX_RANK + d];
        ib += coord * meta[2 * MAX_RANK + d];
    }
    ST(out, i, crx_activate(crx_binary(op, LD(a, ia), LD(b, ib)), act, act_a, act_b));
}

// out[i] = act(x[i]).
kernel void unary(const int n, const global store_t *x, global store_t *out, const int act,
                  const float act_a, const float act_b) {
    const int i = get_global_id(0);
    if (i < n) ST(out, i, crx_activate(LD(x, i), act, act_a, act_b));
}
