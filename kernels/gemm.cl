// GEMM: C[b] = act(alpha * A[b] x B[b] + beta * bias[b]) + residual[b], for every batch b, or
// act(alpha * A[b] x B[b] + beta * bias[b] + residual[b]) with has_res = 2 (a fused conv's order).
// A (M x K) is read through run-time strides (a_rs per row, a_cs per column), so a transposed A
// costs nothing; B (K x N) must be row-major with row stride ldb (the host transposes a transposed
// B once, with `transpose` below). bias is read through strides too (a scalar, a row, a column or
// a full matrix: ONNX Gemm's C broadcasts); residual is a full M x N matrix. A batch stride of 0
// broadcasts that operand (shared weights).
//
// Two tilings, chosen by USE_LOCAL (the tuning table in src/backend/opencl/tuning.rs sets it):
// - USE_LOCAL=0 (CPU-like devices such as PoCL): no local memory; each work-item computes an
//   MWI x (VW*NV) block in registers with VW-wide vectors along N. PoCL runs a kernel with an inner
//   loop one work-item at a time, so explicit vectors and register blocks are what make it fast.
// - USE_LOCAL=1 (GPUs such as GCN): work-groups of (NWG/NWI) x (MWG/MWI) work-items share
//   KWG-deep tiles of A and B in local memory; each work-item computes MWI x NWI outputs strided
//   across the tile, so neighbouring work-items read neighbouring local words (no bank conflicts).

#ifndef USE_LOCAL
#define USE_LOCAL 0
#endif
#ifndef MWI
#define MWI 4 // rows of C per work-item
#endif
#ifndef VW
#define VW 8 // vector width along N (2, 4, 8 or 16), USE_LOCAL=0
#endif
#ifndef NV
#define NV 1 // vectors per row of a work-item's block, USE_LOCAL=0
#endif
#ifndef NWI
#define NWI 4 // columns of C per work-item, USE_LOCAL=1
#endif
#ifndef MWG
#define MWG 32 // rows of C per work-group, USE_LOCAL=1
#endif
#ifndef NWG
#define NWG 32 // columns of C per work-group, USE_LOCAL=1
#endif
#ifndef KWG
#define KWG 16 // depth of the local tiles, USE_LOCAL=1
#endif

#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#define floatV CAT(float, VW)
// A vector load at any element address: PoCL turns vloadN into N scalar loads, a dereference of
// a vector type with float alignment into one unaligned vector load. Half storage (storage.cl)
// loads with vload_halfN.
#if HALF_STORAGE
#define LOADV(p) CAT(vload_half, VW)(0, (p))
#else
typedef floatV __attribute__((aligned(4))) floatV_unaligned;
#define LOADV(p) (*(const global floatV_unaligned *)(p))
#endif

// The epilogue of one output element: alpha, the bias, the activation, the residual.
inline void gemm_store(global store_t *C, int ldc, int m, int n, float acc, float alpha, float beta,
                       const global store_t *bias, int bias_rs, int bias_cs, int has_bias,
                       const global store_t *res, int ldr, int has_res, int act, float act_a, float act_b) {
    float v = alpha * acc;
    if (has_bias) v += beta * LD(bias, m * bias_rs + n * bias_cs);
    if (has_res == 2) v += LD(res, m * ldr + n);
    v = crx_activate(v, act, act_a, act_b);
    if (has_res == 1) v += LD(res, m * ldr + n);
    ST(C, m * ldc + n, v);
}

#define GEMM_ARGS                                                                                  \
    const int M, const int N, const int K, const global store_t *A, const int a_rs,                \
        const int a_cs, const int a_bs, const global store_t *B, const int ldb, const int b_bs,    \
        global store_t *C, const int ldc, const int c_bs, const float alpha, const float beta,     \
        const global store_t *bias, const int bias_rs, const int bias_cs, const int bias_bs,       \
        const int has_bias, const global store_t *res, const int ldr, const int r_bs,                \
        const int has_res, const int act, const float act_a, const float act_b, const int n_first,    \
        const int blocks

#define STORE(m, n, v)                                                                              \
    gemm_store(C, ldc, m, n, v, alpha, beta, bias, bias_rs, bias_cs, has_bias, res, ldr, has_res,  \
               act, act_a, act_b)

#if USE_LOCAL == 0

#define NWI_V (VW * NV)
#if HALF_STORAGE
#define STOREV(p, v) CAT(vstore_half, CAT(VW, _rte))((v), 0, (p))
#else
#define STOREV(p, v) (*(global floatV_unaligned *)(p) = (v))
#endif
// The register loops must be unrolled for the block to live in registers: without the pragma
// PoCL's LLVM keeps acc[][] on the stack and splits each product into a multiply and an add
// (about 40 GFLOP per CPU-second; unrolled, with fma, 130-145 of a core's ~166 peak).
#define UNROLL _Pragma("unroll")

// The epilogue of a vector of VW outputs at row m, columns n..n+VW-1 (all inside C): alpha, the
// bias (a vector along a row, a broadcast value down a column, or gathered), the residual when
// has_res = 2, the activation (relu and clip as vectors, the rest per lane), the residual when
// has_res = 1.
inline floatV gemm_epilogue(floatV v, int m, int n, float alpha, float beta, const global store_t *bias,
                            int bias_rs, int bias_cs, int has_bias, const global store_t *res, int ldr,
                            int has_res, int act, float act_a, float act_b) {
    v *= alpha;
    if (has_bias) {
        const global store_t *bp = bias + m * bias_rs + n * bias_cs;
        if (bias_cs == 1) {
            v += beta * LOADV(bp);
        } else if (bias_cs == 0) {
            v += beta * LD(bp, 0);
        } else {
            union { floatV v; float s[VW]; } u;
            for (int e = 0; e < VW; e++) u.s[e] = LD(bp, e * bias_cs);
            v += beta * u.v;
        }
    }
    if (has_res == 2) v += LOADV(res + m * ldr + n);
    if (act == 1) {
        v = fmax(v, (floatV)(0.0f));
    } else if (act == 2) {
        v = fmin(fmax(v, (floatV)(act_a)), (floatV)(act_b));
    } else if (act != 0) {
        union { floatV v; float s[VW]; } u;
        u.v = v;
        for (int e = 0; e < VW; e++) u.s[e] = crx_activate(u.s[e], act, act_a, act_b);
        v = u.v;
    }
    if (has_res == 1) v += LOADV(res + m * ldr + n);
    return v;
}

#define EPILOGUE(v, m, n)                                                                           \
    gemm_epilogue(v, m, n, alpha, beta, bias, bias_rs, bias_cs, has_bias, res, ldr, has_res, act,   \
                  act_a, act_b)

// Stores vector v of row m whose lanes are columns n..n+VW-1, only the lanes at columns >= from
// (a block shifted back from the edge of C recomputes columns its neighbour owns).
inline void gemm_store_vector(global store_t *C, int ldc, int m, int n, int from, floatV v) {
    if (n >= from) {
        STOREV(C + m * ldc + n, v);
    } else {
        union { floatV v; float s[VW]; } u;
        u.v = v;
        for (int e = max(from - n, 0); e < VW; e++) ST(C, m * ldc + n + e, u.s[e]);
    }
}

// Global size: (ceil(fast / blocks), slow, batches) in MWI x VW*NV register blocks, where fast is
// the blocks down M and slow those along N, or the other way round with n_first; local size
// (1, 1, 1), so that PoCL runs each work-item's vector code as written rather than looping over
// work-items. Consecutive blocks share the operand that is larger (the host picks): down M they
// share the K x VW*NV panel of B (strided by a row of B), still in cache for the next ones (with N
// fastest the 64 x 3136 x 576 GEMM of a ResNet conv ran about 30% slower, every block fetching its
// panel from memory); along N, for a tall A (3136 x 64 x 576), they share A's MWI rows, so A is
// read from memory once instead of once per panel of B. Each work-item computes `blocks`
// consecutive blocks, so PoCL's cost per work-group is paid once per several.
kernel __attribute__((reqd_work_group_size(1, 1, 1))) void gemm(GEMM_ARGS) {
    const int batch = get_global_id(2);
    A += batch * a_bs;
    B += batch * b_bs;
    C += batch * c_bs;
    bias += batch * bias_bs;
    res += batch * r_bs;

    for (int nb = 0; nb < blocks; nb++) {
        const int fast = get_global_id(0) * blocks + nb, slow = get_global_id(1);
        const int m0 = (n_first ? slow : fast) * MWI;
        const int n0 = (n_first ? fast : slow) * NWI_V;
        if (m0 >= M || n0 >= N) return;
        if (M >= MWI && N >= NWI_V) {
            // Every block is whole: one cut by the edge of C (N = 49, 196, 784 in a ResNet) moves back
            // inside C and stores only its own outputs, so edges run the same vector code.
            const int me = min(m0, M - MWI), ne = min(n0, N - NWI_V);
            floatV acc[MWI][NV];
            UNROLL for (int i = 0; i < MWI; i++) UNROLL for (int j = 0; j < NV; j++) acc[i][j] = (floatV)(0.0f);
            // One pointer per row of A: with a single pointer, LLVM formed row i's address by a
            // chain of i adds of the row stride that every iteration waited on (8 adds, as long
            // as the 16 FMAs); each row's own pointer leaves one add per row, all independent.
            const global store_t *ar[MWI];
            UNROLL for (int i = 0; i < MWI; i++) ar[i] = A + (me + i) * a_rs;
            const global store_t *b = B + ne;
            for (int k = 0; k < K; k++) {
                floatV bv[NV];
                UNROLL for (int j = 0; j < NV; j++) bv[j] = LOADV(b + j * VW);
                UNROLL for (int i = 0; i < MWI; i++) {
                    const floatV av = (floatV)(LD(ar[i], 0));
                    ar[i] += a_cs;
                    UNROLL for (int j = 0; j < NV; j++) acc[i][j] = fma(av, bv[j], acc[i][j]);
                }
                b += ldb;
            }
            UNROLL for (int i = 0; i < MWI; i++) {
                if (me + i < m0) continue;
                UNROLL for (int j = 0; j < NV; j++) {
                    const int n = ne + j * VW;
                    gemm_store_vector(C, ldc, me + i, n, n0, EPILOGUE(acc[i][j], me + i, n));
                }
            }
        } else if (N >= VW) {
            // Fewer than MWI rows or NWI_V columns in all of C (a batch-1 fully connected layer): a
            // row at a time, its vectors moved back inside C where they would cross its edge.
            const int mi = min(MWI, M - m0);
            for (int i = 0; i < mi; i++) {
                floatV acc[NV];
                int nj[NV];
                UNROLL for (int j = 0; j < NV; j++) {
                    acc[j] = (floatV)(0.0f);
                    nj[j] = min(n0 + j * VW, N - VW);
                }
                const global store_t *a = A + (m0 + i) * a_rs;
                const global store_t *b = B;
                for (int k = 0; k < K; k++) {
                    const floatV av = (floatV)(LD(a, 0));
                    UNROLL for (int j = 0; j < NV; j++) acc[j] = fma(av, LOADV(b + nj[j]), acc[j]);
                    a += a_cs;
                    b += ldb;
                }
                UNROLL for (int j = 0; j < NV; j++) {
                    // Vector j starts at column n0 + j*VW unless moved back; one wholly past the block's
                    // own columns (moved back onto a neighbour's, or a copy of the last) stores nothing.
                    if (n0 + j * VW < N)
                        gemm_store_vector(C, ldc, m0 + i, nj[j], n0 + j * VW, EPILOGUE(acc[j], m0 + i, nj[j]));
                }
            }
        } else {
            // Fewer than VW columns in all of C: scalar, with bounds.
            const int mi = min(MWI, M - m0);
            for (int i = 0; i < mi; i++)
                for (int n = n0; n < N; n++) {
                    float acc = 0.0f;
                    for (int k = 0; k < K; k++) acc = fma(LD(A, (m0 + i) * a_rs + k * a_cs), LD(B, k * ldb + n), acc);
                    STORE(m0 + i, n, acc);
                }
        }
    }
}

#else

#define TDX (NWG / NWI) // work-items along N
#define TDY (MWG / MWI) // work-items along M
#define WGS (TDX * TDY)

// Global size: (ceil(N / NWG) * TDX, ceil(M / MWG) * TDY, batches); local size (TDX, TDY, 1).
kernel __attribute__((reqd_work_group_size(TDX, TDY, 1))) void gemm(GEMM_ARGS) {
    local float As[KWG][MWG + 1]; // +1: no bank conflicts on the transposed store
    local float Bs[KWG][NWG + 1];
    const int batch = get_global_id(2);
    const int tx = get_local_id(0), ty = get_local_id(1);
    const int lid = ty * TDX + tx;
    const int n_base = get_group_id(0) * NWG, m_base = get_group_id(1) * MWG;
    A += batch * a_bs;
    B += batch * b_bs;
    C += batch * c_bs;
    bias += batch * bias_bs;
    res += batch * r_bs;

    float acc[MWI][NWI];
    for (int i = 0; i < MWI; i++)
        for (int j = 0; j < NWI; j++) acc[i][j] = 0.0f;

    for (int k0 = 0; k0 < K; k0 += KWG) {
        for (int idx = lid; idx < MWG * KWG; idx += WGS) {
            const int m = idx / KWG, k = idx % KWG;
            const int gm = m_base + m, gk = k0 + k;
            As[k][m] = (gm < M && gk < K) ? LD(A, gm * a_rs + gk * a_cs) : 0.0f;
        }
        for (int idx = lid; idx < NWG * KWG; idx += WGS) {
            const int k = idx / NWG, n = idx % NWG;
            const int gn = n_base + n, gk = k0 + k;
            Bs[k][n] = (gn < N && gk < K) ? LD(B, gk * ldb + gn) : 0.0f;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int k = 0; k < KWG; k++) {
            float bv[NWI];
            for (int j = 0; j < NWI; j++) bv[j] = Bs[k][tx + j * TDX];
            for (int i = 0; i < MWI; i++) {
                const float av = As[k][ty + i * TDY];
                for (int j = 0; j < NWI; j++) acc[i][j] = fma(av, bv[j], acc[i][j]);
            }
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    for (int i = 0; i < MWI; i++) {
        const int m = m_base + ty + i * TDY;
        for (int j = 0; j < NWI; j++) {
            const int n = n_base + tx + j * TDX;
            if (m < M && n < N) STORE(m, n, acc[i][j]);
        }
    }
}

#endif

// out[b][c][r] = in[b][r][c] for a batch of rows x cols matrices (B^T for a transposed B).
kernel void transpose(const int rows, const int cols, const global store_t *in, global store_t *out) {
    const int c = get_global_id(0), r = get_global_id(1), b = get_global_id(2);
    if (r >= rows || c >= cols) return;
    const int plane = rows * cols;
    ST(out, b * plane + c * rows + r, LD(in, b * plane + r * cols + c));
}
