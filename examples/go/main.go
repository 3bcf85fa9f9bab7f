// Classifies a hand-drawn 8x8 digit with crx580 from Go.
//
//	PKG_CONFIG_PATH=<prefix>/lib/pkgconfig go run . ../digits/digits.onnx
package main

import (
	"fmt"
	"os"

	crx580 "github.com/crx580/crx580/bindings/go"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: digits MODEL.onnx")
		os.Exit(2)
	}
	if err := run(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "digits:", err)
		os.Exit(1)
	}
}

func run(path string) error {
	session, err := crx580.Load(path, nil)
	if err != nil {
		return err
	}
	defer session.Close()
	pixels := make([]float32, 64)
	for y := 1; y < 7; y++ {
		pixels[y*8+4] = 1 // a vertical stroke
	}
	image, err := crx580.NewTensor([]int64{1, 1, 8, 8}, pixels)
	if err != nil {
		return err
	}
	defer image.Close()
	outputs, err := session.Run(map[string]*crx580.Tensor{"image": image})
	if err != nil {
		return err
	}
	probs, err := crx580.Data[float32](outputs[1])
	if err != nil {
		return err
	}
	best := 0
	for k, p := range probs {
		if p > probs[best] {
			best = k
		}
	}
	fmt.Printf("predicted %d (%.3f) with crx580 %s\n", best, probs[best], crx580.Version())
	return nil
}
