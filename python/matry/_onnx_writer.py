"""BERT encoders written as ONNX graphs with the ``onnx`` package, plus a float64 numpy reference.

Private, build/test time only: ``scripts/build_bundled_model.py`` writes the bundled
all-MiniLM-L6-v2 with it, and the tests write tiny models (random weights, chosen input and
output layouts) to check :meth:`matry.Encoder.from_dir` against the numpy reference. Needs the
``onnx`` package, imported inside the functions (never by ``import matry``).

Weights use the Hugging Face BERT names (``embeddings.word_embeddings.weight``,
``encoder.layer.0.attention.self.query.weight``, ``pooler.dense.weight``...), Linear weights
stored as PyTorch does, ``[out, in]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "OUTPUT_KINDS",
    "BertConfig",
    "build_bert_onnx",
    "numpy_bert_forward",
    "quantize_symmetric",
    "random_bert_weights",
]

OPSET = 17
IR_VERSION = 8  # loadable by onnxruntime >= 1.14

#: What a graph output can hold: "tokens" = the last hidden state [batch, seq, hidden];
#: "pooler" = BERT's pooler, tanh(dense(first token)) [batch, hidden] (not a sentence embedding);
#: "mean" / "cls" = the last hidden state pooled inside the graph [batch, hidden].
OUTPUT_KINDS = ("tokens", "pooler", "mean", "cls")


@dataclass(frozen=True)
class BertConfig:
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    layer_norm_eps: float
    max_position_embeddings: int


def random_bert_weights(
    cfg: BertConfig, vocab_size: int, seed: int, type_vocab_size: int = 2
) -> dict[str, np.ndarray]:
    """Seeded random float32 weights of a BERT of shape ``cfg`` (with a pooler)."""
    rng = np.random.default_rng(seed)
    hidden, inter = cfg.hidden_size, cfg.intermediate_size

    def normal(*shape: int, scale: float = 0.2) -> np.ndarray:
        return (scale * rng.standard_normal(shape)).astype(np.float32)

    weights: dict[str, np.ndarray] = {
        "embeddings.word_embeddings.weight": normal(vocab_size, hidden, scale=1.0),
        "embeddings.position_embeddings.weight": normal(cfg.max_position_embeddings, hidden),
        "embeddings.token_type_embeddings.weight": normal(type_vocab_size, hidden),
        "pooler.dense.weight": normal(hidden, hidden),
        "pooler.dense.bias": normal(hidden),
    }

    def layer_norm(prefix: str) -> None:
        weights[f"{prefix}.weight"] = (1.0 + normal(hidden, scale=0.1)).astype(np.float32)
        weights[f"{prefix}.bias"] = normal(hidden, scale=0.1)

    def linear(prefix: str, n_in: int, n_out: int) -> None:
        weights[f"{prefix}.weight"] = normal(n_out, n_in, scale=1.0 / math.sqrt(n_in))
        weights[f"{prefix}.bias"] = normal(n_out, scale=0.1)

    layer_norm("embeddings.LayerNorm")
    for layer in range(cfg.num_layers):
        p = f"encoder.layer.{layer}"
        for part in ("query", "key", "value"):
            linear(f"{p}.attention.self.{part}", hidden, hidden)
        linear(f"{p}.attention.output.dense", hidden, hidden)
        layer_norm(f"{p}.attention.output.LayerNorm")
        linear(f"{p}.intermediate.dense", hidden, inter)
        linear(f"{p}.output.dense", inter, hidden)
        layer_norm(f"{p}.output.LayerNorm")
    return weights


def quantize_symmetric(matrix: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 quantization with one scale per slice along ``axis`` (kept as size 1)."""
    absmax = np.abs(matrix).max(axis=axis, keepdims=True).astype(np.float64)
    scale = np.where(absmax > 0, absmax / 127.0, 1.0)
    codes = np.clip(np.rint(matrix / scale), -127, 127).astype(np.int8)
    return codes, scale.astype(np.float32)


def build_bert_onnx(
    weights: dict[str, np.ndarray],
    cfg: BertConfig,
    *,
    int8_weights: bool = False,
    outputs: Sequence[tuple[str, str]] = (("last_hidden_state", "tokens"),),
    token_type_ids: bool = True,
    graph_name: str = "all-MiniLM-L6-v2",
    producer_name: str = "matry scripts/build_bundled_model.py",
) -> Any:
    """The BERT encoder as an ONNX graph (returns ``onnx.ModelProto``).

    ``outputs``: (name, kind) pairs in graph order, kinds from :data:`OUTPUT_KINDS`.
    ``token_type_ids=False`` leaves that input out (every token gets type 0).

    int8_weights=False: fp32 initializers. int8_weights=True: every Linear weight is stored as
    int8 with one fp32 scale per output column, and the word-embedding table as int8 with one
    scale per row; the graph dequantizes them with Cast + Mul (onnxruntime constant-folds the
    Linear weights when the session is created), so all arithmetic stays fp32 and a sentence's
    vector does not depend on what else is in its batch.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    unknown = [kind for _, kind in outputs if kind not in OUTPUT_KINDS]
    if unknown or not outputs:
        raise ValueError(f"outputs: kinds must be among {OUTPUT_KINDS}, got {list(outputs)}")
    hidden = cfg.hidden_size
    head_dim = hidden // cfg.num_heads
    nodes: list[Any] = []
    initializers: list[Any] = []

    made: set[str] = set()  # pooled outputs share constants and nodes: each is made once

    def const(name: str, value: np.ndarray) -> str:
        if name not in made:
            made.add(name)
            initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(op: str, inputs: list[str], output: str, **attrs: Any) -> str:
        if output not in made:
            made.add(output)
            nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    def linear(x: str, prefix: str, out: str) -> str:
        # PyTorch stores Linear weights as [out, in]; ONNX MatMul wants [in, out].
        matrix = weights[f"{prefix}.weight"].T.astype(np.float32)
        if int8_weights:
            codes, scale = quantize_symmetric(matrix, axis=0)
            w_codes = node(
                "Cast",
                [const(f"{prefix}.weight_t_int8", codes)],
                f"{prefix}.weight_t_cast",
                to=TensorProto.FLOAT,
            )
            w = node(
                "Mul", [w_codes, const(f"{prefix}.weight_t_scale", scale)], f"{prefix}.weight_t"
            )
        else:
            w = const(f"{prefix}.weight_t", matrix)
        b = const(f"{prefix}.bias", weights[f"{prefix}.bias"].astype(np.float32))
        return node("Add", [node("MatMul", [x, w], f"{out}_mm"), b], out)

    def layer_norm(x: str, prefix: str, out: str) -> str:
        scale = const(f"{prefix}.weight", weights[f"{prefix}.weight"].astype(np.float32))
        bias = const(f"{prefix}.bias", weights[f"{prefix}.bias"].astype(np.float32))
        return node(
            "LayerNormalization", [x, scale, bias], out, axis=-1, epsilon=cfg.layer_norm_eps
        )

    # shared constants
    const("shape_heads", np.array([0, 0, cfg.num_heads, head_dim], dtype=np.int64))
    const("shape_hidden", np.array([0, 0, hidden], dtype=np.int64))
    const("axes_0", np.array([0], dtype=np.int64))
    const("axes_1_2", np.array([1, 2], dtype=np.int64))
    const("starts_0", np.array([0], dtype=np.int64))
    const("one_f", np.array(1.0, dtype=np.float32))
    const("half_f", np.array(0.5, dtype=np.float32))
    const("sqrt2_f", np.array(math.sqrt(2.0), dtype=np.float32))
    const("mask_neg_f", np.array(np.finfo(np.float32).min, dtype=np.float32))
    const("inv_sqrt_head_f", np.array(1.0 / math.sqrt(head_dim), dtype=np.float32))
    const("index_1", np.array([1], dtype=np.int64))

    # embeddings: word + position[:seq] + token type, then LayerNorm
    table = weights["embeddings.word_embeddings.weight"].astype(np.float32)
    if int8_weights:
        # gather int8 rows first, then dequantize only those rows (keeps the table int8 in memory)
        codes, scale = quantize_symmetric(table, axis=1)
        rows = node(
            "Gather",
            [const("embeddings.word_embeddings.int8", codes), "input_ids"],
            "emb_word_int8",
            axis=0,
        )
        row_scale = node(
            "Gather",
            [const("embeddings.word_embeddings.scale", scale), "input_ids"],
            "emb_word_scale",
            axis=0,
        )
        word = node(
            "Mul",
            [node("Cast", [rows], "emb_word_cast", to=TensorProto.FLOAT), row_scale],
            "emb_word",
        )
    else:
        word = node(
            "Gather",
            [const("embeddings.word_embeddings.weight", table), "input_ids"],
            "emb_word",
            axis=0,
        )
    seq_len = node(
        "Gather", [node("Shape", ["input_ids"], "ids_shape"), "index_1"], "seq_len", axis=0
    )
    positions = node(
        "Slice",
        [
            const(
                "embeddings.position_embeddings.weight",
                weights["embeddings.position_embeddings.weight"],
            ),
            "starts_0",
            seq_len,
            "axes_0",
        ],
        "emb_pos",
    )
    type_table = weights["embeddings.token_type_embeddings.weight"]
    if token_type_ids:
        token_type = node(
            "Gather",
            [const("embeddings.token_type_embeddings.weight", type_table), "token_type_ids"],
            "emb_type",
            axis=0,
        )
    else:
        # no token_type_ids input: every token is of type 0, one row broadcast over the batch
        token_type = const("embeddings.token_type_embeddings.row0", type_table[0].copy())
    summed = node("Add", [node("Add", [word, positions], "emb_wp"), token_type], "emb_sum")
    x = layer_norm(summed, "embeddings.LayerNorm", "emb_out")

    # additive attention mask [batch, 1, 1, seq]: 0 where attended, float32 min where padded
    mask_f = node("Cast", ["attention_mask"], "mask_f", to=TensorProto.FLOAT)
    inverted = node("Sub", ["one_f", mask_f], "mask_inv")
    additive = node("Mul", [inverted, "mask_neg_f"], "mask_add_2d")
    mask_add = node("Unsqueeze", [additive, "axes_1_2"], "mask_add")

    for layer in range(cfg.num_layers):
        p = f"encoder.layer.{layer}"
        t = f"l{layer}"
        q = linear(x, f"{p}.attention.self.query", f"{t}_q")
        k = linear(x, f"{p}.attention.self.key", f"{t}_k")
        v = linear(x, f"{p}.attention.self.value", f"{t}_v")
        q4 = node(
            "Transpose",
            [node("Reshape", [q, "shape_heads"], f"{t}_q4r")],
            f"{t}_q4",
            perm=[0, 2, 1, 3],
        )
        k4 = node(
            "Transpose",
            [node("Reshape", [k, "shape_heads"], f"{t}_k4r")],
            f"{t}_k4",
            perm=[0, 2, 3, 1],
        )
        v4 = node(
            "Transpose",
            [node("Reshape", [v, "shape_heads"], f"{t}_v4r")],
            f"{t}_v4",
            perm=[0, 2, 1, 3],
        )
        scores = node(
            "Mul", [node("MatMul", [q4, k4], f"{t}_qk"), "inv_sqrt_head_f"], f"{t}_scores"
        )
        probs = node(
            "Softmax", [node("Add", [scores, mask_add], f"{t}_masked")], f"{t}_probs", axis=-1
        )
        context = node(
            "Transpose", [node("MatMul", [probs, v4], f"{t}_ctx4")], f"{t}_ctx_t", perm=[0, 2, 1, 3]
        )
        context = node("Reshape", [context, "shape_hidden"], f"{t}_ctx")
        attn = linear(context, f"{p}.attention.output.dense", f"{t}_attn_dense")
        x = layer_norm(
            node("Add", [attn, x], f"{t}_attn_res"),
            f"{p}.attention.output.LayerNorm",
            f"{t}_attn_out",
        )
        inter = linear(x, f"{p}.intermediate.dense", f"{t}_inter")
        # exact (erf) GELU, written in the pattern onnxruntime fuses into one Gelu kernel
        erf = node("Erf", [node("Div", [inter, "sqrt2_f"], f"{t}_gelu_div")], f"{t}_gelu_erf")
        erf_plus_one = node("Add", [erf, "one_f"], f"{t}_gelu_add")
        gelu_unscaled = node("Mul", [inter, erf_plus_one], f"{t}_gelu_mul")
        gelu = node("Mul", [gelu_unscaled, "half_f"], f"{t}_gelu")
        out = linear(gelu, f"{p}.output.dense", f"{t}_out_dense")
        x = layer_norm(node("Add", [out, x], f"{t}_out_res"), f"{p}.output.LayerNorm", f"{t}_out")

    batch_seq = ["batch", "sequence"]
    graph_outputs = []
    pooled: dict[str, str] = {}
    for position, (name, kind) in enumerate(outputs):
        shape: list[str | int]
        if kind == "tokens":
            source, shape = x, [*batch_seq, hidden]
        else:
            if kind not in pooled:
                pooled[kind] = _pooled_output(node, const, x, mask_f, kind, weights)
            source, shape = pooled[kind], ["batch", hidden]
        nodes.append(
            helper.make_node(
                "Identity", [source], [name], name="output" if position == 0 else f"output_{name}"
            )
        )
        graph_outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shape))
    input_names = ["input_ids", "attention_mask"] + (["token_type_ids"] if token_type_ids else [])
    graph = helper.make_graph(
        nodes,
        graph_name,
        inputs=[
            helper.make_tensor_value_info(n, TensorProto.INT64, batch_seq) for n in input_names
        ],
        outputs=graph_outputs,
        initializer=initializers,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name=producer_name
    )
    model.ir_version = IR_VERSION
    # Recorded shapes let onnxruntime fuse Add + LayerNormalization into SkipLayerNormalization.
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    onnx.checker.check_model(model, full_check=True)
    return model


def _pooled_output(
    node: Any, const: Any, x: str, mask_f: str, kind: str, weights: dict[str, np.ndarray]
) -> str:
    """A [batch, hidden] tensor computed from the last hidden state ``x`` inside the graph."""
    if kind in ("cls", "pooler"):
        # (const() stores 0-d arrays as shape [1]: gather [0] and squeeze the axis instead)
        axis1 = const("pool_axes_1", np.array([1], np.int64))
        picked = node(
            "Gather", [x, const("pool_index_0", np.array([0], np.int64))], "first3", axis=1
        )
        first = node("Squeeze", [picked, axis1], "first")
        if kind == "cls":
            return str(first)
        matrix = weights["pooler.dense.weight"].T.astype(np.float32)
        dense = node("MatMul", [first, const("pooler.dense.weight_t", matrix)], "pooler_mm")
        biased = node(
            "Add", [dense, const("pooler.dense.bias", weights["pooler.dense.bias"])], "pooler_add"
        )
        return str(node("Tanh", [biased], "pooler_tanh"))
    # masked mean over the sequence axis
    mask3 = node("Unsqueeze", [mask_f, const("axes_m1", np.array([-1], np.int64))], "mean_mask3")
    masked = node("Mul", [x, mask3], "mean_masked")
    axis1 = const("pool_axes_1", np.array([1], np.int64))
    total = node("ReduceSum", [masked, axis1], "mean_sum", keepdims=0)
    count = node("ReduceSum", [mask3, axis1], "mean_count", keepdims=0)
    floor = const("mean_floor", np.array(1e-9, np.float32))
    return str(node("Div", [total, node("Max", [count, floor], "mean_count_c")], "mean_pooled"))


# --------------------------------------------------------------------------------------------
# float64 numpy reference (independent of onnx / onnxruntime)
# --------------------------------------------------------------------------------------------


def _erf(x: np.ndarray) -> np.ndarray:
    from math import erf

    result: np.ndarray = np.vectorize(erf, otypes=[np.float64])(x)
    return result


def numpy_bert_forward(
    weights: dict[str, np.ndarray], cfg: BertConfig, ids: list[int], type_ids: list[int]
) -> np.ndarray:
    """last_hidden_state [seq, hidden] of one unpadded sequence, in float64."""
    w = {k: v.astype(np.float64) for k, v in weights.items() if v.dtype != np.int64}

    def layer_norm(x: np.ndarray, prefix: str) -> np.ndarray:
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        normed = (x - mean) / np.sqrt(var + cfg.layer_norm_eps)
        result: np.ndarray = normed * w[f"{prefix}.weight"] + w[f"{prefix}.bias"]
        return result

    def linear(x: np.ndarray, prefix: str) -> np.ndarray:
        result: np.ndarray = x @ w[f"{prefix}.weight"].T + w[f"{prefix}.bias"]
        return result

    n = len(ids)
    heads, head_dim = cfg.num_heads, cfg.hidden_size // cfg.num_heads
    x = (
        w["embeddings.word_embeddings.weight"][ids]
        + w["embeddings.position_embeddings.weight"][:n]
        + w["embeddings.token_type_embeddings.weight"][type_ids]
    )
    x = layer_norm(x, "embeddings.LayerNorm")
    for layer in range(cfg.num_layers):
        p = f"encoder.layer.{layer}"
        q = linear(x, f"{p}.attention.self.query").reshape(n, heads, head_dim).transpose(1, 0, 2)
        k = linear(x, f"{p}.attention.self.key").reshape(n, heads, head_dim).transpose(1, 0, 2)
        v = linear(x, f"{p}.attention.self.value").reshape(n, heads, head_dim).transpose(1, 0, 2)
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(head_dim)
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        probs = scores / scores.sum(-1, keepdims=True)
        context = (probs @ v).transpose(1, 0, 2).reshape(n, cfg.hidden_size)
        x = layer_norm(
            linear(context, f"{p}.attention.output.dense") + x, f"{p}.attention.output.LayerNorm"
        )
        inter = linear(x, f"{p}.intermediate.dense")
        gelu = 0.5 * inter * (1.0 + _erf(inter / math.sqrt(2.0)))
        x = layer_norm(linear(gelu, f"{p}.output.dense") + x, f"{p}.output.LayerNorm")
    return x
