"""Layers from HaloNet (halonet): HaloAttention."""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from reference import _sampling
from reference._conv import pad
from reference._errors import reject
from reference._ops import softmax
from reference._spec import Example, Input, Integer, LayerSpec, Param, Rejection, Weight, kernel, vector
from reference.botnet import output_params

LAYER = "HaloAttention"


def window_relative_table(table: np.ndarray, block_size: int, window: int) -> np.ndarray:
    """Expand a ``(key_dim, 2*window - 1)`` relative table to ``(key_dim, block_size, window)``.

    Entry ``[:, i, j]`` is ``table[:, window - 1 + j - i]``, for a query at position ``i``
    inside its block and a key at position ``j`` inside its window, along one axis.
    """
    query_positions = np.arange(block_size)
    key_positions = np.arange(window)
    return table[:, window - 1 + key_positions[None, :] - query_positions[:, None]]


def halo_windows(projected: np.ndarray, block_size: int, halo_size: int) -> np.ndarray:
    """``[B, H, W, C]`` -> ``[B, H/b, W/b, win, win, C]`` with ``b = block_size`` and
    ``win = b + 2 * halo_size``.

    Window ``(r, c)`` entry ``(u, v)`` is ``projected[:, r*b - halo_size + u, c*b - halo_size + v]``,
    and zero where that pixel lies outside the map.
    """
    window = block_size + 2 * halo_size
    padded = pad(projected, ((halo_size, halo_size), (halo_size, halo_size)))
    windows = sliding_window_view(padded, (window, window), axis=(1, 2))[:, ::block_size, ::block_size]
    return np.moveaxis(windows, 3, -1)  # sliding_window_view puts the window axes after the channels


def window_position_logits(query: np.ndarray, r_height: np.ndarray, r_width: np.ndarray, window: int) -> np.ndarray:
    """Position logits ``[..., b, b, win, win]`` for a (scaled) blocked query ``[..., b, b, d]``.

    The logit of the query at ``(x, y)`` inside its block for the key at ``(u, v)`` inside its
    window is ``query[x, y] . r_height[:, win-1+u-x] + query[x, y] . r_width[:, win-1+v-y]``.
    """
    block_size = query.shape[-2]
    # Matrix products (BLAS) rather than einsum, whose own loops are slower: row x of the block
    # [b, d] times the table slice [d, win] for x, and column y [b, d] times the slice for y.
    along_height = query @ window_relative_table(r_height, block_size, window).transpose(1, 0, 2)  # [..., b, b, win]
    along_width = (query.swapaxes(-3, -2) @ window_relative_table(r_width, block_size, window).transpose(1, 0, 2)).swapaxes(-3, -2)
    return along_height[..., :, None] + along_width[..., None, :]


def halo_attention(
    inputs: np.ndarray,
    *,
    weights,
    num_heads=4,
    key_dim=128,
    block_size=2,
    halo_size=1,
    out_shape=None,
    out_weight=True,
    out_bias=False,
    attn_dropout=0,
) -> np.ndarray:
    """Blocked local multi-head self-attention with a halo (HaloNet).

    Notation: inputs ``x`` are ``[B, H, W, C]``; ``b = block_size``, ``h = halo_size``,
    ``win = b + 2h``, ``E = num_heads * key_dim``. H and W are multiples of b.

    1. Projections, with no biases: ``q = x @ query`` ``[B, H, W, E]``, multiplied by
       ``key_dim ** -0.5``; ``kv = x @ key_value`` ``[B, H, W, 2E]``. Query channel
       ``n * key_dim + d`` belongs to head n. The key_value columns are grouped by head:
       column ``n * 2 * key_dim + d`` is the key of head n and column
       ``n * 2 * key_dim + key_dim + d`` its value.
    2. Query blocks: the map is cut into ``H/b x W/b`` non-overlapping ``b x b`` blocks;
       block ``(r, c)`` holds the queries at pixels ``(r*b + x, c*b + y)``, x, y in [0, b).
    3. Key/value windows: ``kv`` is zero-padded by h pixels on every side (after the
       projection, so padded keys and values are exactly zero). The window of block ``(r, c)``
       holds the ``win x win`` pixels ``(r*b - h + u, c*b - h + v)``, u, v in [0, win), zero
       outside the map. Windows of neighbouring blocks overlap by 2h pixels; with h > b a window
       reaches past the next block.
    4. Logits, per head, for the query at ``(x, y)`` of a block and the key at ``(u, v)`` of
       its window, with the scaled ``q`` in all three terms::

           q . key  +  q . r_height[:, win-1+u-x]  +  q . r_width[:, win-1+v-y]

       The tables are ``(key_dim, 2*win - 1)``. Only their columns ``2h .. 2*win - 2`` are ever
       read (``u - x`` runs from ``-(b-1)`` to ``win-1``).
    5. Softmax over the ``win * win`` keys of the window. The padding is not masked: a padded
       key has content logit 0 and value 0, but keeps its position logits and takes its share
       of the softmax. Each head's output is the softmax-weighted sum of the window's values;
       heads are concatenated in channel order ``n * key_dim + d`` and every query goes back to
       its pixel ``(r*b + x, c*b + y)``, giving ``[B, H, W, E]``.
    6. ``@ output_weight`` ``(E, out)`` if ``out_weight``; then ``+ output_bias`` if
       ``out_bias``. ``out`` is ``out_shape``, or E when ``out_shape`` is None or ``out_weight``
       is False. ``attn_dropout`` is inactive at inference.
    """
    batch, height, width, _ = inputs.shape
    rows, cols, window = height // block_size, width // block_size, block_size + 2 * halo_size

    query = (inputs @ weights["query"]) * key_dim**-0.5
    query = query.reshape(batch, rows, block_size, cols, block_size, num_heads, key_dim)
    query = query.transpose(0, 5, 1, 3, 2, 4, 6)  # [B, heads, rows, cols, b, b, key_dim]

    windows = halo_windows(inputs @ weights["key_value"], block_size, halo_size)  # [B, rows, cols, win, win, 2E]
    windows = windows.reshape(batch, rows, cols, window * window, num_heads, 2, key_dim)
    key, value = windows.transpose(5, 0, 4, 1, 2, 3, 6)  # each [B, heads, rows, cols, win*win, key_dim]

    flat_query = query.reshape(batch, num_heads, rows, cols, block_size * block_size, key_dim)
    logits = flat_query @ key.swapaxes(-1, -2)  # [B, heads, rows, cols, b*b, win*win]
    logits += window_position_logits(query, weights["r_height"], weights["r_width"], window).reshape(logits.shape)
    attended = softmax(logits, axis=-1, overwrite=True) @ value  # [B, heads, rows, cols, b*b, key_dim]

    out = attended.reshape(batch, num_heads, rows, cols, block_size, block_size, key_dim)
    out = out.transpose(0, 2, 4, 3, 5, 1, 6).reshape(batch, height, width, num_heads * key_dim)
    if out_weight:
        out = out @ weights["output_weight"]
    if out_bias:
        out = out + weights["output_bias"]
    return out


def _output_channels(config) -> int:
    embed = config["num_heads"] * config["key_dim"]
    return config["out_shape"] if config["out_weight"] and config["out_shape"] is not None else embed


def _weights(config, input_shape):
    channels = input_shape[-1]
    embed, key_dim = config["num_heads"] * config["key_dim"], config["key_dim"]
    window = config["block_size"] + 2 * config["halo_size"]
    out = _output_channels(config)
    weights = [kernel("query", (channels, embed)), kernel("key_value", (channels, 2 * embed))]
    if config["out_weight"]:
        weights.append(kernel("output_weight", (embed, out)))
    if config["out_bias"]:
        weights.append(vector("output_bias", out))
    # Drawn at the 2021 initializer's scale, key_dim ** -0.5, so position logits are O(1).
    weights.append(Weight("r_width", (key_dim, 2 * window - 1), std=key_dim**-0.5))
    weights.append(Weight("r_height", (key_dim, 2 * window - 1), std=key_dim**-0.5))
    return weights


def _check(config, input_shape):
    _, height, width, _ = input_shape
    block_size = config["block_size"]
    for axis, size in (("height", height), ("width", width)):
        if size % block_size:
            reject(LAYER, axis, size, f"is not a multiple of block_size {block_size}")


def _check_config(config):
    embed = config["num_heads"] * config["key_dim"]
    if config["out_shape"] is not None and not config["out_weight"] and config["out_shape"] != embed:
        reject(
            LAYER,
            "out_shape",
            config["out_shape"],
            f"needs out_weight=True: without the output projection the output has num_heads * key_dim = {embed} channels",
        )


PARAMS = (
    Param("num_heads", 4, Integer(minimum=1, sample_range=(1, 3)), "Number of attention heads."),
    Param("key_dim", 128, Integer(minimum=1, sample_range=(1, 4)), "Channels per head for query, key and value."),
    Param("block_size", 2, Integer(minimum=1, sample_range=(1, 4)), "Side of the square query blocks; height and width must be multiples of it."),
    Param(
        "halo_size",
        1,
        Integer(minimum=0, sample_range=(0, 3)),
        "Pixels each key/value window extends past its block on every side; windows are `block_size + 2 * halo_size` wide.",
    ),
    *output_params(out_shape_sample_max=8),
)


def _sample_config(draw):
    by_name = {p.name: p for p in PARAMS}
    # The halo is drawn before the block so that the "distinct" edge draw gives a halo larger
    # than its block.
    drawn = ("num_heads", "key_dim", "halo_size", "block_size", "out_weight", "out_bias", "attn_dropout")
    config = {name: by_name[name].domain.sample(draw, name) for name in drawn}
    config["out_shape"] = by_name["out_shape"].domain.sample(draw, "out_shape") if config["out_weight"] else None
    return config


def _sample_input_shapes(config, draw):
    # Whole blocks per side keep every drawn map in the domain; three per side is enough for a
    # window to reach over a neighbouring block into the next one.
    block_size = config["block_size"]
    height = block_size * draw.integer("height blocks", 1, 3)
    width = block_size * draw.integer("width blocks", 1, 3)
    return ((_sampling.batch(draw), height, width, _sampling.channels(draw)),)


HALO_ATTENTION = LayerSpec(
    name=LAYER,
    family="halonet",
    kind="layer",
    summary="Multi-head self-attention of each block of queries over a haloed window of keys, with relative 2D position logits.",
    params=PARAMS,
    inputs=(Input("inputs", "feature_map"),),
    output_kind="feature_map",
    forward=halo_attention,
    weights=_weights,
    output_shape=lambda config, shape: (*shape[:3], _output_channels(config)),
    check=_check,
    check_config=_check_config,
    sample_input_shapes=_sample_input_shapes,
    sample_config=_sample_config,
    examples=(
        Example(
            "readme",
            {},
            ((1, 14, 16, 256),),
            source="README usage",
            documented_output_shape=(1, 14, 16, 512),
            documented_weights={
                "query": (256, 512),
                "key_value": (256, 1024),
                "output_weight": (512, 512),
                "r_width": (128, 7),
                "r_height": (128, 7),
            },
            fixture=False,
        ),
        # The README configuration on a map of two blocks (so one window reads the other's
        # halo): every weight keeps its README shape, and the fixture stays small.
        Example("readme_config", {}, ((1, 2, 4, 256),), source="README usage"),
        Example("small_halo_1", {"num_heads": 2, "key_dim": 3, "block_size": 2, "halo_size": 1}, ((2, 4, 6, 5),), source="spec"),
        Example(
            "halo_0_out_bias",
            {"num_heads": 1, "key_dim": 4, "block_size": 3, "halo_size": 0, "out_shape": 5, "out_bias": True},
            ((1, 3, 6, 4),),
            source="spec",
        ),
        Example(
            "halo_above_block_no_out_weight",
            {"num_heads": 3, "key_dim": 2, "block_size": 2, "halo_size": 3, "out_weight": False, "out_bias": True},
            ((1, 6, 4, 3),),
            source="spec",
        ),
    ),
    rejections=(
        Rejection({"block_size": 4}, ((1, 14, 16, 8),), "height 14 is not a multiple of block_size 4"),
        Rejection({"block_size": 4}, ((1, 8, 6, 8),), "width 6 is not a multiple of block_size 4"),
        Rejection({"num_heads": 0}, ((1, 4, 4, 3),), "num_heads 0 must be >= 1"),
        Rejection({"key_dim": 1.5}, ((1, 4, 4, 3),), "key_dim 1.5 must be an integer"),
        Rejection({"block_size": 0}, ((1, 4, 4, 3),), "block_size 0 must be >= 1"),
        Rejection({"halo_size": -1}, ((1, 4, 4, 3),), "halo_size -1 must be >= 0"),
        Rejection({"out_shape": 0}, ((1, 4, 4, 3),), "out_shape 0 must be >= 1"),
        Rejection({"num_heads": 2, "key_dim": 2, "out_shape": 8, "out_weight": False}, ((1, 4, 4, 3),), "out_shape 8 needs out_weight=True"),
        Rejection({"out_bias": 1}, ((1, 4, 4, 3),), "out_bias 1 must be True or False"),
        Rejection({"attn_dropout": 1.0}, ((1, 4, 4, 3),), "attn_dropout 1.0 must be a finite real in [0.0, 1.0)"),
        Rejection({}, ((1, 16, 4),), "inputs shape (1, 16, 4) must have rank 4"),
    ),
    notes=(
        "The default `out_shape` is `num_heads * key_dim`, as the README shows (`[1, 14, 16, 512]` "
        "and `output_weight (512, 512)` on a 256-channel input); the 2021 code used the input "
        "channels instead.",
        "With `out_weight=False` the output has `num_heads * key_dim` channels (the rule of "
        "MHSAWithPositionEmbedding), and an `out_shape` that contradicts it is rejected. The 2021 "
        "code declared the input channels instead, so its `output_bias` only fit when the input "
        "had `num_heads * key_dim` channels.",
        "The `key_value` kernel is grouped by head (key then value within each head), as the 2021 "
        "code's reshape to `[..., num_heads, 2 * key_dim]` followed by a split in two reads it.",
        "The relative index `win - 1 + j - i` is the 2021 code's (its rel-to-abs reshape; timm's "
        "HaloAttn indexes the same way). It is not centred on the query: the first `2 * halo_size` "
        "columns of each table are never read, but they remain weights of the layer.",
        "The 2021 code cannot run `block_size=1` (its rel-to-abs reshape comes out one column "
        "short); the spec defines it by the same index rule.",
        "Height and width must be multiples of `block_size`; the 2021 code failed inside a reshape "
        "(HaloNet pads its feature maps up to a multiple before the attention).",
        "Input magnitudes up to 4 (2^2) are promised, as for MHSAWithPositionEmbedding: the logits are "
        "quadratic in the input, and a softmax turns a relative rounding error u of logits of size L into "
        "an output error of about u * L. In the README configuration a float32 implementation uses about "
        "half the float32 tolerance at input scale 4, 1.4 times it at 8 and 5 times it at 16; at 64 even "
        "two float64 implementations differ by 15 times the float64 tolerance.",
    ),
    input_magnitudes=(2.0**-10, 2.0**2),
)

SPECS = (HALO_ATTENTION,)
