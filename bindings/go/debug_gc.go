//go:build debug

package crx580

import "runtime"

// debugGC forces a collection after every C call (go test -tags debug), so that an object whose
// finalizer frees its handle too early, while C still uses it, fails fast.
func debugGC() { runtime.GC() }
