/*
 * Classifies the demo's 8x8 digit images with crx580's C API.
 *   usage: digits MODEL.onnx SAMPLES.npy LABELS.npy   (examples/digits has all three)
 * Build: make (see Makefile), or with crx580 installed:
 *   cc -std=c99 digits.c $(pkg-config --cflags --libs crx580) -o digits
 */
#include <crx580.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Reads a little-endian .npy file (format 1.0) of `dtype` ("<f4", "<i8"); returns its data and
 * sets *bytes. Good enough for the example's files; not a general reader. */
static void *read_npy(const char *path, const char *dtype, size_t *bytes) {
    FILE *f = fopen(path, "rb");
    unsigned char head[10];
    char dict[256] = {0};
    void *data = NULL;
    if (!f || fread(head, 1, 10, f) != 10 || memcmp(head, "\x93NUMPY\x01", 7) != 0) goto fail;
    size_t dict_len = head[8] | (size_t)head[9] << 8;
    if (dict_len >= sizeof dict || fread(dict, 1, dict_len, f) != dict_len || !strstr(dict, dtype)) goto fail;
    long start = ftell(f);
    fseek(f, 0, SEEK_END);
    *bytes = (size_t)(ftell(f) - start);
    fseek(f, start, SEEK_SET);
    data = malloc(*bytes ? *bytes : 1);
    if (!data || fread(data, 1, *bytes, f) != *bytes) goto fail;
    fclose(f);
    return data;
fail:
    fprintf(stderr, "digits: cannot read %s as a %s .npy file\n", path, dtype);
    if (f) fclose(f);
    free(data);
    return NULL;
}

/* Prints the failing call's status and message, and returns 1 (the exit code). */
static int fail(const char *what, crx_status status) {
    fprintf(stderr, "digits: %s failed: %s: %s\n", what, crx_status_name(status), crx_last_error_message());
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s MODEL.onnx SAMPLES.npy LABELS.npy\n", argv[0]);
        return 2;
    }
    if (crx_abi_version() != CRX_ABI_VERSION) {
        fprintf(stderr, "digits: built for crx580 ABI %d, loaded %u\n", CRX_ABI_VERSION, crx_abi_version());
        return 1;
    }
    size_t pixel_bytes = 0, label_bytes = 0;
    float *pixels = read_npy(argv[2], "<f4", &pixel_bytes);
    int64_t *labels = read_npy(argv[3], "<i8", &label_bytes);
    if (!pixels || !labels) return 1;
    int64_t images = (int64_t)(pixel_bytes / (64 * sizeof(float)));

    crx_model *model = NULL;
    crx_session *session = NULL;
    crx_tensor *input = NULL;
    crx_tensor *outputs[2] = {NULL, NULL}; /* logits, probabilities */
    int rc = 0;
    crx_status s;
    if ((s = crx_model_load(argv[1], NULL, &model))) {
        rc = fail("crx_model_load", s);
        goto done;
    }
    if ((s = crx_session_create(model, NULL, &session))) {
        rc = fail("crx_session_create", s);
        goto done;
    }
    int64_t shape[4] = {images, 1, 8, 8};
    if ((s = crx_tensor_create_borrowed(CRX_DTYPE_FLOAT32, shape, 4, pixels, pixel_bytes, &input))) {
        rc = fail("crx_tensor_create_borrowed", s);
        goto done;
    }
    const char *names[1] = {"image"};
    const crx_tensor *inputs[1] = {input};
    if ((s = crx_session_run(session, names, inputs, 1, outputs, 2))) {
        rc = fail("crx_session_run", s);
        goto done;
    }
    const void *data;
    size_t bytes;
    if ((s = crx_tensor_data(outputs[1], &data, &bytes))) {
        rc = fail("crx_tensor_data", s);
        goto done;
    }
    const float *probs = data;
    int correct = 0;
    for (int64_t i = 0; i < images; i++) {
        int best = 0;
        for (int k = 1; k < 10; k++) best = probs[i * 10 + k] > probs[i * 10 + best] ? k : best;
        correct += best == labels[i];
        printf("image %2lld: label %lld, predicted %d (%.3f)\n", (long long)i, (long long)labels[i], best,
               probs[i * 10 + best]);
    }
    printf("accuracy: %d/%lld with crx580 %s\n", correct, (long long)images, crx_version());
done:
    crx_tensor_free(outputs[0]);
    crx_tensor_free(outputs[1]);
    crx_tensor_free(input);
    crx_session_free(session);
    crx_model_free(model);
    free(pixels);
    free(labels);
    return rc;
}
