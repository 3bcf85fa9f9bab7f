// The activations a kernel applies to a value as it writes it (crx580's ops::fused::Activation),
// selected by a run-time code so one compiled kernel serves every fused node. The host prepends
// this file to the kernel files that use it (gemm.cl, elementwise.cl); it compiles on its own.
// Codes: 0 none, 1 relu, 2 clip(a, b), 3 leaky relu(a), 4 sigmoid, 5 silu, 6 hard sigmoid(a, b),
// 7 hard swish, 8 tanh, 9 gelu (erf), 10 gelu (tanh), 11 erf, 12 sqrt, 13 exp.

#ifndef CRX580_ACTIVATION
#define CRX580_ACTIVATION

inline float crx_sigmoid(float x) { return 1.0f / (1.0f + exp(-x)); }

inline float crx_activate(float x, int act, float a, float b) {
    switch (act) {
    case 0: return x;
    case 1: return fmax(x, 0.0f);
    case 2: return fmin(fmax(x, a), b);
    case 3: return x < 0.0f ? x * a : x;
    case 4: return crx_sigmoid(x);
    case 5: return x * crx_sigmoid(x);
    case 6: return clamp(a * x + b, 0.0f, 1.0f);
    case 7: return x * clamp(x / 6.0f + 0.5f, 0.0f, 1.0f);
    case 8: return tanh(x);
    case 9: return 0.5f * x * (1.0f + erf(x * 0.70710678118654752f));
    case 10: return 0.5f * x * (1.0f + tanh(0.79788456080286536f * (x + 0.044715f * x * x * x)));
    case 11: return erf(x);
    case 12: return sqrt(x);
    case 13: return exp(x);
    default: return x;
    }
}

#endif
