"""Weight restrictions in devinterp's vocabulary: ``create_param_masks(model, "l0 attn")``.

A restriction names the weights an SGLD run may move; the rest stay at ``w0``. The result is
devinterp's ``param_masks``: ``{parameter name: None (all of it) or a boolean mask}``.

    "full"       every parameter            "embed"    the token embedding
    "l3"         everything in layer 3      "unembed"  the readout (the tied embedding
    "l3 attn"    layer 3's attention                   when input and output share it)
    "l3 mlp"     layer 3's MLP              "l3h1"     head 1 of layer 3: the rows of the
    [a, b, ...]  the union (masks ORed)                Q/K/V (and O) weights it owns

Three families are known: HuggingFace models by ``config.model_type`` (GPT-2, GPT-NeoX and
the Llama layout of Llama/Mistral/Qwen2), TransformerLens ``HookedTransformer`` (``model.cfg``
with ``n_heads``), and any other module whose layers are an ``nn.ModuleList`` of blocks with an
``nn.MultiheadAttention`` (``nn.TransformerEncoderLayer`` included): there attention is the
``nn.MultiheadAttention`` (or a submodule named ``*attn*``), the MLP the block's other
``Linear`` layers, the embedding the first ``nn.Embedding`` outside the layers, and the
readout the last ``nn.Linear`` outside them that maps to the vocabulary (the last one at all
when there is no embedding).

devinterp differs in one place: a tied GPT-2 has no ``lm_head.weight`` among its (deduplicated)
parameters, so devinterp's ``"unembed"`` selects nothing there; here it selects the shared
weight under its first name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

ParamMasks = dict[str, Tensor | None]


@dataclass
class Spec:
    """Where a model keeps its parts: ``layers`` is the prefix of block ``i`` (``prefix.i.``),
    the others are name suffixes inside a block (attn, mlp, heads) or full names (embed,
    unembed). ``heads[suffix] = (axis, layout)`` with layout ``"plain"`` (heads consecutive
    along the axis), ``"kv"`` (key/value heads of grouped-query attention), ``"concat"`` (Q,
    K, V one after another) or ``"interleaved"`` (per head Q, K, V: GPT-NeoX)."""

    layers: str
    attn: tuple[str, ...]
    mlp: tuple[str, ...]
    embed: tuple[str, ...]
    unembed: tuple[str, ...]
    heads: dict[str, tuple[int, str]] = field(default_factory=dict)
    n_heads: int = 0
    n_kv_heads: int = 0


_LLAMA = dict(
    attn=("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
          "self_attn.o_proj.weight", "self_attn.q_proj.bias", "self_attn.k_proj.bias",
          "self_attn.v_proj.bias"),
    mlp=("mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight"),
    heads={"self_attn.q_proj.weight": (0, "plain"), "self_attn.k_proj.weight": (0, "kv"),
           "self_attn.v_proj.weight": (0, "kv"), "self_attn.o_proj.weight": (1, "plain"),
           "self_attn.q_proj.bias": (0, "plain"), "self_attn.k_proj.bias": (0, "kv"),
           "self_attn.v_proj.bias": (0, "kv")},
    layers="model.layers", embed=("model.embed_tokens.weight",), unembed=("lm_head.weight",),
)

HF_SPECS: dict[str, dict] = {
    "gpt2": dict(
        layers="transformer.h",
        attn=("attn.c_attn.weight", "attn.c_attn.bias", "attn.c_proj.weight",
              "attn.c_proj.bias"),
        mlp=("mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias"),
        # Conv1D weights are (in, out): Q|K|V along the output axis 1, heads of c_proj on 0
        heads={"attn.c_attn.weight": (1, "concat"), "attn.c_attn.bias": (0, "concat"),
               "attn.c_proj.weight": (0, "plain")},
        embed=("transformer.wte.weight",), unembed=("lm_head.weight",),
    ),
    "gpt_neox": dict(
        layers="gpt_neox.layers",
        attn=("attention.query_key_value.weight", "attention.query_key_value.bias",
              "attention.dense.weight", "attention.dense.bias"),
        mlp=("mlp.dense_h_to_4h.weight", "mlp.dense_h_to_4h.bias", "mlp.dense_4h_to_h.weight",
             "mlp.dense_4h_to_h.bias"),
        heads={"attention.query_key_value.weight": (0, "interleaved"),
               "attention.query_key_value.bias": (0, "interleaved"),
               "attention.dense.weight": (1, "plain")},
        embed=("gpt_neox.embed_in.weight",), unembed=("embed_out.weight",),
    ),
    "llama": _LLAMA, "mistral": _LLAMA, "qwen2": _LLAMA,
}

_TRANSFORMER_LENS = dict(
    layers="blocks",
    attn=("attn.W_Q", "attn.W_K", "attn.W_V", "attn.W_O", "attn.b_Q", "attn.b_K", "attn.b_V",
          "attn.b_O", "attn._W_K", "attn._W_V", "attn._b_K", "attn._b_V"),
    mlp=("mlp.W_in", "mlp.W_out", "mlp.W_gate", "mlp.b_in", "mlp.b_out"),
    heads={**{s: (0, "plain") for s in ("attn.W_Q", "attn.W_K", "attn.W_V", "attn.W_O",
                                         "attn.b_Q", "attn.b_K", "attn.b_V")},
           **{s: (0, "kv") for s in ("attn._W_K", "attn._W_V", "attn._b_K", "attn._b_V")}},
    embed=("embed.W_E",), unembed=("unembed.W_U", "unembed.b_U"),
)


def create_param_masks(model: nn.Module, restriction: str | list[str]) -> ParamMasks:
    """devinterp's ``param_masks`` for a restriction (see the module notes for the names).

    A parameter's own name (``"transformer.h.0.attn.c_attn.weight"``) selects it whole.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module; got {type(model).__name__}")
    if isinstance(restriction, list):
        if not restriction:
            raise ValueError("restriction: an empty list selects nothing")
        if "full" in restriction:
            raise ValueError(f"restriction={restriction!r}: 'full' cannot be combined")
        return merge_param_masks([create_param_masks(model, r) for r in restriction])
    if not isinstance(restriction, str):
        raise TypeError(f"restriction: expected a str or a list of str; got "
                        f"{type(restriction).__name__}")
    return _one_restriction(model, restriction)


def _one_restriction(model: nn.Module, restriction: str) -> ParamMasks:
    params = dict(model.named_parameters())
    r = restriction.strip().lower()
    if r == "full":
        return {name: None for name in params}
    if restriction.strip() in params:
        return {restriction.strip(): None}
    spec = model_spec(model)
    aliases = _canonical_names(model)
    if r in ("embed", "unembed"):
        wanted = spec.embed if r == "embed" else spec.unembed
        return _select(params, aliases, lambda n: any(n == w or n.endswith("." + w)
                                                      for w in wanted))
    m = re.fullmatch(r"l(\d+)\s*h(\d+)", r)
    if m:
        return _head_masks(params, spec, _layer(params, spec, int(m[1])), int(m[2]))
    m = re.fullmatch(r"l(\d+)(?:\s+(attn|mlp))?", r)
    if m:
        prefix = f"{spec.layers}.{_layer(params, spec, int(m[1]))}."
        suffixes = {"attn": spec.attn, "mlp": spec.mlp}.get(m[2])
        return _select(params, aliases, lambda n: n.startswith(prefix) and (
            suffixes is None or n[len(prefix):] in suffixes))
    raise ValueError(f"restriction={restriction!r}: expected 'full', 'lN', 'lN attn', "
                     "'lN mlp', 'lNhM', 'embed', 'unembed', a parameter name or a list of these")


def merge_param_masks(parts: list[ParamMasks]) -> ParamMasks:
    """The union of several restrictions: masks of a shared parameter are ORed."""
    out: ParamMasks = {}
    for masks in parts:
        for name, mask in masks.items():
            if name not in out:
                out[name] = mask
            elif out[name] is None or mask is None:
                out[name] = None
            else:
                out[name] = torch.logical_or(out[name], mask)
    return out


def model_spec(model: nn.Module) -> Spec:
    """The :class:`Spec` of a HuggingFace, TransformerLens or plain torch transformer."""
    cfg = getattr(model, "cfg", None)
    if cfg is not None and hasattr(cfg, "n_heads"):
        n = int(cfg.n_heads)
        kv = int(getattr(cfg, "n_key_value_heads", None) or n)
        return Spec(**_TRANSFORMER_LENS, n_heads=n, n_kv_heads=kv)
    config = getattr(model, "config", None)
    kind = getattr(config, "model_type", None)
    if kind is not None:
        if kind not in HF_SPECS:
            raise ValueError(f"model: HuggingFace model_type {kind!r} has no layout here; "
                             f"known: {sorted(HF_SPECS)} (or pass param_masks by hand)")
        n = int(config.num_attention_heads)
        kv = int(getattr(config, "num_key_value_heads", None) or n)
        return Spec(**HF_SPECS[kind], n_heads=n, n_kv_heads=kv)
    return _torch_spec(model)


def _torch_spec(model: nn.Module) -> Spec:
    """The layout of a plain torch model: its first ``ModuleList`` of attention blocks."""
    prefix, block = _first_block(model)
    attn_name, attn = _attention(block)
    attn_params = tuple(f"{attn_name}.{n}" for n, _ in attn.named_parameters())
    mlp = tuple(f"{mn}.{n}" for mn, mod in block.named_modules() if isinstance(mod, nn.Linear)
                and not mn.startswith(attn_name) for n, _ in mod.named_parameters())
    heads = {}
    if isinstance(attn, nn.MultiheadAttention):
        heads = {f"{attn_name}.in_proj_weight": (0, "concat"),
                 f"{attn_name}.in_proj_bias": (0, "concat"),
                 f"{attn_name}.out_proj.weight": (1, "plain")}
    n_heads = int(getattr(attn, "num_heads", 0))
    embed, unembed = _ends(model, prefix)
    return Spec(layers=prefix, attn=attn_params, mlp=mlp, embed=embed, unembed=unembed,
                heads=heads, n_heads=n_heads, n_kv_heads=n_heads)


def _ends(model: nn.Module, prefix: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The token embedding and the readout: modules outside the layer list."""
    outside = [(n, m) for n, m in model.named_modules() if _outside(n, prefix)]
    tokens = [(n, m) for n, m in outside if isinstance(m, nn.Embedding)
              and "pos" not in n.lower()][:1]
    embed = tuple(f"{n}.weight" for n, _ in tokens)
    linears = [(n, m) for n, m in outside if isinstance(m, nn.Linear)]
    vocab = [(n, m) for n, m in linears
             if tokens and m.out_features == tokens[0][1].num_embeddings]
    readout = (vocab or linears)[-1:]
    return embed, tuple(f"{n}.{p}" for n, m in readout for p, _ in m.named_parameters())


def _outside(name: str, prefix: str) -> bool:
    return bool(name) and name != prefix and not name.startswith(prefix + ".")


def _first_block(model: nn.Module) -> tuple[str, nn.Module]:
    """The name of the model's list of attention blocks, and its first block."""
    for prefix, layers in model.named_modules():
        if isinstance(layers, nn.ModuleList) and len(layers) and all(
                _attention(block) is not None for block in layers):
            return prefix, layers[0]
    raise ValueError(f"model: {type(model).__name__} has no nn.ModuleList of blocks with "
                     "attention (nn.MultiheadAttention or a submodule named *attn*), and is "
                     "neither a HuggingFace nor a TransformerLens model")


def _attention(block: nn.Module) -> tuple[str, nn.Module] | None:
    for name, mod in block.named_modules():
        if isinstance(mod, nn.MultiheadAttention):
            return name, mod
    for name, mod in block.named_modules():
        if name and "attn" in name.split(".")[-1].lower():
            return name, mod
    return None


def _canonical_names(model: nn.Module) -> dict[str, str]:
    """Every name a parameter goes by (tied weights have several) -> its first name."""
    first: dict[int, str] = {}
    out = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        out[name] = first.setdefault(id(p), name)
    return out


def _select(params: dict, aliases: dict[str, str], keep) -> ParamMasks:
    chosen = {aliases[n] for n in aliases if keep(n)}
    return {n: None for n in params if n in chosen}


def _layer(params: dict, spec: Spec, layer: int) -> int:
    n_layers = 0
    while any(n.startswith(f"{spec.layers}.{n_layers}.") for n in params):
        n_layers += 1
    if not 0 <= layer < n_layers:
        raise ValueError(f"restriction: layer {layer} out of range (the model has {n_layers} "
                         f"layers under {spec.layers!r})")
    return layer


def _head_masks(params: dict, spec: Spec, layer: int, head: int) -> ParamMasks:
    """Per-element masks of one head's rows (columns) in each head-split weight."""
    if not 0 <= head < spec.n_heads:
        raise ValueError(f"restriction: head {head} out of range (the model has "
                         f"{spec.n_heads} heads)")
    prefix = f"{spec.layers}.{layer}."
    out: ParamMasks = {}
    for name, p in params.items():
        suffix = name[len(prefix):] if name.startswith(prefix) else None
        if suffix not in spec.heads:
            continue
        axis, layout = spec.heads[suffix]
        out[name] = _head_axis_mask(p, axis, layout, head, spec.n_heads, spec.n_kv_heads)
    return out


def _head_axis_mask(p: Tensor, axis: int, layout: str, head: int, n_heads: int,
                    n_kv: int) -> Tensor:
    size = p.shape[axis]
    line = torch.zeros(size, dtype=torch.bool)
    kv_head = head * n_kv // n_heads
    if layout == "interleaved":
        line.view(n_heads, 3, -1)[head] = True
    elif layout == "concat":
        q_size = size * n_heads // (n_heads + 2 * n_kv)
        q, kv = line.split([q_size, size - q_size])
        q.view(n_heads, -1)[head] = True
        kv.view(2, n_kv, -1)[:, kv_head] = True
    elif layout == "kv":
        line.view(n_kv, -1)[kv_head] = True
    else:
        line.view(n_heads, -1)[head] = True
    shape = [1] * p.ndim
    shape[axis] = size
    return line.view(shape).expand_as(p).clone()
