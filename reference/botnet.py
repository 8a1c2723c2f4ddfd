"""Layers from BoTNet (botnet): MHSAWithPositionEmbedding."""

from __future__ import annotations

import numpy as np

from reference import _sampling
from reference._errors import reject
from reference._ops import softmax
from reference._spec import Boolean, Example, Input, Integer, LayerSpec, Maybe, Param, Real, Rejection, Weight, kernel, no_extra_check, vector


def relative_table(table: np.ndarray, size: int) -> np.ndarray:
    """Expand a ``(key_dim, 2*size - 1)`` relative table to ``(key_dim, size, size)``.

    Entry ``[:, i, j]`` is ``table[:, size - 1 + j - i]``: the embedding of the offset from
    query position ``i`` to key position ``j`` along one axis.
    """
    positions = np.arange(size)
    return table[:, size - 1 + positions[None, :] - positions[:, None]]


def position_logits(query: np.ndarray, r_height: np.ndarray, r_width: np.ndarray, relative: bool) -> np.ndarray:
    """Position logits ``[B, heads, H, W, H, W]`` for a (scaled) query ``[B, heads, H, W, d]``.

    The logit of query ``(x, y)`` for key ``(p, q)`` is ``query[x, y] . h + query[x, y] . w``:
    relative, ``h = r_height[:, H-1+p-x]`` and ``w = r_width[:, W-1+q-y]``; absolute,
    ``h = r_height[:, p]`` and ``w = r_width[:, q]`` (the 2021 code adds the two absolute
    tables into one ``(d, H, W)`` table first, which is the same sum).
    """
    height, width = query.shape[2], query.shape[3]
    # Matrix products (BLAS) rather than einsum, whose own loops are several times slower here:
    # relative, row x of the query [W, d] times the table slice [d, H] of offsets from x, and
    # column y of the query [H, d] times the slice [d, W] of offsets from y.
    if relative:
        along_height = query @ relative_table(r_height, height).transpose(1, 0, 2)  # [B, heads, H, W, H]
        along_width = (query.swapaxes(2, 3) @ relative_table(r_width, width).transpose(1, 0, 2)).swapaxes(2, 3)
    else:
        along_height = query @ r_height
        along_width = query @ r_width
    return along_height[..., :, None] + along_width[..., None, :]


def mhsa_with_position_embedding(
    inputs: np.ndarray,
    *,
    weights,
    num_heads=4,
    key_dim=128,
    relative=True,
    out_shape=None,
    out_weight=True,
    out_bias=False,
    attn_dropout=0,
) -> np.ndarray:
    """Multi-head self-attention over all ``H*W`` positions with 2D position logits (BoTNet).

    With ``E = num_heads * key_dim``: ``q, k, v = x @ query, x @ key, x @ value`` (no biases),
    split into heads as channel ``head * key_dim + d``. The query is scaled by
    ``key_dim ** -0.5`` before both the content logits and the position logits. For the
    query at ``(x, y)`` and the key at ``(p, q)``, per head::

        logit = q[x, y] . k[p, q] + q[x, y] . r_height[:, h] + q[x, y] . r_width[:, w]

    with ``h = H - 1 + p - x`` and ``w = W - 1 + q - y`` when ``relative`` (tables
    ``(key_dim, 2H - 1)`` and ``(key_dim, 2W - 1)``), and ``h = p``, ``w = q`` otherwise
    (absolute tables ``(key_dim, H)`` and ``(key_dim, W)``). The softmax runs over the ``H*W``
    keys; heads are concatenated back in the same channel order, then ``@ output_weight`` if
    ``out_weight`` and ``+ output_bias`` if ``out_bias``. ``attn_dropout`` is inactive at inference.
    """
    batch, height, width, _ = inputs.shape
    tokens = height * width

    def split_heads(projected):  # [B, H, W, E] -> [B, heads, H, W, key_dim]
        return projected.reshape(batch, height, width, num_heads, key_dim).transpose(0, 3, 1, 2, 4)

    query = split_heads(inputs @ weights["query"]) * key_dim**-0.5
    key = split_heads(inputs @ weights["key"]).reshape(batch, num_heads, tokens, key_dim)
    value = split_heads(inputs @ weights["value"]).reshape(batch, num_heads, tokens, key_dim)

    logits = query.reshape(batch, num_heads, tokens, key_dim) @ key.swapaxes(-1, -2)
    logits += position_logits(query, weights["r_height"], weights["r_width"], relative).reshape(logits.shape)
    attended = softmax(logits, axis=-1, overwrite=True) @ value  # [B, heads, tokens, key_dim]
    out = attended.transpose(0, 2, 1, 3).reshape(batch, height, width, num_heads * key_dim)
    if out_weight:
        out = out @ weights["output_weight"]
    if out_bias:
        out = out + weights["output_bias"]
    return out


def _output_channels(config) -> int:
    embed = config["num_heads"] * config["key_dim"]
    return config["out_shape"] if config["out_weight"] and config["out_shape"] is not None else embed


def _weights(config, input_shape):
    _, height, width, channels = input_shape
    embed, key_dim = config["num_heads"] * config["key_dim"], config["key_dim"]
    out = _output_channels(config)
    weights = [kernel(name, (channels, embed)) for name in ("query", "key", "value")]
    if config["out_weight"]:
        weights.append(kernel("output_weight", (embed, out)))
    if config["out_bias"]:
        weights.append(vector("output_bias", out))
    table_width = (2 * width - 1, 2 * height - 1) if config["relative"] else (width, height)
    # Drawn at the 2021 initializer's scale, key_dim ** -0.5, so position logits are O(1).
    weights.append(Weight("r_width", (key_dim, table_width[0]), std=key_dim**-0.5))
    weights.append(Weight("r_height", (key_dim, table_width[1]), std=key_dim**-0.5))
    return weights


def _check_config(config):
    embed = config["num_heads"] * config["key_dim"]
    if config["out_shape"] is not None and not config["out_weight"] and config["out_shape"] != embed:
        reject(
            "MHSAWithPositionEmbedding",
            "out_shape",
            config["out_shape"],
            f"needs out_weight=True: without the output projection the output has num_heads * key_dim = {embed} channels",
        )


def output_params(out_shape_sample_max: int) -> tuple[Param, ...]:
    """The output projection's and attention dropout's parameters, shared with HaloAttention
    (the 2021 HaloAttention took MHSA's output arguments unchanged)."""
    return (
        Param(
            "out_shape",
            None,
            Maybe(Integer(minimum=1, sample_range=(1, out_shape_sample_max))),
            "Output channels of `output_weight`; None means `num_heads * key_dim`. Only meaningful with `out_weight`.",
        ),
        Param("out_weight", True, Boolean(), "Apply the output projection `output_weight` (no bias)."),
        Param("out_bias", False, Boolean(), "Add `output_bias` to the output."),
        Param("attn_dropout", 0, Real(0.0, 1.0, sample_range=(0.0, 0.9)), "Dropout rate on the attention weights during training; inactive at inference."),
    )


PARAMS = (
    Param("num_heads", 4, Integer(minimum=1, sample_range=(1, 4)), "Number of attention heads."),
    Param("key_dim", 128, Integer(minimum=1, sample_range=(1, 6)), "Channels per head for query, key and value."),
    Param("relative", True, Boolean(), "Relative position tables `(key_dim, 2W-1)`, `(key_dim, 2H-1)`; absolute `(key_dim, W)`, `(key_dim, H)` when False."),
    *output_params(out_shape_sample_max=10),
)


def _sample_config(draw):
    by_name = {p.name: p for p in PARAMS}
    config = {name: by_name[name].domain.sample(draw, name) for name in ("num_heads", "key_dim", "relative", "out_weight", "out_bias", "attn_dropout")}
    config["out_shape"] = by_name["out_shape"].domain.sample(draw, "out_shape") if config["out_weight"] else None
    return config


MHSA_WITH_POSITION_EMBEDDING = LayerSpec(
    name="MHSAWithPositionEmbedding",
    family="botnet",
    kind="layer",
    summary="Global multi-head self-attention with relative (or absolute) 2D position logits.",
    params=PARAMS,
    inputs=(Input("inputs", "feature_map"),),
    output_kind="feature_map",
    forward=mhsa_with_position_embedding,
    weights=_weights,
    output_shape=lambda config, shape: (*shape[:3], _output_channels(config)),
    check=no_extra_check,
    check_config=_check_config,
    sample_input_shapes=lambda config, draw: (_sampling.feature_map(draw),),
    sample_config=_sample_config,
    examples=(
        Example(
            "readme",
            {"num_heads": 4, "key_dim": 128},
            ((1, 14, 16, 256),),
            source="README usage",
            documented_output_shape=(1, 14, 16, 512),
            documented_weights={
                "query": (256, 512),
                "key": (256, 512),
                "value": (256, 512),
                "output_weight": (512, 512),
                "r_width": (128, 31),
                "r_height": (128, 27),
            },
        ),
        Example("small_relative", {"num_heads": 2, "key_dim": 3}, ((2, 3, 5, 4),), source="spec"),
        Example(
            "small_absolute_out_bias",
            {"num_heads": 1, "key_dim": 4, "relative": False, "out_shape": 6, "out_bias": True},
            ((1, 4, 2, 5),),
            source="spec",
        ),
        Example("small_no_out_weight", {"num_heads": 3, "key_dim": 2, "out_weight": False, "out_bias": True}, ((2, 2, 3, 3),), source="spec"),
    ),
    rejections=(
        Rejection({"num_heads": 0}, ((1, 3, 3, 4),), "num_heads 0 must be >= 1"),
        Rejection({"key_dim": 2.5}, ((1, 3, 3, 4),), "key_dim 2.5 must be an integer"),
        Rejection({"out_shape": 8, "out_weight": False, "num_heads": 2, "key_dim": 2}, ((1, 3, 3, 4),), "out_shape 8 needs out_weight=True"),
        Rejection({"attn_dropout": 1.0}, ((1, 3, 3, 4),), "attn_dropout 1.0 must be a finite real in [0.0, 1.0)"),
        Rejection({}, ((1, 9, 4),), "inputs shape (1, 9, 4) must have rank 4"),
    ),
    notes=(
        "The 2021 code cannot run a relative table on a map of height or width 1 (its reshape trick "
        "leaves no elements); the spec defines it by the same index rule, which then picks the one entry.",
        "Input magnitudes up to 4 (2^2) are promised. The logits are quadratic in the input, and a softmax "
        "turns a relative rounding error u of logits of size L into an output error of about u * L: at "
        "input scale 64 the logits reach ~1e3 and even float64 implementations differ from each other by "
        "~1e-11, so larger inputs test the conditioning of softmax, not the implementation.",
    ),
    input_magnitudes=(2.0**-10, 2.0**2),
)

SPECS = (MHSA_WITH_POSITION_EMBEDDING,)
