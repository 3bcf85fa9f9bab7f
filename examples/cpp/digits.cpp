// Classifies the demo's digit images with crx580's C++ wrapper.
//   usage: digits MODEL.onnx   (examples/digits/digits.onnx); the images are made up here: a
//   "1" drawn as a vertical stroke, and a blank image.
// Build: make (see Makefile), or with crx580 installed:
//   c++ -std=c++17 digits.cpp $(pkg-config --cflags --libs crx580) -o digits
#include <crx580.hpp>

#include <cstdio>
#include <vector>

int main(int argc, char **argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: %s MODEL.onnx\n", argv[0]);
        return 2;
    }
    try {
        crx580::Model model = crx580::Model::load(argv[1]);
        crx580::Session session(model);
        std::vector<float> pixels(2 * 64, 0.0f);
        for (int y = 1; y < 7; y++) pixels[y * 8 + 4] = 1.0f; // image 0: a vertical stroke
        crx580::Tensor images = crx580::Tensor::copy(pixels, {2, 1, 8, 8});
        std::vector<crx580::Tensor> outputs = session.run({{"image", images}});
        crx580::View<float> probs = outputs[1].view<float>();
        for (int i = 0; i < 2; i++) {
            int best = 0;
            for (int k = 1; k < 10; k++) best = probs[i * 10 + k] > probs[i * 10 + best] ? k : best;
            std::printf("image %d: predicted %d (%.3f)\n", i, best, probs[i * 10 + best]);
        }
        std::printf("crx580 %s\n", crx580::version().c_str());
    } catch (const crx580::Error &e) {
        std::fprintf(stderr, "digits: %s (%s)\n", e.what(), crx_status_name(e.status()));
        return 1;
    }
    return 0;
}
