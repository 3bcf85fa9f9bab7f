"""Writes the C ABI tests' inputs and reference outputs: the demo's 32 sample images and
onnxruntime's probabilities for them (output 'probabilities' of examples/digits/digits.onnx), as raw
float32 files, and the accuracy those probabilities give (accuracy.txt, "CORRECT/TOTAL").

usage: make_reference.py OUT_DIR
"""

import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

root = Path(__file__).resolve().parents[2]
out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
samples = np.load(root / "examples/digits/samples.npy").astype(np.float32)
session = ort.InferenceSession(str(root / "examples/digits/digits.onnx"), providers=["CPUExecutionProvider"])
(probabilities,) = session.run(["probabilities"], {"image": samples})
samples.tofile(out / "samples.f32")
probabilities.astype(np.float32).tofile(out / "probabilities.f32")
# The examples print "accuracy: CORRECT/TOTAL ...": what onnxruntime's outputs give.
labels = np.load(root / "examples/digits/labels.npy")
correct = int((probabilities.argmax(axis=1) == labels).sum())
(out / "accuracy.txt").write_text(f"{correct}/{len(labels)}\n")
