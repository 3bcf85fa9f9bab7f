//go:build !debug

package crx580

func debugGC() {}
