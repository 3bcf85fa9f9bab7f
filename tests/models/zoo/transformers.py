"""BERT-family text encoders as torch.onnx (HuggingFace transformers) and tf2onnx write them:
MiniLM-L6 (6 layers, hidden 384, 12 heads) with the newer and the older export idioms, and a small
TF BERT-SQuAD with every exporter quirk (Constant-node weights, ':' and '/' in names, wrong declared
output shapes, an int64 pass-through output)."""

from __future__ import annotations

import numpy as np
from onnx import helper

from nn import F, I64, Builder

VOCAB = 30522
FINFO_MIN = float(np.finfo(np.float32).min)


def _tokens(seed: int, batch: int, seq: int, lengths, vocab: int = VOCAB):
    """input_ids (101 ... 102 then 0 padding), attention_mask (1 up to each length) and token_type_ids
    (a second segment after the middle), as a tokenizer pads a batch."""
    rng = np.random.default_rng(seed)
    ids = np.zeros((batch, seq), np.int64)
    mask = np.zeros((batch, seq), np.int64)
    types = np.zeros((batch, seq), np.int64)
    for k, n in enumerate(lengths):
        ids[k, :n] = rng.integers(1000, vocab, n)
        ids[k, 0], ids[k, n - 1] = 101, 102
        mask[k, :n] = 1
        types[k, n // 2:n] = 1
    return ids, mask, types


def _dim(b: Builder, x: str, axis: int) -> str:
    """x.size(axis) as torch exports it: Shape, Gather (scalar index) -> int64 scalar."""
    return b.op("Gather", [b.op("Shape", [x]), b.i64(axis, "idx")], axis=0)


def _unsqueeze(b: Builder, x: str, axes) -> str:
    if b.opset >= 13:
        return b.op("Unsqueeze", [x, b.i64(axes, "axes")])
    return b.op("Unsqueeze", [x], axes=list(axes))


def _split_heads_dynamic(b: Builder, x: str, heads: int, head_dim: int) -> str:
    """BertSelfAttention.transpose_for_scores: x.size()[:-1] + (heads, head_dim) built at run time
    from Shape/Gather/Unsqueeze/Concat, then view and permute(0, 2, 1, 3)."""
    n, s = (_unsqueeze(b, _dim(b, x, i), [0]) for i in range(2))
    shape = b.op("Concat", [n, s, b.i64([heads]), b.i64([head_dim])], axis=0)
    return b.op("Transpose", [b.op("Reshape", [x, shape])], perm=[0, 2, 1, 3])


def _merge_heads_dynamic(b: Builder, x: str, d: int) -> str:
    """context.permute(0, 2, 1, 3).view(context.size()[:-2] + (d,)) with Shape/Slice/Concat."""
    x = b.op("Transpose", [x], perm=[0, 2, 1, 3])
    lead = b.op("Slice", [b.op("Shape", [x]), b.i64([0]), b.i64([-2]), b.i64([0])])
    return b.op("Reshape", [x, b.op("Concat", [lead, b.i64([d])], axis=0)])


def _mask_legacy(b: Builder, mask: str) -> str:
    """(1.0 - mask[:, None, None, :].float()) * -10000.0, as transformers 3/4 exports write it."""
    m = b.op("Cast", [_unsqueeze(b, _unsqueeze(b, mask, [1]), [2])], to=F)
    return b.op("Mul", [b.op("Sub", [b.f32(1.0), m]), b.f32(-10000.0)])


def _mask_expanded(b: Builder, mask: str, ids: str) -> str:
    """_prepare_4d_attention_mask as newer transformers/torch exports write it: mask[:, None, None, :]
    expanded to [bsz, 1, tgt, src] (torch's expand writes Equal(size, -1)/Where), inverted, and
    masked_fill with finfo.min through Cast(bool)/Where."""
    m = _unsqueeze(b, _unsqueeze(b, mask, [1]), [2])
    bsz, seq = (_unsqueeze(b, _dim(b, ids, i), [0]) for i in range(2))
    size = b.op("Concat", [bsz, b.i64([1]), seq, seq], axis=0)
    ones = b.op("ConstantOfShape", [b.i64([4])], value=helper.make_tensor("one", I64, [1], [1]))
    size = b.op("Where", [b.op("Equal", [size, b.i64(-1, "neg1")]), ones, size])
    inverted = b.op("Sub", [b.f32(1.0), b.op("Cast", [b.op("Expand", [m, size])], to=F)])
    return b.op("Where", [b.op("Cast", [inverted], to=9), b.f32(FINFO_MIN), inverted])


def _encoder_layer(b: Builder, x: str, mask: str, d: int, heads: int, decomposed: bool, dynamic: bool,
                   eps: float = 1e-12) -> str:
    split = (lambda v, h, hd: _split_heads_dynamic(b, v, h, hd)) if dynamic else None
    merge = (lambda v, dm: _merge_heads_dynamic(b, v, dm)) if dynamic else None
    x = b.layernorm(b.op("Add", [b.mha(x, d, heads, mask, split, merge), x]), d, decomposed, eps)
    return b.layernorm(b.op("Add", [b.mlp(x, d, 4 * d), x]), d, decomposed, eps)


def _bert(name: str, opset: int, decomposed: bool, new_mask: bool, seed: int):
    b = Builder(name, opset=opset, seed=seed)
    d, heads, layers = 384, 12, 6
    ids = b.input("input_ids", I64, ["batch", "sequence"])
    mask = b.input("attention_mask", I64, ["batch", "sequence"])
    types = b.input("token_type_ids", I64, ["batch", "sequence"])
    seq = _dim(b, ids, 1)
    if new_mask:  # position_ids = arange(seq)[None]
        pos = _unsqueeze(b, b.op("Range", [b.i64(0, "start"), seq, b.i64(1, "step")]), [0])
    else:  # the registered buffer position_ids[:, :seq]
        buf = b.i64(np.arange(512)[None], "position_ids")
        pos = b.op("Slice", [buf, b.i64([0]), _unsqueeze(b, seq, [0]), b.i64([1])])
    emb = [b.op("Gather", [b.const(b.randn(n, d, scale=0.5), "emb"), i], axis=0)
           for n, i in [(VOCAB, ids), (2, types), (512, pos)]]
    x = b.layernorm(b.op("Add", [b.op("Add", [emb[0], emb[1]]), emb[2]]), d, decomposed, 1e-12)
    ext = _mask_expanded(b, mask, ids) if new_mask else _mask_legacy(b, mask)
    for _ in range(layers):
        x = _encoder_layer(b, x, ext, d, heads, decomposed, dynamic=True)
    b.output(x, F, ["batch", "sequence", d], name="last_hidden_state")
    first = b.op("Gather", [x, b.i64(0, "idx")], axis=1)
    pooled = b.op("Gemm", [first, b.weight(d, d, gain=1.0), b.const(b.randn(d, scale=0.02), "b")], transB=1)
    b.output(b.op("Tanh", [pooled]), F, ["batch", d], name="pooler_output")
    feeds = []
    batches = [(1, 128, [128]), (2, 128, [128, 57]), (3, 20, [20, 9, 2]), (1, 1, [1])]
    for k, (batch, seq_len, lengths) in enumerate(batches):
        i, m, t = _tokens(seed + k, batch, seq_len, lengths)
        feeds.append({"input_ids": i, "attention_mask": m, "token_type_ids": t})
    return b.build(), feeds


def minilm_l6():
    """MiniLM-L6-H384 (all-MiniLM-L6-v2 layout) at opset 17 with newer export idioms:
    LayerNormalization, position ids from Shape/Range/Unsqueeze, the 4-D mask built with
    Expand/Equal/Where and finfo.min, heads split by shapes from Shape/Gather/Concat."""
    return _bert("minilm_l6", 17, decomposed=False, new_mask=True, seed=61)


def bert_l6_decomposed():
    """The same architecture as transformers 4.x exported it at opset 11: LayerNorm decomposed into
    ReduceMean/Sub/Pow/Sqrt/Div, Unsqueeze with axes attributes, position ids sliced from a buffer,
    the (1 - mask) * -10000 additive mask."""
    return _bert("bert_l6_decomposed", 11, decomposed=True, new_mask=False, seed=62)


def bert_squad_tf():
    """A 2-layer, hidden-128 BERT for SQuAD as tf2onnx writes it (the MLPerf bert-squad layout) at
    opset 13: every weight a Constant node, TF tensor names with ':' and '/', declared output shapes
    that are wrong ([7, 7]; trust the computed ones), `unique_ids:0` an int64 pass-through, start/end
    logits split off by Split/Squeeze."""
    b = Builder("bert_squad_tf", opset=13, seed=63, constant_weights=True)
    d, heads, layers, seq = 128, 2, 2, 128
    uid = b.input("unique_ids_raw_output___9:0", I64, ["N"])
    types = b.input("bert/segment_ids:0", I64, ["N", seq])
    mask = b.input("input_mask:0", I64, ["N", seq])
    ids = b.input("input_ids:0", I64, ["N", seq])
    emb = [b.op("Gather", [b.const(b.randn(n, d, scale=0.5), "emb"), i], axis=0) for n, i in [(VOCAB, ids), (2, types)]]
    pos = b.const(b.randn(1, seq, d, scale=0.5), "pos_emb")
    x = b.layernorm(b.op("Add", [b.op("Add", [emb[0], emb[1]]), pos]), d, decomposed=True, eps=1e-12)
    m = b.op("Cast", [b.op("Reshape", [mask, b.i64([-1, 1, 1, seq])])], to=F)
    ext = b.op("Mul", [b.op("Sub", [b.f32(1.0), m]), b.f32(-10000.0)])
    for _ in range(layers):
        x = _encoder_layer(b, x, ext, d, heads, decomposed=True, dynamic=False)
    logits = b.op("Transpose", [b.linear(x, d, 2)], perm=[2, 0, 1])
    halves = b.op("Split", [logits, b.i64([1, 1], "split")], n_out=2, axis=0)
    start, end = (b.op("Squeeze", [s, b.i64([0], "axes")]) for s in halves)
    b.output(start, F, [7, 7], name="unstack:0")
    b.output(end, F, [7, 7], name="unstack:1")
    b.output(uid, I64, [7, 7], name="unique_ids:0")
    model = b.build(check=False)
    _tf_names(model)
    feeds = []
    for k, (batch, lengths) in enumerate([(1, [128]), (2, [77, 128])]):
        i, mk, t = _tokens(70 + k, batch, seq, lengths)
        feeds.append({"unique_ids_raw_output___9:0": np.arange(batch, dtype=np.int64) + 2**40 + 7,
                      "bert/segment_ids:0": t, "input_mask:0": mk, "input_ids:0": i})
    return model, feeds


def _tf_names(model) -> None:
    """Renames internal values the way TF names tensors (`bert/encoder/<op>_<k>:0`)."""
    keep = {v.name for v in model.graph.input} | {v.name for v in model.graph.output}
    rename = {}
    for n in model.graph.node:
        for k, o in enumerate(n.output):
            if o not in keep:
                rename[o] = f"bert/encoder/{o}:{k}"
                n.output[k] = rename[o]
    for n in model.graph.node:
        for k, i in enumerate(n.input):
            n.input[k] = rename.get(i, i)


MODELS = [minilm_l6, bert_l6_decomposed, bert_squad_tf]
