#!/usr/bin/env python3
"""Tests of benches/compare.py that need no timing: the output check rule on arrays, and that a
crx580 whose outputs are wrong makes the whole comparison fail (a wrapper around the real binary
that nudges one output by 1%).

    python benches/test_compare.py [--binary target/release/crx580] [--models-dir DIR]

The end-to-end test uses the `vad` bench model (generated into --models-dir when missing).
"""

from __future__ import annotations

import argparse
import os
import stat
import subprocess
import sys
import tempfile
import unittest

import numpy as np

BENCHES = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCHES)
sys.path.insert(0, BENCHES)

from output_check import compare_output  # noqa: E402

FLOAT = {"kind": "float"}
OPTIONS = {"binary": os.path.join(ROOT, "target", "release", "crx580"),
           "models_dir": os.path.join(ROOT, "target", "bench-models")}


class OutputCheck(unittest.TestCase):
    def test_float_within_and_beyond_tolerance(self):
        ref = np.linspace(-2, 2, 101, dtype=np.float32)
        self.assertIsNone(compare_output(ref * (1 + 5e-4), ref, FLOAT, "y")[0])
        err, _ = compare_output(ref * 1.01, ref, FLOAT, "y")
        self.assertIn("out of tolerance", err)

    def test_component_axis_keeps_scores_strict(self):
        # Row 0: pixel coordinates near 600; row 1: scores near 0.5. An error of 0.05 in a score is
        # within the whole output's scale (600 x 1e-4) but not within its own row's.
        ref = np.stack([np.full(8, 600.0), np.full(8, 0.5)]).astype(np.float32)[None]
        got = ref.copy()
        got[0, 1, 3] += 0.05
        self.assertIsNone(compare_output(got, ref, FLOAT, "boxes")[0])
        self.assertIsNotNone(compare_output(got, ref, {"kind": "float", "component_axes": {"boxes": 1}}, "boxes")[0])

    def test_integers_exact_and_shapes_checked(self):
        ref = np.arange(10, dtype=np.int64)
        self.assertIsNone(compare_output(ref.copy(), ref, FLOAT, "ids")[0])
        got = ref.copy()
        got[4] = 5
        self.assertIn("1 of 10", compare_output(got, ref, FLOAT, "ids")[0])
        self.assertIn("shape", compare_output(ref[:9], ref, FLOAT, "ids")[0])
        self.assertIn("dtype", compare_output(ref.astype(np.float32), ref, FLOAT, "ids")[0])

    def test_nan_must_meet_nan(self):
        ref = np.array([1.0, np.nan, np.inf], np.float32)
        self.assertIsNone(compare_output(ref.copy(), ref, FLOAT, "y")[0])
        self.assertIn("NaN", compare_output(np.array([1.0, 2.0, np.inf], np.float32), ref, FLOAT, "y")[0])
        self.assertIn("infinities", compare_output(np.array([1.0, np.nan, -np.inf], np.float32), ref, FLOAT, "y")[0])

    def test_quantized_in_steps(self):
        ref = np.linspace(-1, 3, 50, dtype=np.float32)  # a step is 4/255
        check = {"kind": "quantized", "max_steps": 3, "mean_steps": 1}
        self.assertIsNone(compare_output(ref + 0.9 * 4 / 255, ref, check, "y")[0])
        one_far = ref.copy()
        one_far[7] += 2.5 * 4 / 255
        self.assertIsNone(compare_output(one_far, ref, check, "y")[0])
        one_far[7] += 1.0 * 4 / 255
        self.assertIn("quantisation steps", compare_output(one_far, ref, check, "y")[0])
        self.assertIn("on average", compare_output(ref + 1.2 * 4 / 255, ref, check, "y")[0])


WRONG_ENGINE = """#!{python}
# crx580, except that `run --output-dir DIR` scales DIR/output_0.npy by 1.01.
import os, subprocess, sys
import numpy as np
p = subprocess.run([{binary!r}] + sys.argv[1:])
if p.returncode == 0 and sys.argv[1] == "run" and "--output-dir" in sys.argv:
    path = os.path.join(sys.argv[sys.argv.index("--output-dir") + 1], "output_0.npy")
    np.save(path, np.load(path) * np.float32(1.01))
sys.exit(p.returncode)
"""


class WrongEngineFails(unittest.TestCase):
    def compare(self, binary):
        cmd = [sys.executable, os.path.join(BENCHES, "compare.py"), "--quick", "--models", "vad", "--threads", "1",
               "--binary", binary, "--models-dir", OPTIONS["models_dir"]]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=600)

    def test_wrong_outputs_stop_the_comparison(self):
        binary = os.path.abspath(OPTIONS["binary"])
        self.assertTrue(os.access(binary, os.X_OK), f"no crx580 binary at {binary} (cargo build --release)")
        with tempfile.TemporaryDirectory() as tmp:
            wrapper = os.path.join(tmp, "crx580-wrong")
            with open(wrapper, "w") as f:
                f.write(WRONG_ENGINE.format(python=sys.executable, binary=binary))
            os.chmod(wrapper, os.stat(wrapper).st_mode | stat.S_IXUSR)
            p = self.compare(wrapper)
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        self.assertIn("do not match onnxruntime", p.stderr)
        self.assertIn("out of tolerance", p.stderr)
        self.assertNotIn("geometric mean", p.stdout)
        # The same command with the real binary passes: the failure above is the wrapper's doing.
        p = self.compare(binary)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("geometric mean", p.stdout)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--binary", default=OPTIONS["binary"])
    ap.add_argument("--models-dir", default=OPTIONS["models_dir"])
    args, rest = ap.parse_known_args()
    OPTIONS.update(binary=args.binary, models_dir=args.models_dir)
    unittest.main(argv=[sys.argv[0], *rest])
