// Package crx580 runs ONNX models with crx580, through its C API (libcrx580, found with
// pkg-config: set PKG_CONFIG_PATH to the installation's lib/pkgconfig).
//
//	s, err := crx580.Load("model.onnx", nil)
//	if err != nil { ... }
//	defer s.Close()
//	x, err := crx580.NewTensor([]int64{1, 1, 8, 8}, pixels)
//	outputs, err := s.Run(map[string]*crx580.Tensor{"image": x})
//	probs, err := crx580.Data[float32](outputs[1])
//
// Sessions and tensors may be used from many goroutines at once. Every object has Close, which
// frees its C memory now; a finalizer frees it after the object becomes unreachable otherwise.
// Input data is copied into library memory when a Tensor is made, so C never keeps a Go pointer.
package crx580

/*
#cgo pkg-config: crx580
#include <stdlib.h>
#include <crx580.h>
*/
import "C"

import (
	"fmt"
	"runtime"
	"time"
	"unsafe"
)

// Status is a crx_status code from the C API.
type Status int32

const (
	StatusInvalidArgument Status = C.CRX_ERR_INVALID_ARGUMENT
	StatusInvalidHandle   Status = C.CRX_ERR_INVALID_HANDLE
	StatusInvalidModel    Status = C.CRX_ERR_INVALID_MODEL
	StatusUnsupported     Status = C.CRX_ERR_UNSUPPORTED
	StatusInvalidInput    Status = C.CRX_ERR_INVALID_INPUT
	StatusShape           Status = C.CRX_ERR_SHAPE
	StatusRuntime         Status = C.CRX_ERR_RUNTIME
	StatusIO              Status = C.CRX_ERR_IO
	StatusResourceLimit   Status = C.CRX_ERR_RESOURCE_LIMIT
	StatusBufferTooSmall  Status = C.CRX_ERR_BUFFER_TOO_SMALL
	StatusInternal        Status = C.CRX_ERR_INTERNAL
)

func (s Status) String() string { return C.GoString(C.crx_status_name(C.crx_status(s))) }

// Error is a failed call: its status and the library's message.
type Error struct {
	Status  Status
	Message string
}

func (e *Error) Error() string { return "crx580: " + e.Message }

// call runs one C call and turns its status into an error: the one place that happens. The
// goroutine stays on its OS thread for the call and the message read, because the library's last
// error is per thread.
func call(f func() C.crx_status) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	status := f()
	debugGC()
	if status == C.CRX_OK {
		return nil
	}
	return &Error{Status: Status(status), Message: C.GoString(C.crx_last_error_message())}
}

// Version is the loaded library's version, "MAJOR.MINOR.PATCH".
func Version() string { return C.GoString(C.crx_version()) }

// Devices lists the devices the library can run on.
func Devices() ([]string, error) {
	var n C.size_t
	if err := call(func() C.crx_status { return C.crx_device_count(&n) }); err != nil {
		return nil, err
	}
	names := make([]string, 0, n)
	for i := C.size_t(0); i < n; i++ {
		var name *C.char
		if err := call(func() C.crx_status { return C.crx_device_name(i, &name) }); err != nil {
			return nil, err
		}
		names = append(names, C.GoString(name))
	}
	return names, nil
}

// Device picks where a session runs.
type Device int32

const (
	DeviceAuto   Device = C.CRX_DEVICE_AUTO
	DeviceCPU    Device = C.CRX_DEVICE_CPU
	DeviceOpenCL Device = C.CRX_DEVICE_OPENCL
)

// Options for Load; the zero value (or nil) means the library's defaults.
type Options struct {
	Device         Device
	Threads        int           // CPU worker threads; 0: one per core
	MaxTensorBytes uint64        // largest tensor a load or run may make; 0: the default (4 GiB)
	MaxRunTime     time.Duration // longest run; 0: no limit
	// FP16Storage stores float32 tensors as float16 on an OpenCL device (computed in float32);
	// the CPU ignores it.
	FP16Storage bool
	// CacheDir is where the OpenCL backend caches compiled programs; "": CRX580_CACHE_DIR, else
	// the user's cache directory.
	CacheDir string
}

// ValueInfo describes a model input or output.
type ValueInfo struct {
	Name  string
	DType DType
	// Dims holds -1 where the size is not fixed; nil when the rank is unknown.
	Dims []int64
	// DimNames holds the symbol of each symbolic dim ("batch"), "" for the others.
	DimNames []string
}

// Session is a loaded model ready to run.
type Session struct {
	session *C.crx_session
	inputs  []ValueInfo
	outputs []ValueInfo
}

// Load reads an ONNX model file and prepares it to run. The file is mapped while it is decoded:
// it must not be truncated or rewritten during the call (LoadBytes takes a file that may change).
func Load(path string, opts *Options) (*Session, error) {
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	var model *C.crx_model
	if err := call(func() C.crx_status { return C.crx_model_load(cpath, nil, &model) }); err != nil {
		return nil, err
	}
	return newSession(model, opts)
}

// LoadBytes prepares a model from the bytes of an ONNX file (copied; it may not use external
// data).
func LoadBytes(model []byte, opts *Options) (*Session, error) {
	if len(model) == 0 {
		return nil, &Error{Status: StatusInvalidModel, Message: "LoadBytes: no model bytes"}
	}
	var m *C.crx_model
	err := call(func() C.crx_status {
		return C.crx_model_load_from_memory(unsafe.Pointer(&model[0]), C.size_t(len(model)), nil, &m)
	})
	if err != nil {
		return nil, err
	}
	return newSession(m, opts)
}

// sessionOptions fills o with the library's defaults, then opts' fields (nil: none). The C
// strings o points to live until the caller calls the returned free, after the C call that
// reads o.
func sessionOptions(o *C.crx_session_options, opts *Options) (free func(), err error) {
	free = func() {}
	if err := call(func() C.crx_status { return C.crx_session_options_default(o, C.sizeof_crx_session_options) }); err != nil {
		return free, err
	}
	if opts != nil {
		o.device = C.crx_device(opts.Device)
		o.threads = C.uint32_t(opts.Threads)
		o.max_tensor_bytes = C.uint64_t(opts.MaxTensorBytes)
		o.max_run_time_ms = C.uint64_t(opts.MaxRunTime.Milliseconds())
		if opts.FP16Storage {
			o.fp16_storage = 1
		}
		if opts.CacheDir != "" {
			dir := C.CString(opts.CacheDir) // copied by crx_session_create
			free = func() { C.free(unsafe.Pointer(dir)) }
			o.cache_dir = dir
		}
	}
	return free, nil
}

// newSession makes a session from a model handle, which it frees.
func newSession(model *C.crx_model, opts *Options) (*Session, error) {
	defer C.crx_model_free(model)
	var o C.crx_session_options
	freeOptions, err := sessionOptions(&o, opts)
	defer freeOptions()
	if err != nil {
		return nil, err
	}
	s := &Session{}
	if s.inputs, err = valueInfos(model, false); err != nil {
		return nil, err
	}
	if s.outputs, err = valueInfos(model, true); err != nil {
		return nil, err
	}
	if err := call(func() C.crx_status { return C.crx_session_create(model, &o, &s.session) }); err != nil {
		return nil, err
	}
	runtime.SetFinalizer(s, (*Session).Close)
	return s, nil
}

// valueInfos describes the model's inputs, or its outputs.
func valueInfos(model *C.crx_model, outputs bool) ([]ValueInfo, error) {
	var n C.size_t
	err := call(func() C.crx_status {
		if outputs {
			return C.crx_model_output_count(model, &n)
		}
		return C.crx_model_input_count(model, &n)
	})
	if err != nil {
		return nil, err
	}
	infos := make([]ValueInfo, n)
	for i := range infos {
		var c C.crx_value_info
		err := call(func() C.crx_status {
			if outputs {
				return C.crx_model_output_info(model, C.size_t(i), &c, C.sizeof_crx_value_info)
			}
			return C.crx_model_input_info(model, C.size_t(i), &c, C.sizeof_crx_value_info)
		})
		if err != nil {
			return nil, err
		}
		v := ValueInfo{Name: C.GoString(c.name), DType: DType(c.dtype)}
		if c.rank >= 0 {
			dims := unsafe.Slice(c.dims, c.rank)
			names := unsafe.Slice(c.dim_names, c.rank)
			v.Dims = make([]int64, c.rank)
			v.DimNames = make([]string, c.rank)
			for k := range v.Dims {
				v.Dims[k] = int64(dims[k])
				if names[k] != nil {
					v.DimNames[k] = C.GoString(names[k])
				}
			}
		}
		infos[i] = v
	}
	return infos, nil
}

// Inputs describes the model's inputs, in its order.
func (s *Session) Inputs() []ValueInfo { return s.inputs }

// Outputs describes the model's outputs, in the order Run returns them.
func (s *Session) Outputs() []ValueInfo { return s.outputs }

// Run runs the model with one tensor per input name; it returns the outputs in the model's
// order. Safe to call from many goroutines at once.
func (s *Session) Run(inputs map[string]*Tensor) ([]*Tensor, error) {
	n := len(inputs)
	// The name and handle arrays live in C memory: C is never handed Go memory holding pointers.
	names := unsafe.Slice((**C.char)(cArray(n+1)), n+1)
	handles := unsafe.Slice((**C.crx_tensor)(cArray(n+1)), n+1)
	outputs := unsafe.Slice((**C.crx_tensor)(cArray(len(s.outputs)+1)), len(s.outputs)+1)
	defer func() {
		for _, name := range names {
			C.free(unsafe.Pointer(name))
		}
		C.free(unsafe.Pointer(&names[0]))
		C.free(unsafe.Pointer(&handles[0]))
		C.free(unsafe.Pointer(&outputs[0]))
	}()
	k := 0
	for name, t := range inputs {
		if t == nil {
			return nil, &Error{Status: StatusInvalidArgument, Message: fmt.Sprintf("Run: input '%s' is nil", name)}
		}
		names[k] = C.CString(name)
		handles[k] = t.tensor
		k++
	}
	err := call(func() C.crx_status {
		return C.crx_session_run(s.session, &names[0], &handles[0], C.size_t(n), &outputs[0], C.size_t(len(s.outputs)))
	})
	runtime.KeepAlive(s)
	runtime.KeepAlive(inputs)
	for _, t := range inputs {
		runtime.KeepAlive(t)
	}
	if err != nil {
		return nil, err
	}
	result := make([]*Tensor, len(s.outputs))
	for i := range result {
		result[i] = wrapTensor(outputs[i])
	}
	return result, nil
}

// cArray allocates n zeroed pointer-sized slots in C memory.
func cArray(n int) unsafe.Pointer {
	p := C.calloc(C.size_t(n), C.size_t(unsafe.Sizeof(uintptr(0))))
	if p == nil {
		panic("crx580: out of memory")
	}
	return p
}

// Close frees the session now; calling it again does nothing. Call it once no goroutine uses the
// session any more (the library would let runs in flight finish, but Go's memory model does not
// allow the handle to be cleared while other goroutines read it).
func (s *Session) Close() {
	if s.session != nil {
		C.crx_session_free(s.session)
		s.session = nil
	}
	runtime.SetFinalizer(s, nil)
}

// liveHandles is how many C handles are live in the process (for the tests' leak checks).
func liveHandles() int { return int(C.crx_live_handle_count()) }
