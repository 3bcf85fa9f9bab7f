// How tensors are stored on the device: f32, or float16 with HALF_STORAGE=1 (the session's
// fp16_storage option). Kernels read and write tensor elements only through LD/ST and compute in
// f32, so half storage needs no cl_khr_fp16 (vload_half/vstore_half are core OpenCL 1.2, and a
// `half` pointer is allowed without the extension). The host prepends this file to every kernel
// file but itself; it compiles on its own.

#ifndef CRX580_STORAGE
#define CRX580_STORAGE

#ifndef HALF_STORAGE
#define HALF_STORAGE 0
#endif

#if HALF_STORAGE
typedef half store_t;
#define LD(p, i) vload_half((i), (p))
#define ST(p, i, v) vstore_half_rte((v), (i), (p))
#else
typedef float store_t;
#define LD(p, i) ((p)[i])
#define ST(p, i, v) ((p)[i] = (v))
#endif

#endif
