/*
 * The C ABI's promises, checked from C: every misuse gives an error status and a message (never a
 * crash), out-parameters stay untouched on error, _free(NULL) is a no-op, outputs match
 * onnxruntime's, and many threads running one session get the same outputs as one thread; an HTTP
 * server started on a loaded model answers over a socket with onnxruntime's outputs, then stops.
 *
 * Usage: test_capi MODEL SAMPLES.f32 EXPECTED_PROBABILITIES.f32 [OPENCL_CACHE_DIR]
 *   MODEL is examples/digits/digits.onnx; the raw float32 files are made by tests/capi/run.sh
 *   (the 32 sample images, and onnxruntime's probabilities for them). With OPENCL_CACHE_DIR (an
 *   empty or missing directory) it also runs the model on the OpenCL device with the fp16_storage
 *   and cache_dir options, which must then work (run.sh does so with PoCL).
 * Ends with "N passed, N failed"; exits non-zero when anything failed.
 */
/* Sockets and strdup for the server test: POSIX, not C99. */
#define _POSIX_C_SOURCE 200809L
#include "crx580.h"

#include <arpa/inet.h>
#include <math.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int passed, failed;

#define CHECK(cond, ...)                                                                 \
    do {                                                                                 \
        if (cond) {                                                                      \
            passed++;                                                                    \
        } else {                                                                         \
            failed++;                                                                    \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);              \
            fprintf(stderr, __VA_ARGS__);                                                \
            fputc('\n', stderr);                                                         \
        }                                                                                \
    } while (0)

/* The status must be `want` and the thread's last error must contain `needle`. */
#define EXPECT_ERROR(call, want, needle)                                                 \
    do {                                                                                 \
        crx_status got_ = (call);                                                        \
        const char *msg_ = crx_last_error_message();                                     \
        CHECK(got_ == (want), "%s gave %s, wanted %s (%s)", #call, crx_status_name(got_), \
              crx_status_name(want), msg_ ? msg_ : "no message");                        \
        CHECK(msg_ != NULL && strstr(msg_, (needle)) != NULL, "%s: message '%s' lacks '%s'", \
              #call, msg_ ? msg_ : "(null)", (needle));                                  \
    } while (0)

#define EXPECT_OK(call)                                                                  \
    do {                                                                                 \
        crx_status got_ = (call);                                                        \
        CHECK(got_ == CRX_OK, "%s gave %s: %s", #call, crx_status_name(got_),             \
              crx_last_error_message() ? crx_last_error_message() : "");                 \
    } while (0)

#define IMAGES 32
#define CLASSES 10
static const char *const IMAGE_NAME[] = {"image"};

static float *read_floats(const char *path, size_t count) {
    FILE *f = fopen(path, "rb");
    float *v = malloc(count * sizeof *v);
    size_t got = f && v ? fread(v, sizeof *v, count, f) : 0;
    if (f) fclose(f);
    if (got != count) {
        fprintf(stderr, "cannot read %zu floats from %s\n", count, path);
        exit(2);
    }
    return v;
}

/* A sentinel for out-parameters that must stay untouched. */
#define SENTINEL ((void *)0x5e47)

static void test_versions(void) {
    char want[32];
    snprintf(want, sizeof want, "%d.%d.%d", CRX_VERSION_MAJOR, CRX_VERSION_MINOR, CRX_VERSION_PATCH);
    CHECK(strcmp(crx_version(), want) == 0, "crx_version() is %s, the header says %s", crx_version(), want);
    CHECK(crx_abi_version() == CRX_ABI_VERSION, "ABI %u, header %d", crx_abi_version(), CRX_ABI_VERSION);
    size_t n = 0;
    const char *name = NULL;
    EXPECT_OK(crx_device_count(&n));
    CHECK(n >= 1, "%zu devices", n);
    EXPECT_OK(crx_device_name(0, &name));
    CHECK(name != NULL && strlen(name) > 0, "device 0 has no name");
    name = SENTINEL;
    EXPECT_ERROR(crx_device_name(n, &name), CRX_ERR_INVALID_ARGUMENT, "out of range");
    CHECK(name == SENTINEL, "name written on error");
}

static void test_null_pointers_and_bad_models(const char *model_path) {
    crx_model *model = SENTINEL;
    EXPECT_ERROR(crx_model_load(NULL, NULL, &model), CRX_ERR_INVALID_ARGUMENT, "'path' is NULL");
    EXPECT_ERROR(crx_model_load(model_path, NULL, NULL), CRX_ERR_INVALID_ARGUMENT, "'model' is NULL");
    EXPECT_ERROR(crx_model_load("/nonexistent/m.onnx", NULL, &model), CRX_ERR_IO, "/nonexistent/m.onnx");
    EXPECT_ERROR(crx_model_load_from_memory("not a model", 11, NULL, &model), CRX_ERR_INVALID_MODEL, "");
    EXPECT_ERROR(crx_model_load_from_memory(NULL, 10, NULL, &model), CRX_ERR_INVALID_ARGUMENT, "'data'");
    CHECK(model == SENTINEL, "model written on error");

    size_t count = 7;
    EXPECT_ERROR(crx_model_input_count(NULL, &count), CRX_ERR_INVALID_ARGUMENT, "'model' is NULL");
    CHECK(count == 7, "count written on error");
    crx_session *session = SENTINEL;
    EXPECT_ERROR(crx_session_create(NULL, NULL, &session), CRX_ERR_INVALID_ARGUMENT, "'model' is NULL");
    CHECK(session == SENTINEL, "session written on error");
    crx_tensor *out[2] = {SENTINEL, SENTINEL};
    EXPECT_ERROR(crx_session_run(NULL, NULL, NULL, 0, out, 2), CRX_ERR_INVALID_ARGUMENT, "'session' is NULL");
    CHECK(out[0] == SENTINEL && out[1] == SENTINEL, "outputs written on error");
    crx_tensor *t = SENTINEL;
    EXPECT_ERROR(crx_tensor_create(CRX_DTYPE_FLOAT32, NULL, 2, NULL, 0, &t), CRX_ERR_INVALID_ARGUMENT, "'shape'");
    int64_t shape[1] = {4};
    EXPECT_ERROR(crx_tensor_create(CRX_DTYPE_FLOAT32, shape, 1, NULL, 16, &t), CRX_ERR_INVALID_ARGUMENT, "'data'");
    CHECK(t == SENTINEL, "tensor written on error");
    EXPECT_ERROR(crx_session_options_default(NULL, sizeof(crx_session_options)), CRX_ERR_INVALID_ARGUMENT, "NULL");
    EXPECT_ERROR(crx_tensor_dtype(NULL, NULL), CRX_ERR_INVALID_ARGUMENT, "'dtype' is NULL");

    /* _free(NULL) is a no-op and leaves no error behind. */
    crx_model_free(NULL);
    crx_session_free(NULL);
    crx_tensor_free(NULL);
    CHECK(crx_last_error_message() == NULL, "free(NULL) left '%s'", crx_last_error_message());
}

static void test_tensors(void) {
    crx_tensor *t = SENTINEL;
    float values[6] = {1, 2, 3, 4, 5, 6};
    int64_t shape[2] = {2, 3};
    EXPECT_ERROR(crx_tensor_create(99, shape, 2, values, sizeof values, &t), CRX_ERR_INVALID_ARGUMENT, "dtype 99");
    EXPECT_ERROR(crx_tensor_create(CRX_DTYPE_STRING, shape, 2, values, sizeof values, &t), CRX_ERR_UNSUPPORTED, "string");
    EXPECT_ERROR(crx_tensor_create(CRX_DTYPE_FLOAT32, shape, 2, values, 20, &t), CRX_ERR_INVALID_ARGUMENT, "24 bytes");
    int64_t negative[2] = {2, -3};
    EXPECT_ERROR(crx_tensor_create(CRX_DTYPE_FLOAT32, negative, 2, values, 24, &t), CRX_ERR_INVALID_ARGUMENT, "negative");
    int64_t huge[2] = {INT64_MAX, 4};
    EXPECT_ERROR(crx_tensor_create(CRX_DTYPE_FLOAT32, huge, 2, values, 24, &t), CRX_ERR_RESOURCE_LIMIT, "");
    EXPECT_ERROR(crx_tensor_create_borrowed(CRX_DTYPE_FLOAT32, shape, 2, (char *)values + 1, 24, &t),
                 CRX_ERR_INVALID_ARGUMENT, "aligned");
    CHECK(t == SENTINEL, "tensor written on error");

    EXPECT_OK(crx_tensor_create(CRX_DTYPE_FLOAT32, shape, 2, values, sizeof values, &t));
    crx_dtype dtype = 0;
    const int64_t *dims = NULL;
    size_t rank = 0;
    const void *data = NULL;
    size_t bytes = 0;
    EXPECT_OK(crx_tensor_dtype(t, &dtype));
    EXPECT_OK(crx_tensor_shape(t, &dims, &rank));
    EXPECT_OK(crx_tensor_data(t, &data, &bytes));
    CHECK(dtype == CRX_DTYPE_FLOAT32 && rank == 2 && dims[0] == 2 && dims[1] == 3, "dtype %d rank %zu", dtype, rank);
    CHECK(bytes == sizeof values && memcmp(data, values, bytes) == 0 && data != values, "a copy of the values");

    float small[5] = {-1, -1, -1, -1, -1};
    size_t written = 77;
    EXPECT_ERROR(crx_tensor_copy_to(t, small, sizeof small, &written), CRX_ERR_BUFFER_TOO_SMALL, "24 bytes");
    CHECK(written == 77 && small[0] == -1 && small[4] == -1, "buffer or size written on error");
    float big[6] = {0};
    EXPECT_OK(crx_tensor_copy_to(t, big, sizeof big, &written));
    CHECK(written == 24 && memcmp(big, values, 24) == 0, "copy_to wrote %zu bytes", written);

    /* Use after free and double free are detected; a handle of the wrong type too. */
    crx_tensor_free(t);
    EXPECT_ERROR(crx_tensor_dtype(t, &dtype), CRX_ERR_INVALID_HANDLE, "not a live crx_tensor");
    crx_tensor_free(t); /* a no-op that says why */
    CHECK(crx_last_error_message() && strstr(crx_last_error_message(), "not a live crx_tensor"), "double free");

    crx_tensor *borrowed = NULL;
    EXPECT_OK(crx_tensor_create_borrowed(CRX_DTYPE_FLOAT32, shape, 2, values, sizeof values, &borrowed));
    EXPECT_OK(crx_tensor_data(borrowed, &data, &bytes));
    CHECK(data == values && bytes == sizeof values, "a borrowed tensor's data is the caller's buffer");
    size_t count = 3;
    EXPECT_ERROR(crx_model_input_count((const crx_model *)borrowed, &count), CRX_ERR_INVALID_HANDLE,
                 "is a crx_tensor, not a crx_model");
    CHECK(count == 3, "count written on error");
    crx_tensor_free(borrowed);

    /* A scalar: rank 0, shape may be NULL. */
    int64_t answer = 42;
    EXPECT_OK(crx_tensor_create(CRX_DTYPE_INT64, NULL, 0, &answer, sizeof answer, &t));
    EXPECT_OK(crx_tensor_shape(t, &dims, &rank));
    CHECK(rank == 0, "a scalar has rank %zu", rank);
    crx_tensor_free(t);
}

static void test_model_info(const crx_model *model) {
    size_t inputs = 0, outputs = 0;
    EXPECT_OK(crx_model_input_count(model, &inputs));
    EXPECT_OK(crx_model_output_count(model, &outputs));
    CHECK(inputs == 1 && outputs == 2, "%zu inputs, %zu outputs", inputs, outputs);
    crx_value_info info;
    EXPECT_OK(crx_model_input_info(model, 0, &info, sizeof info));
    CHECK(strcmp(info.name, "image") == 0 && info.kind == CRX_VALUE_TENSOR && info.dtype == CRX_DTYPE_FLOAT32,
          "input %s kind %d dtype %d", info.name, info.kind, info.dtype);
    CHECK(info.rank == 4 && info.dims[0] == -1 && info.dims[1] == 1 && info.dims[2] == 8 && info.dims[3] == 8,
          "rank %lld", (long long)info.rank);
    CHECK(info.dim_names[0] && strcmp(info.dim_names[0], "N") == 0 && info.dim_names[1] == NULL, "dim names");
    EXPECT_OK(crx_model_output_info(model, 1, &info, sizeof info));
    CHECK(strcmp(info.name, "probabilities") == 0, "output 1 is %s", info.name);
    crx_value_info untouched = info;
    EXPECT_ERROR(crx_model_output_info(model, 2, &info, sizeof info), CRX_ERR_INVALID_ARGUMENT, "out of range");
    EXPECT_ERROR(crx_model_input_info(model, 0, &info, 4), CRX_ERR_INVALID_ARGUMENT, "struct_size");
    CHECK(memcmp(&info, &untouched, sizeof info) == 0, "info written on error");
}

/* `opencl`: whether an OpenCL device is present (run.sh runs once without, once with PoCL). */
static void test_session_options(const crx_model *model, int opencl) {
    crx_session_options options;
    crx_session *session = SENTINEL;
    EXPECT_ERROR(crx_session_options_default(&options, 3), CRX_ERR_INVALID_ARGUMENT, "struct_size");
    EXPECT_OK(crx_session_options_default(&options, sizeof options));
    CHECK(options.struct_size == sizeof options && options.device == CRX_DEVICE_AUTO && options.threads == 0,
          "defaults");
    options.device = 42;
    EXPECT_ERROR(crx_session_create(model, &options, &session), CRX_ERR_INVALID_ARGUMENT, "device");
    options.device = CRX_DEVICE_OPENCL;
    if (opencl) {
        EXPECT_OK(crx_session_create(model, &options, &session));
        crx_session_free(session);
        session = SENTINEL;
    } else {
        EXPECT_ERROR(crx_session_create(model, &options, &session), CRX_ERR_UNSUPPORTED, "OpenCL");
    }
    options.device = CRX_DEVICE_CPU;
    /* The CPU ignores fp16_storage and cache_dir (it keeps float32; it compiles no programs). */
    options.fp16_storage = 1;
    options.cache_dir = "/nonexistent/crx580-capi-cache";
    EXPECT_OK(crx_session_create(model, &options, &session));
    crx_session_free(session);
    session = SENTINEL;
    options.cache_dir = "\xff\xfe not UTF-8";
    EXPECT_ERROR(crx_session_create(model, &options, &session), CRX_ERR_INVALID_ARGUMENT, "cache_dir");
    options.cache_dir = NULL;
    options.fp16_storage = 0;
    options.struct_size = 8;
    EXPECT_ERROR(crx_session_create(model, &options, &session), CRX_ERR_INVALID_ARGUMENT, "struct_size");
    CHECK(session == SENTINEL, "session written on error");
}

static void test_bad_inputs(const crx_session *session, const crx_tensor *images) {
    crx_tensor *out[2] = {SENTINEL, SENTINEL};
    const crx_tensor *in[1] = {images};

    int64_t wrong_dtype_shape[4] = {1, 1, 8, 8};
    int64_t ints[64] = {0};
    crx_tensor *wrong_dtype = NULL;
    EXPECT_OK(crx_tensor_create(CRX_DTYPE_INT64, wrong_dtype_shape, 4, ints, sizeof ints, &wrong_dtype));
    in[0] = wrong_dtype;
    EXPECT_ERROR(crx_session_run(session, IMAGE_NAME, in, 1, out, 2), CRX_ERR_INVALID_INPUT, "must be float32");

    int64_t rank3[3] = {1, 8, 8};
    float pixels[64] = {0};
    crx_tensor *wrong_rank = NULL;
    EXPECT_OK(crx_tensor_create(CRX_DTYPE_FLOAT32, rank3, 3, pixels, sizeof pixels, &wrong_rank));
    in[0] = wrong_rank;
    EXPECT_ERROR(crx_session_run(session, IMAGE_NAME, in, 1, out, 2), CRX_ERR_INVALID_INPUT, "rank 4");

    in[0] = images;
    const char *unknown[1] = {"imag"};
    EXPECT_ERROR(crx_session_run(session, unknown, in, 1, out, 2), CRX_ERR_INVALID_INPUT, "no input named 'imag'");
    EXPECT_ERROR(crx_session_run(session, IMAGE_NAME, in, 0, out, 2), CRX_ERR_INVALID_INPUT, "'image' is missing");
    const char *null_name[1] = {NULL};
    EXPECT_ERROR(crx_session_run(session, null_name, in, 1, out, 2), CRX_ERR_INVALID_ARGUMENT, "input_names[0]");
    EXPECT_ERROR(crx_session_run(session, IMAGE_NAME, in, 1, out, 1), CRX_ERR_INVALID_ARGUMENT, "2 outputs");
    crx_tensor_free(wrong_rank);
    in[0] = wrong_rank; /* freed: use after free */
    EXPECT_ERROR(crx_session_run(session, IMAGE_NAME, in, 1, out, 2), CRX_ERR_INVALID_HANDLE, "inputs[0]");
    CHECK(out[0] == SENTINEL && out[1] == SENTINEL, "outputs written on error");

    /* Short output buffers: an error, and no buffer or size written. */
    float logits[IMAGES * CLASSES], probs[IMAGES * CLASSES - 1];
    memset(probs, 0x7f, sizeof probs);
    void *buffers[2] = {logits, probs};
    size_t capacities[2] = {sizeof logits, sizeof probs};
    size_t sizes[2] = {1, 1};
    in[0] = images;
    EXPECT_ERROR(crx_session_run_into(session, IMAGE_NAME, in, 1, buffers, capacities, 2, sizes),
                 CRX_ERR_BUFFER_TOO_SMALL, "output 'probabilities' has 1280 bytes");
    CHECK(sizes[0] == 1 && sizes[1] == 1 && probs[0] == probs[IMAGES * CLASSES - 2], "written on error");
    crx_tensor_free(wrong_dtype);
}

/* Model output 1 (probabilities) as floats, checked against onnxruntime's. */
static void check_probabilities(const float *got, const float *expected, const char *how) {
    float worst = 0;
    for (int i = 0; i < IMAGES * CLASSES; i++) {
        float d = fabsf(got[i] - expected[i]);
        worst = d > worst ? d : worst;
    }
    CHECK(worst <= 1e-5f, "%s: probabilities differ from onnxruntime's by up to %g", how, worst);
}

static void run_once(const crx_session *session, const crx_tensor *images, float *probs) {
    const crx_tensor *in[1] = {images};
    crx_tensor *out[2] = {NULL, NULL};
    EXPECT_OK(crx_session_run(session, IMAGE_NAME, in, 1, out, 2));
    if (out[1]) EXPECT_OK(crx_tensor_copy_to(out[1], probs, IMAGES * CLASSES * sizeof(float), NULL));
    crx_tensor_free(out[0]);
    crx_tensor_free(out[1]);
}

/* The largest difference between two sets of probabilities. */
static float worst_difference(const float *a, const float *b) {
    float worst = 0;
    for (int i = 0; i < IMAGES * CLASSES; i++) worst = fmaxf(worst, fabsf(a[i] - b[i]));
    return worst;
}

/* On the OpenCL device, with float32 and then float16 storage and programs cached in
 * `cache_dir`: the outputs match onnxruntime's (float16 within its rounding), the cache directory
 * is made and filled, and a second session with float16 storage compiles nothing new. */
static void test_opencl(const crx_model *model, const float *samples, const float *expected,
                        const char *cache_dir) {
    int64_t shape[4] = {IMAGES, 1, 8, 8};
    crx_tensor *images = NULL;
    EXPECT_OK(crx_tensor_create(CRX_DTYPE_FLOAT32, shape, 4, samples, IMAGES * 64 * sizeof(float), &images));
    for (int fp16 = 0; fp16 <= 1; fp16++) {
        crx_session_options options;
        crx_session_options_default(&options, sizeof options);
        options.device = CRX_DEVICE_OPENCL;
        options.fp16_storage = fp16;
        options.cache_dir = cache_dir;
        crx_session *session = NULL;
        EXPECT_OK(crx_session_create(model, &options, &session));
        if (!session) continue;
        float probs[IMAGES * CLASSES] = {0};
        run_once(session, images, probs);
        float worst = worst_difference(probs, expected);
        float bound = fp16 ? 1e-2f : 1e-4f;
        CHECK(worst <= bound, "OpenCL, fp16_storage %d: probabilities differ from onnxruntime's by %g (bound %g)",
              fp16, worst, bound);
        crx_session_free(session);
    }
    crx_tensor_free(images);
    char probe[4096];
    snprintf(probe, sizeof probe, "ls -A '%s' | grep -q '\\.bin$'", cache_dir);
    CHECK(system(probe) == 0, "no compiled program was cached in %s", cache_dir);
}

struct worker {
    const crx_session *session;
    const crx_tensor *images;
    const float *samples;
    const float *reference;
    int runs, mismatches, errors;
};

/* Alternates the shared tensor and a borrowed tensor of its own over the same pixels. */
static void *work(void *arg) {
    struct worker *w = arg;
    int64_t shape[4] = {IMAGES, 1, 8, 8};
    crx_tensor *own = NULL;
    if (crx_tensor_create_borrowed(CRX_DTYPE_FLOAT32, shape, 4, w->samples, IMAGES * 64 * sizeof(float), &own)) {
        w->errors++;
        return NULL;
    }
    float probs[IMAGES * CLASSES];
    for (int r = 0; r < w->runs; r++) {
        const crx_tensor *in[1] = {r % 2 ? own : w->images};
        crx_tensor *out[2] = {NULL, NULL};
        if (crx_session_run(w->session, IMAGE_NAME, in, 1, out, 2) != CRX_OK ||
            crx_tensor_copy_to(out[1], probs, sizeof probs, NULL) != CRX_OK) {
            w->errors++;
        } else if (memcmp(probs, w->reference, sizeof probs) != 0) {
            w->mismatches++;
        }
        crx_tensor_free(out[0]);
        crx_tensor_free(out[1]);
    }
    crx_tensor_free(own);
    return NULL;
}

static void test_runs(const crx_session *session, const float *samples, const float *expected) {
    int64_t shape[4] = {IMAGES, 1, 8, 8};
    crx_tensor *images = NULL, *borrowed = NULL;
    EXPECT_OK(crx_tensor_create(CRX_DTYPE_FLOAT32, shape, 4, samples, IMAGES * 64 * sizeof(float), &images));
    EXPECT_OK(crx_tensor_create_borrowed(CRX_DTYPE_FLOAT32, shape, 4, samples, IMAGES * 64 * sizeof(float), &borrowed));

    float copied[IMAGES * CLASSES], from_borrowed[IMAGES * CLASSES], into[IMAGES * CLASSES];
    run_once(session, images, copied);
    check_probabilities(copied, expected, "copied input");
    run_once(session, borrowed, from_borrowed);
    CHECK(memcmp(copied, from_borrowed, sizeof copied) == 0, "a borrowed input gives other outputs");

    const crx_tensor *in[1] = {images};
    void *buffers[2] = {NULL, into}; /* skip the logits */
    size_t capacities[2] = {0, sizeof into};
    size_t sizes[2] = {0, 0};
    EXPECT_OK(crx_session_run_into(session, IMAGE_NAME, in, 1, buffers, capacities, 2, sizes));
    CHECK(sizes[0] == sizeof into && sizes[1] == sizeof into, "sizes %zu %zu", sizes[0], sizes[1]);
    CHECK(memcmp(copied, into, sizeof into) == 0, "run_into gives other outputs");

    test_bad_inputs(session, images);

    /* Many threads, one session: the same outputs as one thread. */
    enum { THREADS = 8 };
    const char *env_runs = getenv("CRX_TEST_RUNS_PER_THREAD");
    int runs = env_runs ? atoi(env_runs) : 25;
    pthread_t threads[THREADS];
    struct worker workers[THREADS];
    for (int i = 0; i < THREADS; i++) {
        workers[i] = (struct worker){session, images, samples, copied, runs, 0, 0};
        CHECK(pthread_create(&threads[i], NULL, work, &workers[i]) == 0, "pthread_create");
    }
    int mismatches = 0, errors = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(threads[i], NULL);
        mismatches += workers[i].mismatches;
        errors += workers[i].errors;
    }
    CHECK(errors == 0 && mismatches == 0, "%d threads x %d runs: %d errors, %d mismatches", THREADS, runs, errors,
          mismatches);
    crx_tensor_free(images);
    crx_tensor_free(borrowed);
}

/* Each thread has its own last error. */
static void *fail_in_thread(void *arg) {
    (void)arg;
    crx_model *m = NULL;
    crx_model_load(NULL, NULL, &m);
    return NULL;
}

static void test_last_error_is_per_thread(void) {
    size_t n;
    crx_device_count(&n);
    pthread_t t;
    pthread_create(&t, NULL, fail_in_thread, NULL);
    pthread_join(t, NULL);
    CHECK(crx_last_error_message() == NULL, "another thread's error leaked here: %s", crx_last_error_message());
}

/* One HTTP/1.1 request to 127.0.0.1:port with "Connection: close"; returns the whole answer
 * (status line, headers, body) as a malloc'd string, or NULL when the connection fails. */
static char *http_request(uint16_t port, const char *method, const char *path, const char *body) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return NULL;
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        close(fd);
        return NULL;
    }
    size_t body_len = body ? strlen(body) : 0;
    char head[256];
    int n = snprintf(head, sizeof head,
                     "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                     method, path, body_len);
    if (write(fd, head, (size_t)n) != n || (body_len && write(fd, body, body_len) != (ssize_t)body_len)) {
        close(fd);
        return NULL;
    }
    size_t cap = 4096, len = 0;
    char *answer = malloc(cap);
    ssize_t got;
    while ((got = read(fd, answer + len, cap - len - 1)) > 0) {
        len += (size_t)got;
        if (cap - len < 1024) answer = realloc(answer, cap *= 2);
    }
    close(fd);
    answer[len] = '\0';
    return answer;
}

static int status_is(const char *answer, const char *status) {
    return answer && strncmp(answer, "HTTP/1.1 ", 9) == 0 && strncmp(answer + 9, status, 3) == 0;
}

/* A server on the loaded model: misuse is refused with a status, metadata and an OIP v2 JSON
 * inference of one image come back over a socket (the probabilities equal onnxruntime's), a
 * second server cannot take the same port, and after crx_server_stop nothing listens. */
static void test_server(const crx_model *model, const crx_session *session, const float *samples,
                        const float *expected) {
    const crx_model *models[2] = {model, model};
    const char *names[2] = {"digits", "digits"};
    crx_server *server = SENTINEL;
    EXPECT_ERROR(crx_server_start(models, names, 1, NULL, NULL), CRX_ERR_INVALID_ARGUMENT, "'server' is NULL");
    EXPECT_ERROR(crx_server_start(models, NULL, 1, NULL, &server), CRX_ERR_INVALID_ARGUMENT, "'names' is NULL");
    EXPECT_ERROR(crx_server_start(models, names, 2, NULL, &server), CRX_ERR_INVALID_ARGUMENT, "given twice");
    const crx_model *not_a_model[1] = {(const crx_model *)session};
    EXPECT_ERROR(crx_server_start(not_a_model, names, 1, NULL, &server), CRX_ERR_INVALID_HANDLE,
                 "is a crx_session, not a crx_model");
    crx_server_options options;
    EXPECT_OK(crx_server_options_default(&options, sizeof options));
    options.host = "not an address";
    EXPECT_ERROR(crx_server_start(models, names, 1, &options, &server), CRX_ERR_INVALID_ARGUMENT, "not an IP address");
    CHECK(server == SENTINEL, "server written on error");

    crx_session_options session_options;
    crx_session_options_default(&session_options, sizeof session_options);
    session_options.device = CRX_DEVICE_CPU;
    session_options.threads = 1;
    crx_server_options_default(&options, sizeof options);
    options.workers = 2;
    options.session = &session_options;
    EXPECT_OK(crx_server_start(models, names, 1, &options, &server));
    if (server == SENTINEL) return;
    uint16_t port = 0;
    EXPECT_OK(crx_server_port(server, &port));
    CHECK(port != 0, "no port");

    char *answer = http_request(port, "GET", "/v2/health/ready", NULL);
    CHECK(status_is(answer, "200"), "ready: %s", answer ? answer : "no connection");
    free(answer);
    answer = http_request(port, "GET", "/v2/models/digits", NULL);
    CHECK(status_is(answer, "200") && strstr(answer, "\"probabilities\""), "metadata: %s", answer ? answer : "none");
    free(answer);
    answer = http_request(port, "GET", "/v2/models/nope", NULL);
    CHECK(status_is(answer, "404") && strstr(answer, "\"error\""), "unknown model: %s", answer ? answer : "none");
    free(answer);

    char body[4096];
    int n = snprintf(body, sizeof body,
                     "{\"inputs\": [{\"name\": \"image\", \"shape\": [1, 1, 8, 8], \"datatype\": \"FP32\", \"data\": [");
    for (int i = 0; i < 64; i++) n += snprintf(body + n, sizeof body - (size_t)n, "%s%.9g", i ? "," : "", samples[i]);
    snprintf(body + n, sizeof body - (size_t)n, "]}], \"outputs\": [{\"name\": \"probabilities\"}]}");
    answer = http_request(port, "POST", "/v2/models/digits/infer", body);
    CHECK(status_is(answer, "200"), "infer: %s", answer ? answer : "no connection");
    const char *data = answer ? strstr(answer, "\"data\":[") : NULL;
    CHECK(data != NULL, "infer answer has no data: %s", answer ? answer : "none");
    if (data) {
        char *p = (char *)data + strlen("\"data\":[");
        float worst = 0;
        for (int c = 0; c < CLASSES; c++) {
            float d = fabsf(strtof(p, &p) - expected[c]);
            worst = d > worst ? d : worst;
            p += *p == ',';
        }
        CHECK(worst <= 1e-5f, "HTTP probabilities differ from onnxruntime's by up to %g", worst);
    }
    free(answer);

    crx_server *second = SENTINEL;
    options.port = port;
    CHECK(crx_server_start(models, names, 1, &options, &second) != CRX_OK, "a second server took port %u", port);
    CHECK(second == SENTINEL, "server written on error");

    crx_server_stop(server);
    answer = http_request(port, "GET", "/v2/health/live", NULL);
    CHECK(answer == NULL || answer[0] == '\0', "still answering after crx_server_stop: %s", answer);
    free(answer);
    EXPECT_ERROR(crx_server_port(server, &port), CRX_ERR_INVALID_HANDLE, "not a live crx_server");
    crx_server_stop(server); /* twice: a no-op */
    crx_server_stop(NULL);
}

int main(int argc, char **argv) {
    if (argc != 4 && argc != 5) {
        fprintf(stderr, "usage: %s MODEL SAMPLES.f32 EXPECTED_PROBABILITIES.f32 [OPENCL_CACHE_DIR]\n", argv[0]);
        return 2;
    }
    float *samples = read_floats(argv[2], IMAGES * 64);
    float *expected = read_floats(argv[3], IMAGES * CLASSES);

    test_versions();
    test_null_pointers_and_bad_models(argv[1]);
    test_tensors();
    test_last_error_is_per_thread();

    crx_model *model = NULL;
    EXPECT_OK(crx_model_load(argv[1], NULL, &model));
    if (model) {
        test_model_info(model);
        test_session_options(model, argc == 5);
        if (argc == 5) test_opencl(model, samples, expected, argv[4]);
        crx_session_options options;
        crx_session_options_default(&options, sizeof options);
        options.device = CRX_DEVICE_CPU;
        crx_session *session = NULL;
        EXPECT_OK(crx_session_create(model, &options, &session));
        test_server(model, session, samples, expected);
        crx_model_free(model); /* the session does not need it */
        if (session) test_runs(session, samples, expected);
        crx_session_free(session);
        crx_tensor *out[2] = {SENTINEL, SENTINEL};
        EXPECT_ERROR(crx_session_run(session, NULL, NULL, 0, out, 2), CRX_ERR_INVALID_HANDLE, "not a live crx_session");
        CHECK(out[0] == SENTINEL, "outputs written on error");
    }
    CHECK(crx_live_handle_count() == 0, "%zu handles never freed", crx_live_handle_count());
    free(samples);
    free(expected);
    printf("capi: %d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
