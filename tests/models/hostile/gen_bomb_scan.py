"""A scan for allocation and time bombs: one tiny model per op with a size-like attribute or input
set to 2^40 (or a huge scale, trip count or hidden size), on small or empty tensors. Every model has
no inputs; tests/hostile.rs runs each under small limits and expects a result or a clear error,
never a panic (an arithmetic overflow turned into an error), an abort or a hang. Found so far:
MaxPool/AveragePool with 2^40 pads aborted on a 24 TB allocation; Conv, ConvTranspose and Col2Im
overflowed.
    .venv/bin/python tests/models/hostile/gen_bomb_scan.py --out target/bomb-scan
"""
import argparse
import hashlib
import os

import numpy as np
from onnx import TensorProto as TP
from onnx import helper
from onnx import numpy_helper as nh

H = 1 << 40


def I(name, v, dt=np.int64):
    return nh.from_array(np.array(v, dtype=dt), name)


def F(name, v):
    return nh.from_array(np.array(v, dtype=np.float32), name)


def U8(name, v):
    return nh.from_array(np.array(v, dtype=np.uint8), name)


x4 = F("x", np.ones((1, 1, 4, 4)))
xq = U8("x", np.ones((1, 1, 4, 4)))
wq = U8("w", np.ones((1, 1, 2, 2)))
s = F("s", 1.0)
z = U8("z", 0)

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
cases.update({
 "convint_dil": ([helper.make_node("ConvInteger",["x","w"],["y"],dilations=[H,H],pads=[H,H,H,H])],[xq,wq],10),
 "qlinearconv_dil": ([helper.make_node("QLinearConv",["x","s","z","w","s","z","s","z"],["y"],dilations=[H,H],pads=[H,H,H,H])],[xq,s,z,wq],10),
 "lppool_pads": ([helper.make_node("LpPool",["x"],["y"],kernel_shape=[2,2],pads=[H,H,H,H])],[x4],18),
 "deform_pads": ([helper.make_node("DeformConv",["x","w","o"],["y"],pads=[H,H,H,H])],[x4,F("w",np.ones((1,1,2,2))),F("o",np.zeros((1,8,3,3)))],19),
 "fusedconv_dil": ([helper.make_node("FusedConv",["x","w"],["y"],domain="com.microsoft",dilations=[H,H],pads=[H,H,H,H],activation="Relu")],[x4,F("w",np.ones((1,1,2,2)))],13,["com.microsoft"]),
 "maxpool_ceil": ([helper.make_node("MaxPool",["x"],["y","i"],kernel_shape=[2,2],strides=[1,1],pads=[H,0,H,0],ceil_mode=1)],[x4],12),
 "unsqueeze": ([helper.make_node("Unsqueeze",["x","a"],["y"])],[x4,I("a",[H])],13),
 "transpose_perm": ([helper.make_node("Transpose",["x"],["y"],perm=[H,0,1,2])],[x4],13),
 "flatten": ([helper.make_node("Flatten",["x"],["y"],axis=H)],[x4],13),
 "gather_big": ([helper.make_node("Gather",["x","i"],["y"])],[x4,I("i",[H])],13),
 "compress": ([helper.make_node("Compress",["x","c"],["y"],axis=H)],[x4,nh.from_array(np.array([True]),"c")],11),
 "nms_center": ([helper.make_node("NonMaxSuppression",["b","s2","m","iou","st"],["y"],center_point_box=1)],[F("b",np.full((1,2,4),1e38)),F("s2",np.ones((1,1,2))),I("m",[1<<62]),F("iou",[-1.0]),F("st",[-1e30])],11),
 "einsum_ellipsis": ([helper.make_node("Einsum",["x"],["y"],equation="...ii->...i")],[F("x",np.ones((2,2)))],12),
 "lstm_hidden": ([helper.make_node("LSTM",["x3","w","r"],["y"],hidden_size=H)],[F("x3",np.ones((1,1,1))),F("w",np.ones((1,4,1))),F("r",np.ones((1,4,1)))],14),
 "gru_hidden": ([helper.make_node("GRU",["x3","w","r"],["y"],hidden_size=1<<20)],[F("x3",np.ones((1,1,1))),F("w",np.ones((1,3,1))),F("r",np.ones((1,3,1)))],14),
 "attention_heads": ([helper.make_node("Attention",["q","k","v"],["y"],q_num_heads=H,kv_num_heads=H)],[F("q",np.ones((1,2,4))),F("k",np.ones((1,2,4))),F("v",np.ones((1,2,4)))],23),
 "rotary": ([helper.make_node("RotaryEmbedding",["q","c","s","p"],["y"],rotary_embedding_dim=H)],[F("q",np.ones((1,1,2,4))),F("c",np.ones((4,2))),F("s",np.ones((4,2))),I("p",[[0,1]])],23),
 "group_norm": ([helper.make_node("GroupNormalization",["x","sc","b"],["y"],num_groups=H)],[x4,F("sc",[1.0]),F("b",[0.0])],21),
 "layer_norm": ([helper.make_node("LayerNormalization",["x","sc"],["y"],axis=-H)],[x4,F("sc",[1.0])],17),
 "softmax": ([helper.make_node("Softmax",["x"],["y"],axis=H)],[x4],13),
 "dft_axis": ([helper.make_node("DFT",["x3","","a"],["y"])],[F("x3",np.ones((1,4,1))),I("a",H)],20),
 "window_big": ([helper.make_node("BlackmanWindow",["n"],["y"])],[I("n",1<<27)],17),
 "constant_big": ([helper.make_node("ConstantOfShape",["sh"],["y"])],[I("sh",[1<<20,1<<20,0,1<<20])],9),
 "range_int": ([helper.make_node("Range",["a","b","c"],["y"])],[I("a",-(1<<62)),I("b",1<<62),I("c",1)],11),
 "tile_big": ([helper.make_node("Tile",["x","r"],["y"])],[x4,I("r",[1,1,1<<15,1<<15])],13),
 "pad_reflect": ([helper.make_node("Pad",["x","p"],["y"],mode="reflect")],[x4,I("p",[0,0,H,0,0,0,0,0])],18),
 "scan_big": ([helper.make_node("Scan",["x"],["y"],num_scan_inputs=1,scan_input_axes=[H],body=helper.make_graph([helper.make_node("Identity",["a"],["b"])],"b",[helper.make_tensor_value_info("a",TP.FLOAT,None)],[helper.make_tensor_value_info("b",TP.FLOAT,None)]))],[x4],16),
 "cumprod": ([helper.make_node("CumProd",["x","a"],["y"])],[x4,I("a",H)],26),
 "unique_axis": ([helper.make_node("Unique",["x"],["y"],axis=H)],[x4],11),
 "topk_neg": ([helper.make_node("TopK",["x","k"],["y","i"],axis=-H)],[x4,I("k",[1])],11),
 "trilu_empty": ([helper.make_node("Trilu",["e"],["y"])],[F("e",np.ones((0,1)))],14),
 "slice_steps": ([helper.make_node("Slice",["x","st","en","ax","sp"],["y"])],[x4,I("st",[0]),I("en",[1<<62]),I("ax",[3]),I("sp",[1<<62])],13),
 "resize_sizes": ([helper.make_node("Resize",["x","","","sz"],["y"],mode="nearest")],[x4,I("sz",[1,1,1<<16,1<<16])],13),
 "split_big": ([helper.make_node("Split",["x","sp"],["y"])],[x4,I("sp",[H])],13),
})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--hash", action="store_true", help="print this generator's hash and exit")
    args = ap.parse_args()
    digest = hashlib.sha1(open(__file__, "rb").read()).hexdigest()[:16]
    if args.hash:
        print(digest)
        return
    os.makedirs(args.out, exist_ok=True)
    for name, case in cases.items():
        nodes, inits, opset = case[:3]
        domains = case[3] if len(case) > 3 else ()
        outputs = [helper.make_tensor_value_info("y", TP.UNDEFINED, None)]
        graph = helper.make_graph(nodes, name, [], outputs, initializer=inits)
        imports = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, 1) for d in domains]
        model = helper.make_model(graph, opset_imports=imports)
        model.ir_version = 8
        with open(os.path.join(args.out, name + ".onnx"), "wb") as f:
            f.write(model.SerializeToString())
    with open(os.path.join(args.out, "VERSION"), "w") as f:
        f.write(digest + "\n")
    print(f"{len(cases)} bomb-scan models in {args.out}")


if __name__ == "__main__":
    main()
