"""Audio models with recurrent state and control flow: a Silero-VAD-like voice activity detector
(scalar int64 sample rate choosing between pipelines through nested If, STFT as a Conv1d with a
fixed Fourier basis, LSTM state in and out) and a streaming GRU recognizer that runs a Loop over
chunks of its input frames."""

from __future__ import annotations

import numpy as np

from nn import F, I64, Builder

STATE = 64


def _fourier_basis(n_fft: int) -> np.ndarray:
    """[2*(n_fft/2+1), 1, n_fft]: Hann-windowed cos rows then -sin rows, as torch STFT-as-conv layers
    (and Silero's) store them."""
    n = np.arange(n_fft)
    k = np.arange(n_fft // 2 + 1)[:, None]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * n / n_fft)
    basis = np.concatenate([np.cos(2 * np.pi * k * n / n_fft), -np.sin(2 * np.pi * k * n / n_fft)]) * window
    return basis[:, None, :].astype(np.float32)


def vad():
    """Silero-VAD v4 layout at opset 16. Inputs `input` [batch, samples], `sr` (int64 scalar), `h` and
    `c` [2, batch, 64]; outputs the speech probability [batch, 1] and the new LSTM state. The graph
    picks by `sr` with If three levels deep: 16 kHz (STFT 256/64), 8 kHz (STFT 128/32), multiples of
    16 kHz (decimated by a Slice whose step is computed from `sr`, then the 16 kHz pipeline), and an
    error branch returning -1 and the state unchanged. Each pipeline: reflect Pad, Conv1d STFT,
    magnitude by Pow/Add/Sqrt, four Conv1d+Relu, two LSTM layers seeded from slices of h/c, Relu,
    Conv1d head, Sigmoid, mean over time. Branches capture the top-level weights."""
    b = Builder("vad", opset=16, seed=71)
    audio = b.input("input", F, ["batch", "samples"])
    sr = b.input("sr", I64, [])
    h = b.input("h", F, [2, "batch", STATE])
    c = b.input("c", F, [2, "batch", STATE])

    # Weights live at the top level, shared by the branches (as torch.jit scripted exports write them).
    stft = {n_fft: b.const(_fourier_basis(n_fft), "stft_basis") for n_fft in (256, 128)}
    first = {n_fft: (b.weight(128, n_fft // 2 + 1, 3), b.const(b.randn(128, scale=0.1), "b")) for n_fft in (256, 128)}
    enc = [(b.weight(64, 128, 3), b.const(b.randn(64, scale=0.1), "b"))]
    enc += [(b.weight(64, 64, 3), b.const(b.randn(64, scale=0.1), "b")) for _ in range(2)]
    k = 1.0 / np.sqrt(STATE)
    lstm_w = [[b.const(b.uniform(*shape, bound=k), "lstm_w")
               for shape in [(1, 4 * STATE, STATE), (1, 4 * STATE, STATE), (1, 8 * STATE)]] for _ in range(2)]
    head_w, head_b = b.weight(1, STATE, 1, gain=4.0), b.const(b.randn(1, scale=0.1), "b")

    def pipeline(x: str, n_fft: int):
        hop = n_fft // 4
        pad = (n_fft - hop) // 2
        y = b.op("Pad", [b.op("Unsqueeze", [x, b.i64([1], "axes")]), b.i64([0, 0, pad, 0, 0, pad], "pads")],
                 mode="reflect")
        spec = b.op("Conv", [y, stft[n_fft]], kernel_shape=[n_fft], strides=[hop])
        bins = n_fft // 2 + 1
        re = b.op("Slice", [spec, b.i64([0]), b.i64([bins]), b.i64([1])])
        im = b.op("Slice", [spec, b.i64([bins]), b.i64([2 * bins]), b.i64([1])])
        mag = b.op("Sqrt", [b.op("Add", [b.op("Pow", [re, b.f32(2.0)]), b.op("Pow", [im, b.f32(2.0)])])])
        y = b.op("Relu", [b.conv1d(mag, bins, 128, 3, weight=first[n_fft][0], bias=first[n_fft][1])])
        for (w, bias), cin, stride in zip(enc, [128, 64, 64], [2, 2, 1]):
            y = b.op("Relu", [b.conv1d(y, cin, 64, 3, stride, weight=w, bias=bias)])
        seq = b.op("Transpose", [y], perm=[2, 0, 1])
        hs, cs = [], []
        for layer, (w, r, bias) in enumerate(lstm_w):
            sl = [b.i64([layer]), b.i64([layer + 1]), b.i64([0])]
            h0, c0 = b.op("Slice", [h] + sl), b.op("Slice", [c] + sl)
            out, hn, cn = b.op("LSTM", [seq, w, r, bias, "", h0, c0], n_out=3, hidden_size=STATE)
            seq = b.op("Squeeze", [out, b.i64([1], "axes")])
            hs.append(hn)
            cs.append(cn)
        y = b.op("Transpose", [b.op("Relu", [seq])], perm=[1, 2, 0])
        p = b.op("Sigmoid", [b.conv1d(y, STATE, 1, 1, weight=head_w, bias=head_b)])
        prob = b.op("ReduceMean", [p], axes=[2], keepdims=0)
        return [prob, b.op("Concat", hs, axis=0), b.op("Concat", cs, axis=0)]

    def decimated():
        step = b.op("Unsqueeze", [b.op("Div", [sr, b.i64(16000, "sr16k")]), b.i64([0], "axes")])
        x = b.op("Slice", [audio, b.i64([0]), b.i64([2**62]), b.i64([1]), step])
        return pipeline(x, 256)

    def error():
        batch = b.op("Slice", [b.op("Shape", [audio]), b.i64([0]), b.i64([1])])
        prob = b.op("Expand", [b.f32([[-1.0]]), b.op("Concat", [batch, b.i64([1])], axis=0)])
        return [prob, h, c]

    types = [F, F, F]
    multiple = b.op("Equal", [b.op("Mod", [sr, b.i64(16000, "sr16k")]), b.i64(0, "zero")])

    def other_rates():
        above = b.op("Greater", [sr, b.i64(16000, "sr16k")])
        return b.if_(b.op("And", [multiple, above]), decimated, error, types)

    def not_16k():
        # Compared with a [1]-shaped constant, as scripted exports often do: this If's condition is [1].
        is8k = b.op("Equal", [sr, b.i64([8000], "sr8k")])
        return b.if_(is8k, lambda: pipeline(audio, 128), other_rates, types)

    prob, hn, cn = b.if_(b.op("Equal", [sr, b.i64(16000, "sr16k")]), lambda: pipeline(audio, 256), not_16k, types)
    b.output(prob, F, ["batch", 1], name="output")
    b.output(hn, F, [2, "batch", STATE], name="hn")
    b.output(cn, F, [2, "batch", STATE], name="cn")

    rng = np.random.default_rng(7)
    speech = lambda n: (0.3 * np.sin(np.arange(n) * 0.07) + rng.normal(0, 0.1, n)).astype(np.float32)[None]
    zeros = np.zeros((2, 1, STATE), np.float32)
    state = lambda: rng.uniform(-0.5, 0.5, (2, 1, STATE)).astype(np.float32)
    feeds = [
        {"input": speech(512), "sr": np.array(16000, np.int64), "h": zeros, "c": zeros},
        {"input": speech(512), "sr": np.array(16000, np.int64), "h": state(), "c": state()},
        {"input": speech(256), "sr": np.array(8000, np.int64), "h": state(), "c": state()},
        {"input": speech(1536), "sr": np.array(48000, np.int64), "h": state(), "c": state()},
        {"input": speech(441), "sr": np.array(44100, np.int64), "h": state(), "c": state()},
        {"input": np.concatenate([speech(512), speech(512)]), "sr": np.array(16000, np.int64),
         "h": rng.uniform(-0.5, 0.5, (2, 2, STATE)).astype(np.float32),
         "c": rng.uniform(-0.5, 0.5, (2, 2, STATE)).astype(np.float32)},
    ]
    return b.build(), feeds


def streaming_gru():
    """A streaming recognizer at opset 16: log-mel features [1, frames, 80] and a GRU state
    [1, 1, 256]; a Loop over frames/16 chunks (trip count from Shape/Gather/Div) slices each chunk at
    i*16, projects it (MatMul+Add+Relu), runs a GRU (linear_before_reset) seeded with the carried
    state, and scans out LogSoftmax over 32 tokens. Outputs: log-probs [1, frames, 32], the greedy
    token ids (ArgMax, int64) and the final state."""
    b = Builder("streaming_gru", opset=16, seed=72)
    chunk, feat, hidden, vocab = 16, 80, 256, 32
    feats = b.input("features", F, [1, "frames", feat])
    state = b.input("state", F, [1, 1, hidden])
    frames = b.op("Gather", [b.op("Shape", [feats]), b.i64(1, "idx")], axis=0)
    trips = b.op("Div", [frames, b.i64(chunk, "chunk")])

    def body(i, cond, h):
        start = b.op("Unsqueeze", [b.op("Mul", [i, b.i64(chunk, "chunk")]), b.i64([0], "axes")])
        end = b.op("Add", [start, b.i64([chunk], "chunk")])
        x = b.op("Slice", [feats, start, end, b.i64([1], "axes")])
        x = b.op("Relu", [b.linear(b.op("Transpose", [x], perm=[1, 0, 2]), feat, hidden, gain=2.0**0.5)])
        y, hn = b.gru(x, hidden, hidden, initial_h=h)
        logits = b.linear(b.op("Squeeze", [y, b.i64([1], "axes")]), hidden, vocab, gain=4.0)
        return [hn, b.op("LogSoftmax", [logits], axis=-1)]

    final, scans = b.loop(trips, [state], body, [F], [F], carried_shapes=[[1, 1, hidden]])
    logp = b.op("Transpose", [b.op("Reshape", [scans, b.i64([-1, 1, vocab])])], perm=[1, 0, 2])
    b.output(logp, F, [1, "frames", vocab], name="log_probs")
    b.output(b.op("ArgMax", [logp], axis=-1, keepdims=0), I64, [1, "frames"], name="tokens")
    b.output(final, F, [1, 1, hidden], name="state_out")
    rng = np.random.default_rng(8)
    mel = lambda n: rng.normal(0, 1, (1, n, feat)).astype(np.float32)
    feeds = [{"features": mel(64), "state": np.zeros((1, 1, hidden), np.float32)},
             {"features": mel(160), "state": rng.uniform(-0.5, 0.5, (1, 1, hidden)).astype(np.float32)},
             {"features": mel(40), "state": rng.uniform(-0.5, 0.5, (1, 1, hidden)).astype(np.float32)},
             {"features": mel(8), "state": rng.uniform(-0.5, 0.5, (1, 1, hidden)).astype(np.float32)}]
    return b.build(), feeds


MODELS = [vad, streaming_gru]
