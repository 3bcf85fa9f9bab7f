#!/usr/bin/env python3
"""Generate the ONNX backend *node* conformance test cases on disk.

Writes every case returned by ``onnx.backend.test.case.node.collect_testcases(None)``
(1884 cases with onnx 1.23.2, including the ``*_expanded`` function variants)
in the standard ONNX backend-test layout::

    DIR/VERSION                                   what made the data, e.g.
                                                  "onnx 1.23.2 ml_dtypes 0.6.0 numpy 2.4.6\n"
    DIR/<case name>/model.onnx
    DIR/<case name>/test_data_set_<k>/input_<i>.pb
    DIR/<case name>/test_data_set_<k>/output_<i>.pb

Each ``.pb`` is serialised exactly as onnx's own ``cmd_tools.py generate-data``
does: a TensorProto (``numpy_helper.from_array``) named after the graph
input/output, or, for sequence / optional / map typed values, a SequenceProto /
OptionalProto / MapProto (``numpy_helper.from_list`` / ``from_optional`` /
``from_dict``). The Rust runner is expected to report non-tensor cases as
unsupported.

The case data is produced by onnx's reference code with fixed seeds, so the
output is deterministic for given versions of onnx and of the packages its
reference computes with (ml_dtypes for the narrow types, numpy). ``DIR/VERSION``
names all three, so that the runner can detect a directory made by another venv
(``--version`` prints what this venv would write).

Usage:
    python tests/conformance/gen_node_tests.py [--out DIR] [--filter SUBSTR]
    python tests/conformance/gen_node_tests.py --version

Takes about 10 s on one core and writes about 12 MB.

Default DIR is ``target/onnx-node-tests`` (where tests/conformance.rs and
tests/run.sh look for it; override there with $CRX580_NODE_TESTS). Any existing
DIR is removed first. Requires the packages pinned in ``tests/requirements.txt``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
import warnings

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper
from onnx.backend.test.case import node as node_cases

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


def serialize_value(value, value_info: onnx.ValueInfoProto) -> bytes:
    """Serialise one input/output value the way onnx's cmd_tools does."""
    name = value_info.name
    t = value_info.type
    if t.HasField("map_type"):
        return numpy_helper.from_dict(value, name).SerializeToString()
    if t.HasField("sequence_type"):
        return numpy_helper.from_list(value, name).SerializeToString()
    if t.HasField("optional_type"):
        return numpy_helper.from_optional(value, name).SerializeToString()
    if isinstance(value, TensorProto):
        # Already a TensorProto (e.g. special float types); keep it, but make
        # sure it carries the graph value's name.
        tp = TensorProto()
        tp.CopyFrom(value)
        tp.name = name
        return tp.SerializeToString()
    return numpy_helper.from_array(np.asarray(value), name).SerializeToString()


def write_case(case, out_dir: str) -> None:
    case_dir = os.path.join(out_dir, case.name)
    os.makedirs(case_dir)
    model = case.model
    with open(os.path.join(case_dir, "model.onnx"), "wb") as f:
        f.write(model.SerializeToString())
    graph_inputs = list(model.graph.input)
    graph_outputs = list(model.graph.output)
    for k, (inputs, outputs) in enumerate(case.data_sets):
        ds_dir = os.path.join(case_dir, f"test_data_set_{k}")
        os.makedirs(ds_dir)
        for i, value in enumerate(inputs):
            with open(os.path.join(ds_dir, f"input_{i}.pb"), "wb") as f:
                f.write(serialize_value(value, graph_inputs[i]))
        for i, value in enumerate(outputs):
            with open(os.path.join(ds_dir, f"output_{i}.pb"), "wb") as f:
                f.write(serialize_value(value, graph_outputs[i]))


def dir_size(path: str) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for fn in files:
            total += os.path.getsize(os.path.join(root, fn))
    return total


def version_stamp() -> str:
    """The versions that determine the case data (DIR/VERSION)."""
    import ml_dtypes

    return f"onnx {onnx.__version__} ml_dtypes {ml_dtypes.__version__} numpy {np.__version__}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.path.join(REPO, "target", "onnx-node-tests"),
                    help="output directory (default: %(default)s); replaced if present")
    ap.add_argument("--filter", default=None,
                    help="only write cases whose name contains this substring")
    ap.add_argument("--version", action="store_true",
                    help="print the VERSION line this venv writes, and exit")
    args = ap.parse_args()
    if args.version:
        print(version_stamp())
        return 0

    t0 = time.time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = node_cases.collect_testcases(None)
    t_collect = time.time() - t0

    out = os.path.abspath(args.out)
    if os.path.exists(out):
        shutil.rmtree(out)
    os.makedirs(out)

    names = set()
    n = 0
    for case in cases:
        if args.filter and args.filter not in case.name:
            continue
        if case.name in names:
            raise SystemExit(f"duplicate case name {case.name}")
        names.add(case.name)
        write_case(case, out)
        n += 1

    with open(os.path.join(out, "VERSION"), "w") as f:
        f.write(version_stamp() + "\n")

    dt = time.time() - t0
    size = dir_size(out)
    print(f"onnx {onnx.__version__}: wrote {n} of {len(cases)} node cases to {out}")
    print(f"collect {t_collect:.1f}s, total {dt:.1f}s, size {size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
