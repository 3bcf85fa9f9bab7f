/*
 * crx580 C++17 wrapper: header-only, over the C API in crx580.h (link with -lcrx580).
 *
 *   crx580::Model model = crx580::Model::load("model.onnx");
 *   crx580::Session session(model);
 *   auto x = crx580::Tensor::copy<float>(pixels, {1, 1, 8, 8});
 *   std::vector<crx580::Tensor> out = session.run({{"image", x}});
 *   crx580::View<float> probs = out[1].view<float>();   // std::span<const float> in C++20
 *
 * Handles are move-only RAII objects (Model, Session, Tensor, Server): each frees its C handle once. Every
 * failing call throws crx580::Error, which carries the crx_status and the library's message.
 * Thread-safety is the C API's: models, sessions and tensors may be shared between threads.
 */
#ifndef CRX580_HPP
#define CRX580_HPP

#include "crx580.h"

#include <cstddef>
#include <cstdint>
#include <functional>
#include <iterator>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>
#if __cplusplus >= 202002L
#include <span>
#endif

namespace crx580 {

/* A failed call: what() is the library's message, status() its CRX_ERR_* code. */
class Error : public std::runtime_error {
public:
    Error(crx_status status, const char *message)
        : std::runtime_error(message ? message : crx_status_name(status)), status_(status) {}
    crx_status status() const noexcept { return status_; }

private:
    crx_status status_;
};

namespace detail {
/* The one place a status becomes an exception. */
inline void check(crx_status status) {
    if (status != CRX_OK) throw Error(status, crx_last_error_message());
}

template <typename T, void (*Free)(T *)>
struct Deleter {
    void operator()(T *p) const noexcept { Free(p); }
};
template <typename T, void (*Free)(T *)>
using Owned = std::unique_ptr<T, Deleter<T, Free>>;
} // namespace detail

/* The crx_dtype of a C++ element type. */
template <typename T>
struct dtype_of;
#define CRX580_DTYPE_OF(T, CODE)                                                                   \
    template <>                                                                                    \
    struct dtype_of<T> {                                                                           \
        static constexpr crx_dtype value = CODE;                                                   \
    };
CRX580_DTYPE_OF(float, CRX_DTYPE_FLOAT32)
CRX580_DTYPE_OF(double, CRX_DTYPE_FLOAT64)
CRX580_DTYPE_OF(int8_t, CRX_DTYPE_INT8)
CRX580_DTYPE_OF(uint8_t, CRX_DTYPE_UINT8)
CRX580_DTYPE_OF(int16_t, CRX_DTYPE_INT16)
CRX580_DTYPE_OF(uint16_t, CRX_DTYPE_UINT16)
CRX580_DTYPE_OF(int32_t, CRX_DTYPE_INT32)
CRX580_DTYPE_OF(uint32_t, CRX_DTYPE_UINT32)
CRX580_DTYPE_OF(int64_t, CRX_DTYPE_INT64)
CRX580_DTYPE_OF(uint64_t, CRX_DTYPE_UINT64)
CRX580_DTYPE_OF(bool, CRX_DTYPE_BOOL)
#undef CRX580_DTYPE_OF
static_assert(sizeof(bool) == 1, "crx580 passes bool tensors as one byte per element");

/* A read-only view of a tensor's elements; valid while the tensor lives. */
template <typename T>
class View {
public:
    View(const T *data, std::size_t size) : data_(data), size_(size) {}
    const T *data() const noexcept { return data_; }
    std::size_t size() const noexcept { return size_; }
    const T *begin() const noexcept { return data_; }
    const T *end() const noexcept { return data_ + size_; }
    const T &operator[](std::size_t i) const noexcept { return data_[i]; }
#if __cplusplus >= 202002L
    operator std::span<const T>() const noexcept { return {data_, size_}; }
#endif

private:
    const T *data_;
    std::size_t size_;
};

class Tensor {
public:
    /* A tensor holding a copy of `count` elements at `data`. */
    template <typename T>
    static Tensor copy(const T *data, std::size_t count, const std::vector<int64_t> &shape) {
        crx_tensor *t = nullptr;
        detail::check(crx_tensor_create(dtype_of<T>::value, shape.data(), shape.size(), data, count * sizeof(T), &t));
        return Tensor(t);
    }
    /* Any contiguous container (std::vector, std::array, std::span): copied. */
    template <typename Container>
    static Tensor copy(const Container &elements, const std::vector<int64_t> &shape) {
        return copy(std::data(elements), std::size(elements), shape);
    }
    /* A tensor over the caller's elements, which must outlive it and every run using it (see
     * crx_tensor_create_borrowed). */
    template <typename T>
    static Tensor borrow(const T *data, std::size_t count, const std::vector<int64_t> &shape) {
        crx_tensor *t = nullptr;
        detail::check(
            crx_tensor_create_borrowed(dtype_of<T>::value, shape.data(), shape.size(), data, count * sizeof(T), &t));
        return Tensor(t);
    }
    template <typename Container>
    static Tensor borrow(const Container &elements, const std::vector<int64_t> &shape) {
        return borrow(std::data(elements), std::size(elements), shape);
    }

    crx_dtype dtype() const {
        crx_dtype d = CRX_DTYPE_UNDEFINED;
        detail::check(crx_tensor_dtype(handle_.get(), &d));
        return d;
    }
    std::vector<int64_t> shape() const {
        const int64_t *dims = nullptr;
        std::size_t rank = 0;
        detail::check(crx_tensor_shape(handle_.get(), &dims, &rank));
        return std::vector<int64_t>(dims, dims + rank);
    }
    /* The elements in place; throws Error(CRX_ERR_INVALID_ARGUMENT) when T is not the dtype. */
    template <typename T>
    View<T> view() const {
        if (dtype() != dtype_of<T>::value) {
            throw Error(CRX_ERR_INVALID_ARGUMENT, "crx580::Tensor::view: the element type is not the tensor's dtype");
        }
        const void *data = nullptr;
        std::size_t bytes = 0;
        detail::check(crx_tensor_data(handle_.get(), &data, &bytes));
        return View<T>(static_cast<const T *>(data), bytes / sizeof(T));
    }
    template <typename T>
    std::vector<T> to_vector() const {
        View<T> v = view<T>();
        return std::vector<T>(v.begin(), v.end());
    }

    const crx_tensor *get() const noexcept { return handle_.get(); }
    explicit operator bool() const noexcept { return handle_ != nullptr; }
    /* Takes ownership of a C handle. */
    explicit Tensor(crx_tensor *handle) : handle_(handle) {}

private:
    detail::Owned<crx_tensor, crx_tensor_free> handle_;
};

/* One model input or output, as crx_model_input_info describes it. */
struct ValueInfo {
    std::string name;
    crx_value_kind kind;
    crx_dtype dtype;
    bool rank_known;
    std::vector<int64_t> dims;          /* -1 where the size is not fixed */
    std::vector<std::string> dim_names; /* the symbol of a symbolic dim, else "" */
};

class Model {
public:
    /* The file must not change while it loads: see crx_model_load. */
    static Model load(const std::string &path, const crx_load_options *options = nullptr) {
        crx_model *m = nullptr;
        detail::check(crx_model_load(path.c_str(), options, &m));
        return Model(m);
    }
    static Model from_memory(const void *data, std::size_t size, const crx_load_options *options = nullptr) {
        crx_model *m = nullptr;
        detail::check(crx_model_load_from_memory(data, size, options, &m));
        return Model(m);
    }
    std::vector<ValueInfo> inputs() const { return infos(crx_model_input_count, crx_model_input_info); }
    std::vector<ValueInfo> outputs() const { return infos(crx_model_output_count, crx_model_output_info); }
    const crx_model *get() const noexcept { return handle_.get(); }

private:
    explicit Model(crx_model *m) : handle_(m) {}
    using Count = crx_status (*)(const crx_model *, std::size_t *);
    using Info = crx_status (*)(const crx_model *, std::size_t, crx_value_info *, std::size_t);
    std::vector<ValueInfo> infos(Count count_of, Info info_of) const {
        std::size_t n = 0;
        detail::check(count_of(handle_.get(), &n));
        std::vector<ValueInfo> result;
        for (std::size_t i = 0; i < n; i++) {
            crx_value_info c;
            detail::check(info_of(handle_.get(), i, &c, sizeof c));
            ValueInfo v{c.name, c.kind, c.dtype, c.rank >= 0, {}, {}};
            for (int64_t k = 0; k < c.rank; k++) {
                v.dims.push_back(c.dims[k]);
                v.dim_names.push_back(c.dim_names[k] ? c.dim_names[k] : "");
            }
            result.push_back(std::move(v));
        }
        return result;
    }
    detail::Owned<crx_model, crx_model_free> handle_;
};

/* crx_session_options with its defaults; edit the fields of `raw` or use the setters. */
struct SessionOptions {
    crx_session_options raw;
    SessionOptions() { detail::check(crx_session_options_default(&raw, sizeof raw)); }
    SessionOptions &device(crx_device d) { raw.device = d; return *this; }
    SessionOptions &threads(uint32_t n) { raw.threads = n; return *this; }
    SessionOptions &max_tensor_bytes(uint64_t n) { raw.max_tensor_bytes = n; return *this; }
    SessionOptions &max_run_time_ms(uint64_t ms) { raw.max_run_time_ms = ms; return *this; }
    /* float16 tensors on an OpenCL device (computed in float32); the CPU ignores it. */
    SessionOptions &fp16_storage(bool on) { raw.fp16_storage = on ? 1 : 0; return *this; }
    /* Where the OpenCL backend caches compiled programs; kept here, passed at session creation. */
    SessionOptions &cache_dir(std::string dir) { cache_dir_ = std::move(dir); return *this; }
    /* `raw` with the cache directory pointing into this object (valid while it lives unchanged). */
    crx_session_options resolved() const {
        crx_session_options o = raw;
        o.cache_dir = cache_dir_.empty() ? raw.cache_dir : cache_dir_.c_str();
        return o;
    }

private:
    std::string cache_dir_;
};

/* A named input for Session::run: session.run({{"image", tensor}}). */
struct Input {
    std::string name;
    std::reference_wrapper<const Tensor> tensor;
};

class Session {
public:
    explicit Session(const Model &model, const SessionOptions &options = SessionOptions()) {
        crx_session *s = nullptr;
        detail::check(crx_model_output_count(model.get(), &output_count_));
        const crx_session_options raw = options.resolved();
        detail::check(crx_session_create(model.get(), &raw, &s));
        handle_.reset(s);
    }
    /* Runs with named inputs; the outputs in the model's order. Thread-safe. */
    std::vector<Tensor> run(const std::vector<Input> &inputs) const {
        std::vector<const char *> names;
        std::vector<const crx_tensor *> tensors;
        for (const Input &in : inputs) {
            names.push_back(in.name.c_str());
            tensors.push_back(in.tensor.get().get());
        }
        std::vector<crx_tensor *> raw(output_count_, nullptr);
        std::vector<Tensor> outputs;
        outputs.reserve(raw.size()); // so that wrapping the handles below cannot throw
        detail::check(crx_session_run(handle_.get(), names.data(), tensors.data(), inputs.size(), raw.data(), raw.size()));
        for (crx_tensor *t : raw) outputs.emplace_back(t);
        return outputs;
    }
    const crx_session *get() const noexcept { return handle_.get(); }

private:
    std::size_t output_count_ = 0;
    detail::Owned<crx_session, crx_session_free> handle_;
};

/* crx_server_options with its defaults; edit the fields of `raw` or use the setters. */
struct ServerOptions {
    crx_server_options raw;
    ServerOptions() { detail::check(crx_server_options_default(&raw, sizeof raw)); }
    ServerOptions &port(uint16_t p) { raw.port = p; return *this; }
    ServerOptions &workers(uint32_t n) { raw.workers = n; return *this; }
    /* `options` must outlive the constructor call only (it is read there). */
    ServerOptions &session(const SessionOptions &options) { raw.session = &options.raw; return *this; }
};

/* A named model for Server: crx580::Server server({{"digits", model}}). */
struct NamedModel {
    std::string name;
    std::reference_wrapper<const Model> model;
};

/* An HTTP model server on loaded models (crx_server_start); stopped when destroyed. The host and
 * other strings in `options` are read during the constructor. */
class Server {
public:
    explicit Server(const std::vector<NamedModel> &models, const ServerOptions &options = ServerOptions()) {
        std::vector<const char *> names;
        std::vector<const crx_model *> handles;
        for (const NamedModel &m : models) {
            names.push_back(m.name.c_str());
            handles.push_back(m.model.get().get());
        }
        crx_server *s = nullptr;
        detail::check(crx_server_start(handles.data(), names.data(), models.size(), &options.raw, &s));
        handle_.reset(s);
    }
    uint16_t port() const {
        uint16_t p = 0;
        detail::check(crx_server_port(handle_.get(), &p));
        return p;
    }
    /* Stops now (the destructor would otherwise). */
    void stop() noexcept { handle_.reset(); }

private:
    detail::Owned<crx_server, crx_server_stop> handle_;
};

/* The loaded library's version, "MAJOR.MINOR.PATCH". */
inline std::string version() { return crx_version(); }

} // namespace crx580

#endif // CRX580_HPP
