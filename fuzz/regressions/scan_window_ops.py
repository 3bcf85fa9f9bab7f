"""A targeted scan for allocation and time bombs: one tiny model per op with a size-like attribute
or input set to 2^40 (or a huge scale), on small or empty tensors. Run each with
`crx580 run MODEL` under `ulimit -v` and a timeout; every one must end with a result or a clear
error. The ones that aborted or panicked are in load_and_run/scan-*.onnx.
    .venv/bin/python fuzz/regressions/scan_window_ops.py OUT_DIR
"""
import os
import sys

import numpy as np
import onnx
from onnx import helper, TensorProto as TP, numpy_helper as nh
H=1<<40
out=sys.argv[1] if len(sys.argv) > 1 else 'scan-models'; os.makedirs(out, exist_ok=True)
def I(name, v, dt=np.int64): return nh.from_array(np.array(v, dtype=dt), name)
def F(name, v): return nh.from_array(np.array(v, dtype=np.float32), name)
def save(name, nodes, inits, outs, opset=18):
    g=helper.make_graph(nodes, name, [], [helper.make_tensor_value_info(o, TP.UNDEFINED, None) for o in outs], initializer=inits)
    m=helper.make_model(g, opset_imports=[helper.make_opsetid("",opset)]); m.ir_version=8
    open(f"{out}/{name}.onnx","wb").write(m.SerializeToString())
x4=F("x", np.ones((1,1,4,4)))
cases = {
 "dft_len": ([helper.make_node("DFT",["x","n"],["y"])],[F("x",np.ones((1,4,1))),I("n",H)],20),
 "dft_len_2_28": ([helper.make_node("DFT",["x","n"],["y"])],[F("x",np.ones((1,4,1))),I("n",1<<28)],20),
 "stft": ([helper.make_node("STFT",["x","s","","l"],["y"])],[F("x",np.ones((1,16,1))),I("s",1),I("l",H)],17),
 "hann": ([helper.make_node("HannWindow",["n"],["y"])],[I("n",H)],17),
 "onehot": ([helper.make_node("OneHot",["i","d","v"],["y"])],[I("i",[1]),I("d",H),F("v",[0,1])],11),
 "tile_empty": ([helper.make_node("Tile",["e","r"],["y"])],[F("e",np.ones((0,1))),I("r",[1,H])],13),
 "pad_empty": ([helper.make_node("Pad",["e","p"],["y"])],[F("e",np.ones((0,1))),I("p",[0,H,0,0])],18),
 "expand": ([helper.make_node("Expand",["e","s"],["y"])],[F("e",np.ones((1,1))),I("s",[H,0])],13),
 "topk": ([helper.make_node("TopK",["e","k"],["y","i"])],[F("e",np.ones((4,))),I("k",[H])],11),
 "nms": ([helper.make_node("NonMaxSuppression",["b","s","m"],["y"])],[F("b",np.ones((1,2,4))),F("s",np.ones((1,1,2))),I("m",[1<<62])],11),
 "col2im": ([helper.make_node("Col2Im",["c","i","k"],["y"])],[F("c",np.ones((1,4,1))),I("i",[H,H]),I("k",[2,2])],18),
 "upsample": ([helper.make_node("Upsample",["x","s"],["y"])],[x4,F("s",[1,1,1e12,1e12])],9),
 "lrn": ([helper.make_node("LRN",["x"],["y"],size=1<<40)],[x4],13),
 "avgpool_k": ([helper.make_node("AveragePool",["x"],["y"],kernel_shape=[H,H],pads=[H,H,H,H])],[x4],11),
 "avgpool_dil": ([helper.make_node("MaxPool",["x"],["y"],kernel_shape=[2,2],dilations=[H,H],pads=[H,H,H,H])],[x4],12),
 "conv_dil": ([helper.make_node("Conv",["x","w"],["y"],dilations=[H,H],pads=[H,H,H,H])],[x4,F("w",np.ones((1,1,2,2)))],11),
 "convT_stride": ([helper.make_node("ConvTranspose",["x","w"],["y"],strides=[H,H])],[x4,F("w",np.ones((1,1,2,2)))],11),
 "convT_outpad": ([helper.make_node("ConvTranspose",["x","w"],["y"],output_shape=[H,H])],[x4,F("w",np.ones((1,1,2,2)))],11),
 "resize_scale": ([helper.make_node("Resize",["x","","s"],["y"],mode="linear")],[x4,F("s",[1,1,1e-12,1e-12])],13),
 "resize_scale_aa": ([helper.make_node("Resize",["x","","s"],["y"],mode="cubic",antialias=1)],[x4,F("s",[1,1,1e-6,1e-6])],18),
 "resize_crop": ([helper.make_node("Resize",["x","r","s"],["y"],mode="linear",coordinate_transformation_mode="tf_crop_and_resize")],[x4,F("r",[0,0,0,0,1,1,1e12,1e12]),F("s",[1,1,1,1])],13),
 "eyelike_k": ([helper.make_node("EyeLike",["x2"],["y"],k=1<<62)],[F("x2",np.ones((4,4)))],9),
 "range": ([helper.make_node("Range",["a","b","c"],["y"])],[F("a",0),F("b",1e30),F("c",1)],11),
 "cumsum": ([helper.make_node("CumSum",["e","a"],["y"])],[F("e",np.ones((0,1))),I("a",1<<62)],14),
 "gathernd_b": ([helper.make_node("GatherND",["x2","i"],["y"],batch_dims=1<<40)],[F("x2",np.ones((4,4))),I("i",[[0]])],12),
 "reverse_seq": ([helper.make_node("ReverseSequence",["x2","l"],["y"])],[F("x2",np.ones((4,4))),I("l",[H,H,H,H])],10),
 "centercrop": ([helper.make_node("CenterCropPad",["x2","s"],["y"])],[F("x2",np.ones((4,4))),I("s",[H,0])],18),
 "maxunpool": ([helper.make_node("MaxUnpool",["x","i","o"],["y"],kernel_shape=[2,2])],[x4,I("i",np.zeros((1,1,4,4))),I("o",[1,1,H,H])],11),
 "stringsplit": ([helper.make_node("StringSplit",["s"],["y","n"],maxsplit=1<<62)],[nh.from_array(np.array(["a b c"],dtype=object),"s")],20),
 "loop_long": ([helper.make_node("Loop",["m",""],["y"],body=helper.make_graph([helper.make_node("Identity",["c"],["co"])],"b",[helper.make_tensor_value_info("i",TP.INT64,[]),helper.make_tensor_value_info("c",TP.BOOL,[])],[helper.make_tensor_value_info("co",TP.BOOL,[])]))],[I("m",1<<62)],13),
 "einsum_big": ([helper.make_node("Einsum",["x2","x2"],["y"],equation="ij,kl->ijkl")],[F("x2",np.ones((4,4)))],12),
 "spacetodepth": ([helper.make_node("SpaceToDepth",["x"],["y"],blocksize=1<<40)],[x4],13),
 "depthtospace": ([helper.make_node("DepthToSpace",["x"],["y"],blocksize=1<<40)],[x4],13),
 "split_n": ([helper.make_node("Split",["x2"],["y"],num_outputs=1)],[F("x2",np.ones((4,4)))],18),
 "lppool": ([helper.make_node("LpPool",["x"],["y"],kernel_shape=[2,2],p=1<<40)],[x4],18),
 "gridsample": ([helper.make_node("GridSample",["x","g"],["y"])],[x4,F("g",np.full((1,2,2,2),1e30))],16),
 "affinegrid": ([helper.make_node("AffineGrid",["t","s"],["y"])],[F("t",np.ones((1,2,3))),I("s",[1,1,H,H])],20),
 "roialign": ([helper.make_node("RoiAlign",["x","r","b"],["y"],output_height=1<<20,output_width=1<<20,sampling_ratio=1<<20)],[x4,F("r",[[0,0,1,1]]),I("b",[0])],16),
 "mvn": ([helper.make_node("MeanVarianceNormalization",["x"],["y"],axes=[1<<40])],[x4],13),
 "trilu": ([helper.make_node("Trilu",["x2","k"],["y"])],[F("x2",np.ones((4,4))),I("k",1<<62)],14),
 "deformconv": ([helper.make_node("DeformConv",["x","w","o"],["y"],dilations=[H,H])],[x4,F("w",np.ones((1,1,2,2))),F("o",np.zeros((1,8,3,3)))],19),
 "concat_seq": ([helper.make_node("SequenceEmpty",[],["s"]),helper.make_node("ConcatFromSequence",["s"],["y"],axis=1<<40)],[],11),
 "bitshift": ([helper.make_node("BitShift",["a","b"],["y"],direction="LEFT")],[I("a",[1],np.uint64),I("b",[1<<62],np.uint64)],11),
 "melw_small_len": ([helper.make_node("MelWeightMatrix",["n","d","r","l","h"],["y"])],[I("n",1<<20),I("d",1<<20),I("r",16000),F("l",0),F("h",8000)],17),
}
for k,(n,i,o) in cases.items():
    try: save(k,n,i,["y"],o)
    except Exception as e: print("gen fail",k,e)
