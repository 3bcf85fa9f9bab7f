package crx580

/*
#include <crx580.h>
*/
import "C"

import (
	"fmt"
	"runtime"
	"unsafe"
)

// DType is an element type (ONNX's TensorProto.DataType code).
type DType int32

const (
	Float32 DType = C.CRX_DTYPE_FLOAT32
	Uint8   DType = C.CRX_DTYPE_UINT8
	Int8    DType = C.CRX_DTYPE_INT8
	Uint16  DType = C.CRX_DTYPE_UINT16
	Int16   DType = C.CRX_DTYPE_INT16
	Int32   DType = C.CRX_DTYPE_INT32
	Int64   DType = C.CRX_DTYPE_INT64
	Bool    DType = C.CRX_DTYPE_BOOL
	Float64 DType = C.CRX_DTYPE_FLOAT64
	Uint32  DType = C.CRX_DTYPE_UINT32
	Uint64  DType = C.CRX_DTYPE_UINT64
)

// Element is a Go type that tensors can hold.
type Element interface {
	float32 | float64 | int8 | uint8 | int16 | uint16 | int32 | uint32 | int64 | uint64 | bool
}

// DTypeOf gives the DType of a Go element type.
func DTypeOf[T Element]() DType {
	var zero T
	switch any(zero).(type) {
	case float32:
		return Float32
	case float64:
		return Float64
	case int8:
		return Int8
	case uint8:
		return Uint8
	case int16:
		return Int16
	case uint16:
		return Uint16
	case int32:
		return Int32
	case uint32:
		return Uint32
	case int64:
		return Int64
	case uint64:
		return Uint64
	case bool:
		return Bool
	}
	panic(fmt.Sprintf("crx580: no DType for %T", zero)) // unreachable: Element lists the cases above
}

// Tensor is an immutable tensor held in library memory.
type Tensor struct {
	tensor *C.crx_tensor
}

func wrapTensor(t *C.crx_tensor) *Tensor {
	w := &Tensor{tensor: t}
	runtime.SetFinalizer(w, (*Tensor).Close)
	return w
}

// NewTensor makes a tensor of the given shape holding a copy of data (row-major).
func NewTensor[T Element](shape []int64, data []T) (*Tensor, error) {
	var shapePtr *C.int64_t
	if len(shape) > 0 {
		shapePtr = (*C.int64_t)(unsafe.Pointer(&shape[0]))
	}
	var dataPtr unsafe.Pointer
	if len(data) > 0 {
		dataPtr = unsafe.Pointer(&data[0])
	}
	var zero T
	bytes := C.size_t(len(data)) * C.size_t(unsafe.Sizeof(zero))
	var t *C.crx_tensor
	// Go pointers passed for the call only: the library copies the elements and keeps nothing.
	err := call(func() C.crx_status {
		return C.crx_tensor_create(C.crx_dtype(DTypeOf[T]()), shapePtr, C.size_t(len(shape)), dataPtr, bytes, &t)
	})
	runtime.KeepAlive(shape)
	runtime.KeepAlive(data)
	if err != nil {
		return nil, err
	}
	return wrapTensor(t), nil
}

// DType is the tensor's element type.
func (t *Tensor) DType() (DType, error) {
	var d C.crx_dtype
	err := call(func() C.crx_status { return C.crx_tensor_dtype(t.tensor, &d) })
	runtime.KeepAlive(t)
	return DType(d), err
}

// Shape is the tensor's shape.
func (t *Tensor) Shape() ([]int64, error) {
	var dims *C.int64_t
	var rank C.size_t
	err := call(func() C.crx_status { return C.crx_tensor_shape(t.tensor, &dims, &rank) })
	var shape []int64
	if err == nil {
		shape = make([]int64, rank)
		copy(shape, unsafe.Slice((*int64)(unsafe.Pointer(dims)), rank))
	}
	runtime.KeepAlive(t)
	return shape, err
}

// Data copies the tensor's elements into a new slice; T must match the tensor's dtype.
func Data[T Element](t *Tensor) ([]T, error) {
	dtype, err := t.DType()
	if err != nil {
		return nil, err
	}
	if want := DTypeOf[T](); dtype != want {
		return nil, &Error{Status: StatusInvalidArgument, Message: fmt.Sprintf("Data: the tensor holds dtype %d, not %d", dtype, want)}
	}
	var data unsafe.Pointer
	var bytes C.size_t
	err = call(func() C.crx_status { return C.crx_tensor_data(t.tensor, &data, &bytes) })
	var out []T
	if err == nil {
		var zero T
		out = make([]T, uintptr(bytes)/unsafe.Sizeof(zero))
		if len(out) > 0 {
			copy(out, unsafe.Slice((*T)(data), len(out)))
		}
	}
	runtime.KeepAlive(t)
	return out, err
}

// Close frees the tensor now; calling it again does nothing. Call it once no goroutine uses the
// tensor any more.
func (t *Tensor) Close() {
	if t.tensor != nil {
		C.crx_tensor_free(t.tensor)
		t.tensor = nil
	}
	runtime.SetFinalizer(t, nil)
}
