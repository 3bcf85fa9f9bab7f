package crx580

/*
#include <stdlib.h>
#include <crx580.h>
*/
import "C"

import (
	"runtime"
	"unsafe"
)

// ServerOptions for Serve; the zero value (or nil) means the library's defaults: 127.0.0.1, a
// free port, one inference worker per core.
type ServerOptions struct {
	Host    string // an IP address; "": 127.0.0.1 (loopback only)
	Port    uint16 // 0: a free port (see Server.Port)
	Workers int    // inference worker threads; 0: one per core
	Session *Options
}

// Server is crx580's HTTP model server (the Open Inference Protocol v2 and simple JSON endpoints;
// README.md, "Serving over HTTP") running on threads of the library.
type Server struct {
	server *C.crx_server
}

// Serve loads the models (name -> ONNX file) and serves them over HTTP until Close.
func Serve(models map[string]string, opts *ServerOptions) (*Server, error) {
	var handles []*C.crx_model
	defer func() {
		for _, m := range handles {
			C.crx_model_free(m)
		}
	}()
	// The arrays handed to C live in C memory: C must not keep, nor be handed, Go pointers to Go
	// pointers.
	slots := len(models) + 1 // never 0, so that &names[0] exists
	names := (*[1 << 20]*C.char)(cArray(slots))[:slots:slots]
	defer C.free(unsafe.Pointer(&names[0]))
	for name, path := range models {
		cpath := C.CString(path)
		var m *C.crx_model
		err := call(func() C.crx_status { return C.crx_model_load(cpath, nil, &m) })
		C.free(unsafe.Pointer(cpath))
		if err != nil {
			return nil, err
		}
		names[len(handles)] = C.CString(name)
		defer C.free(unsafe.Pointer(names[len(handles)]))
		handles = append(handles, m)
	}
	cModels := (*[1 << 20]*C.crx_model)(cArray(slots))[:slots:slots]
	defer C.free(unsafe.Pointer(&cModels[0]))
	copy(cModels, handles)

	var o C.crx_server_options
	if err := call(func() C.crx_status { return C.crx_server_options_default(&o, C.sizeof_crx_server_options) }); err != nil {
		return nil, err
	}
	if opts != nil {
		if opts.Host != "" {
			o.host = C.CString(opts.Host)
			defer C.free(unsafe.Pointer(o.host))
		}
		o.port = C.uint16_t(opts.Port)
		o.workers = C.uint32_t(opts.Workers)
		if opts.Session != nil {
			// In C memory: the options struct handed to C must not point into Go memory.
			session := (*C.crx_session_options)(C.calloc(1, C.sizeof_crx_session_options))
			defer C.free(unsafe.Pointer(session))
			freeOptions, err := sessionOptions(session, opts.Session)
			defer freeOptions()
			if err != nil {
				return nil, err
			}
			o.session = session
		}
	}
	s := &Server{}
	err := call(func() C.crx_status {
		return C.crx_server_start((**C.crx_model)(unsafe.Pointer(&cModels[0])), &names[0], C.size_t(len(handles)), &o, &s.server)
	})
	if err != nil {
		return nil, err
	}
	runtime.SetFinalizer(s, (*Server).Close)
	return s, nil
}

// Port is the TCP port the server listens on.
func (s *Server) Port() (uint16, error) {
	var port C.uint16_t
	err := call(func() C.crx_status { return C.crx_server_port(s.server, &port) })
	runtime.KeepAlive(s)
	return uint16(port), err
}

// Close stops the server (requests in progress are answered first); calling it again does
// nothing.
func (s *Server) Close() {
	if s.server != nil {
		C.crx_server_stop(s.server)
		s.server = nil
	}
	runtime.SetFinalizer(s, nil)
}
