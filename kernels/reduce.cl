// Reductions (ReduceSum, ReduceMean, ReduceMax, ReduceMin, ReduceProd, ReduceL1, ReduceL2,
// ReduceLogSum, ReduceLogSumExp, ReduceSumSquare) over any set of axes. The host merges
// neighbouring axes that are both kept or both reduced, so a tensor of up to 6 axes has at most 3
// runs of kept axes (the output) and 3 of reduced ones. One work-item per output element folds its
// lane: a reduction over the last axis reads contiguous memory per work-item, one over a leading
// axis reads contiguous memory across work-items.

#define OP_SUM 0
#define OP_MEAN 1
#define OP_MAX 2
#define OP_MIN 3
#define OP_PROD 4
#define OP_L1 5
#define OP_L2 6
#define OP_LOG_SUM 7
#define OP_LOG_SUM_EXP 8
#define OP_SUM_SQUARE 9

// Output element o has kept coordinates (o / (k1 * k2), o / k2 % k1, o % k2) at input strides
// ks0..ks2 and folds the r0 x r1 x r2 elements at input strides rs0..rs2 from there.
// Global size: (n outputs).
kernel void reduce(const global store_t *x, global store_t *y, const int n, const int op,
                   const int k1, const int k2, const int ks0, const int ks1, const int ks2,
                   const int r0, const int r1, const int r2, const int rs0, const int rs1,
                   const int rs2) {
    const int o = get_global_id(0);
    if (o >= n) return;
    const int base = (o / (k1 * k2)) * ks0 + (o / k2 % k1) * ks1 + (o % k2) * ks2;
#define FOR_EACH_REDUCED(BODY)                                    \
    for (int a = 0; a < r0; a++)                                  \
        for (int b = 0; b < r1; b++) {                            \
            const int row = base + a * rs0 + b * rs1;             \
            for (int c = 0; c < r2; c++) {                        \
                const float v = LD(x, row + c * rs2);             \
                BODY                                              \
            }                                                     \
        }
    float acc;
    if (op == OP_MAX) {
        acc = -INFINITY;
        FOR_EACH_REDUCED(if (v > acc || isnan(v)) acc = v;)
    } else if (op == OP_MIN) {
        acc = INFINITY;
        FOR_EACH_REDUCED(if (v < acc || isnan(v)) acc = v;)
    } else if (op == OP_PROD) {
        acc = 1.0f;
        FOR_EACH_REDUCED(acc *= v;)
    } else if (op == OP_LOG_SUM_EXP) {
        float mx = -INFINITY;
        FOR_EACH_REDUCED(mx = fmax(mx, v);)
        float sum = 0.0f;
        if (isinf(mx)) {
            acc = mx; // all -inf (or +inf present): the sum is mx itself
        } else {
            FOR_EACH_REDUCED(sum += exp(v - mx);)
            acc = mx + log(sum);
        }
    } else {
        acc = 0.0f;
        if (op == OP_L1) {
            FOR_EACH_REDUCED(acc += fabs(v);)
        } else if (op == OP_L2 || op == OP_SUM_SQUARE) {
            FOR_EACH_REDUCED(acc += v * v;)
        } else {
            FOR_EACH_REDUCED(acc += v;)
        }
        if (op == OP_MEAN) acc /= (float)(r0 * r1 * r2);
        if (op == OP_L2) acc = sqrt(acc);
        if (op == OP_LOG_SUM) acc = log(acc);
    }
#undef FOR_EACH_REDUCED
    ST(y, o, acc);
}
