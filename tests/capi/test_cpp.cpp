// The C++ wrapper (include/crx580.hpp): runs match onnxruntime's outputs, errors become
// crx580::Error with the C status and message, handles are move-only and freed exactly once.
// usage: test_cpp MODEL SAMPLES.f32 EXPECTED_PROBABILITIES.f32 ; ends with "N passed, N failed".
#include "crx580.hpp"

#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

static int passed, failed;
#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (cond) {                                                                                \
            passed++;                                                                              \
        } else {                                                                                   \
            failed++;                                                                              \
            std::fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);                   \
        }                                                                                          \
    } while (0)

static std::vector<float> read_floats(const char *path, std::size_t n) {
    std::vector<float> v(n);
    std::ifstream f(path, std::ios::binary);
    if (!f.read(reinterpret_cast<char *>(v.data()), static_cast<std::streamsize>(n * sizeof(float)))) {
        std::fprintf(stderr, "cannot read %zu floats from %s\n", n, path);
        std::exit(2);
    }
    return v;
}

// Runs `f`, which must throw crx580::Error with `status` and a message containing `needle`.
template <typename F>
static void expect_error(F f, crx_status status, const std::string &needle) {
    try {
        f();
        CHECK(!"no exception");
    } catch (const crx580::Error &e) {
        CHECK(e.status() == status);
        CHECK(std::string(e.what()).find(needle) != std::string::npos);
        if (e.status() != status) std::fprintf(stderr, "  got %s: %s\n", crx_status_name(e.status()), e.what());
    }
}

static_assert(!std::is_copy_constructible_v<crx580::Tensor>, "handles are move-only");
static_assert(!std::is_copy_constructible_v<crx580::Session>, "handles are move-only");
static_assert(std::is_nothrow_move_constructible_v<crx580::Model>, "handles move without throwing");

int main(int argc, char **argv) {
    if (argc != 4) return 2;
    std::vector<float> samples = read_floats(argv[2], 32 * 64);
    std::vector<float> expected = read_floats(argv[3], 32 * 10);
    {
        crx580::Model model = crx580::Model::load(argv[1]);
        auto inputs = model.inputs();
        CHECK(inputs.size() == 1 && inputs[0].name == "image" && inputs[0].dtype == CRX_DTYPE_FLOAT32);
        CHECK(inputs[0].dims == (std::vector<int64_t>{-1, 1, 8, 8}) && inputs[0].dim_names[0] == "N");
        CHECK(model.outputs().size() == 2 && model.outputs()[1].name == "probabilities");

        crx580::Session session(model, crx580::SessionOptions().device(CRX_DEVICE_CPU));
        crx580::Tensor images = crx580::Tensor::copy(samples, {32, 1, 8, 8});
        std::vector<crx580::Tensor> out = session.run({{"image", images}});
        CHECK(out.size() == 2 && out[1].shape() == (std::vector<int64_t>{32, 10}));
        crx580::View<float> probs = out[1].view<float>();
        float worst = 0;
        for (std::size_t i = 0; i < probs.size(); i++) worst = std::fmax(worst, std::fabs(probs[i] - expected[i]));
        CHECK(probs.size() == 320 && worst <= 1e-5f);
#if __cplusplus >= 202002L
        std::span<const float> span = probs;
        CHECK(span.size() == 320 && span.data() == probs.data());
#endif

        // Borrowed input, from threads: the same outputs.
        crx580::Tensor borrowed = crx580::Tensor::borrow(samples, {32, 1, 8, 8});
        std::vector<float> want = out[1].to_vector<float>();
        std::vector<int> same(4, 0);
        std::vector<std::thread> threads;
        for (int t = 0; t < 4; t++) {
            threads.emplace_back([&, t] {
                for (int r = 0; r < 5; r++) same[t] += session.run({{"image", borrowed}})[1].to_vector<float>() == want;
            });
        }
        for (auto &t : threads) t.join();
        CHECK(same == (std::vector<int>{5, 5, 5, 5}));

        // Errors are exceptions with the C status and message.
        expect_error([&] { session.run({{"imag", images}}); }, CRX_ERR_INVALID_INPUT, "no input named 'imag'");
        expect_error([&] { crx580::Tensor::copy(samples, {2, 2}); }, CRX_ERR_INVALID_ARGUMENT, "data_bytes");
        expect_error([&] { out[1].view<int64_t>(); }, CRX_ERR_INVALID_ARGUMENT, "not the tensor's dtype");
        expect_error([&] { crx580::Model::load("/nonexistent.onnx"); }, CRX_ERR_IO, "/nonexistent.onnx");
        auto ints = crx580::Tensor::copy(std::vector<int64_t>(64, 0), {1, 1, 8, 8});
        expect_error([&] { session.run({{"image", ints}}); }, CRX_ERR_INVALID_INPUT, "must be float32");

        // A server on the model: running, on a port of its own, refused on a taken one, stopped.
        {
            crx580::SessionOptions one_thread = crx580::SessionOptions().device(CRX_DEVICE_CPU).threads(1);
            crx580::Server server({{"digits", model}}, crx580::ServerOptions().workers(1).session(one_thread));
            CHECK(server.port() != 0);
            expect_error([&] { crx580::Server taken({{"digits", model}}, crx580::ServerOptions().port(server.port())); },
                         CRX_ERR_IO, "127.0.0.1");
            expect_error([&] { crx580::Server twice({{"a", model}, {"a", model}}); }, CRX_ERR_INVALID_ARGUMENT, "given twice");
            server.stop();
            expect_error([&] { server.port(); }, CRX_ERR_INVALID_ARGUMENT, "'server' is NULL");
        }

        // Moving transfers ownership: the moved-from handle is empty and frees nothing.
        crx580::Tensor moved = std::move(images);
        CHECK(!images && moved && moved.shape().size() == 4);
    }
    CHECK(crx_live_handle_count() == 0);
    std::printf("capi c++: %d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
