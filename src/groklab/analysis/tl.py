"""`groklab export-tl RUN`: a run's transformer as a TransformerLens HookedTransformer.

TransformerLens (the optional extra `interp`) gives hooks and caches on every activation, so its tools
(activation patching, attention patterns, logit lens) work on a groklab run. A transformer without LayerNorm
(model.norm=none, Nanda's) maps onto a plain HookedTransformer, a pre-LayerNorm one (model.norm=pre) onto one with
TransformerLens's own LayerNorms. A post-LayerNorm one (model.norm=post, Power's) normalizes *after* each residual
addition (x = LN(x + attn(x)); x = LN(x + mlp(x))), which TransformerLens's blocks cannot express; it becomes a
HookedTransformer without LayerNorms plus permanent hooks on `blocks.i.hook_resid_mid` and
`blocks.i.hook_resid_post` that apply the run's LayerNorms there, so those hook points carry the normalized stream
that the next layer reads. `load_hooked` rebuilds any of them from the saved file, hooks included.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from groklab.errors import UserError, first_line

TL_ACTIVATIONS = {"relu": "relu", "gelu": "gelu", "silu": "silu"}
"""groklab activations that TransformerLens has under the same function."""


def require_transformer_lens() -> Any:
    try:
        import transformer_lens
    except ImportError:
        raise UserError("export-tl needs TransformerLens: pip install -e .[interp]") from None
    return transformer_lens


def tl_config(model_cfg: Any, vocab_size: int, n_classes: int, seq_len: int) -> dict[str, Any]:
    """HookedTransformerConfig fields for a groklab transformer: TransformerLens's LayerNorms for pre-LN, none otherwise
    (post-LN's run as hooks, see `post_layernorms`), biases zero where groklab has none."""
    if model_cfg.name != "transformer":
        raise UserError(f"export-tl supports model.name='transformer', not {model_cfg.name!r}")
    if model_cfg.activation not in TL_ACTIVATIONS:
        raise UserError(
            f"model.activation={model_cfg.activation!r} has no TransformerLens equivalent: expected one of {', '.join(TL_ACTIVATIONS)}"
        )
    return {
        "n_layers": model_cfg.n_layers,
        "d_model": model_cfg.d_model,
        "d_head": model_cfg.d_model // model_cfg.n_heads,
        "n_heads": model_cfg.n_heads,
        "d_mlp": model_cfg.d_mlp,
        "d_vocab": vocab_size,
        "d_vocab_out": n_classes,
        "n_ctx": seq_len,
        "act_fn": TL_ACTIVATIONS[model_cfg.activation],
        "normalization_type": "LN" if model_cfg.norm == "pre" else None,
        "positional_embedding_type": "standard",
        "default_prepend_bos": False,
        "dtype": torch.float32,
    }


def tl_state_dict(model: torch.nn.Module, n_heads: int) -> dict[str, torch.Tensor]:
    """groklab Transformer weights renamed and reshaped to TransformerLens's layout (heads as a leading axis)."""
    d = model.embed.weight.shape[1]  # type: ignore[union-attr]
    dh = d // n_heads
    zeros = torch.zeros(n_heads, dh)

    def bias(linear: torch.nn.Linear) -> torch.Tensor:
        return torch.zeros(linear.out_features) if linear.bias is None else linear.bias.detach()

    def ln(prefix: str, layer: Any) -> dict[str, torch.Tensor]:  # a pre-LN model's LayerNorm as TransformerLens names it
        return {f"{prefix}.w": layer.weight.detach(), f"{prefix}.b": layer.bias.detach()} if isinstance(layer, torch.nn.LayerNorm) else {}

    state = {
        **ln("ln_final", model.ln_final),
        "embed.W_E": model.embed.weight.detach(),  # type: ignore[union-attr]
        "pos_embed.W_pos": model.pos.weight.detach(),  # type: ignore[union-attr]
        "unembed.W_U": model.unembed.weight.detach().T,  # type: ignore[union-attr]
        "unembed.b_U": torch.zeros(model.unembed.weight.shape[0]),  # type: ignore[union-attr]
    }
    for i, block in enumerate(model.blocks):  # type: ignore[union-attr, arg-type]
        # qkv.weight (3·d, d): rows [q heads | k heads | v heads], each head dh rows -> W (heads, d_model, d_head).
        w_q, w_k, w_v = (w.reshape(n_heads, dh, d).transpose(1, 2) for w in block.qkv.weight.detach().chunk(3))
        state |= {
            f"blocks.{i}.attn.W_Q": w_q, f"blocks.{i}.attn.W_K": w_k, f"blocks.{i}.attn.W_V": w_v,
            f"blocks.{i}.attn.b_Q": zeros, f"blocks.{i}.attn.b_K": zeros, f"blocks.{i}.attn.b_V": zeros,
            # proj.weight (d, heads·dh) reads the concatenated heads -> W_O (heads, d_head, d_model).
            f"blocks.{i}.attn.W_O": block.proj.weight.detach().T.reshape(n_heads, dh, d),
            f"blocks.{i}.attn.b_O": torch.zeros(d),
            f"blocks.{i}.mlp.W_in": block.fc_in.weight.detach().T, f"blocks.{i}.mlp.b_in": bias(block.fc_in),
            f"blocks.{i}.mlp.W_out": block.fc_out.weight.detach().T, f"blocks.{i}.mlp.b_out": bias(block.fc_out),
        }  # fmt: skip
        if block.pre_norm:
            state |= ln(f"blocks.{i}.ln1", block.ln_attn) | ln(f"blocks.{i}.ln2", block.ln_mlp)
    return state


def post_layernorms(model: torch.nn.Module) -> dict[str, dict[str, Any]]:
    """A post-LN model's LayerNorms by the TransformerLens hook point they apply at: after attention's residual
    addition (hook_resid_mid) and after the MLP's (hook_resid_post). Empty for the others."""
    norms = {}
    for i, block in enumerate(model.blocks):  # type: ignore[union-attr, arg-type]
        for point, ln in (("hook_resid_mid", block.ln_attn), ("hook_resid_post", block.ln_mlp)):
            if isinstance(ln, torch.nn.LayerNorm) and not block.pre_norm:
                norms[f"blocks.{i}.{point}"] = {"weight": ln.weight.detach().clone(), "bias": ln.bias.detach().clone(), "eps": ln.eps}
    return norms


def add_post_layernorms(hooked: Any, norms: dict[str, dict[str, Any]]) -> None:
    """Permanent hooks that replace each listed activation by its LayerNorm (they survive `reset_hooks()`)."""
    for name, ln in norms.items():

        def normalize(act: torch.Tensor, hook: Any, ln: dict[str, Any] = ln) -> torch.Tensor:
            return F.layer_norm(act, act.shape[-1:], ln["weight"], ln["bias"], ln["eps"])

        hooked.add_perma_hook(name, normalize)


def load_hooked(path: str | Path) -> Any:
    """The HookedTransformer that `groklab export-tl` saved at `path`, with a post-LN model's LayerNorm hooks."""
    from groklab.runio import UnreadableCheckpoint, load_plain

    tl = require_transformer_lens()
    saved = load_plain(Path(path))  # weights-only: an export from someone else is data, never code
    if not isinstance(saved, dict) or not isinstance(saved.get("cfg"), dict) or not isinstance(saved.get("state_dict"), dict):
        raise UnreadableCheckpoint(f"{path} is not a groklab export-tl file (no cfg and state_dict tables)")
    try:
        hooked = tl.HookedTransformer(tl.HookedTransformerConfig(**saved["cfg"]))
        hooked.load_state_dict(saved["state_dict"])
    except (TypeError, ValueError, RuntimeError, AssertionError) as err:  # plain data, but not a model TransformerLens can build
        raise UnreadableCheckpoint(f"{path} does not describe a HookedTransformer: {first_line(err)}") from None
    add_post_layernorms(hooked, saved.get("post_layernorm", {}))
    return hooked.eval()


def to_hooked_transformer(run: Any, step: int | None = None, atol: float = 1e-4) -> tuple[Any, dict[str, Any], float]:
    """(HookedTransformer, what `load_hooked` reads back, max |logit difference| over every example) for a transformer run.

    Raises UserError if the logits differ from groklab's by more than `atol` anywhere.
    """
    tl = require_transformer_lens()
    from groklab.data import build_task
    from groklab.models import load_model

    data = build_task(run.config.task, run.config.split_seed)
    model = load_model(run, step).eval()
    cfg = tl_config(run.config.model, data.vocab_size, data.n_classes, data.x.shape[1])
    hooked = tl.HookedTransformer(tl.HookedTransformerConfig(**cfg))
    state = hooked.state_dict()  # keeps TransformerLens's own buffers (masks, IGNORE) as they are
    state.update(tl_state_dict(model, run.config.model.n_heads))
    hooked.load_state_dict(state)
    norms = post_layernorms(model)
    add_post_layernorms(hooked, norms)
    hooked.eval()
    with torch.no_grad():
        ours = model(data.x)  # (N, n_classes)
        theirs = hooked(data.x)[:, -1]  # (N, n_classes) at the answer position
    diff = float((ours - theirs).abs().max())
    if not diff <= atol:
        raise UserError(
            f"the TransformerLens model's logits differ from groklab's by {diff:.3g} (> {atol:g}); please report this run's config"
        )
    return hooked, {"cfg": cfg, "state_dict": hooked.state_dict(), "post_layernorm": norms}, diff


def export_tl(run_dir: Path, out: Path | None = None, step: int | None = None) -> tuple[Path, float]:
    """Save the run's (step's) transformer for `load_hooked` to `out` (default RUN/transformer_lens.pt).

    Returns (the file written, max |logit difference| from groklab's over every example).
    """
    import io

    from groklab.runio import atomic_write_bytes, load_run

    _, export, diff = to_hooked_transformer(load_run(run_dir), step)
    out = run_dir / "transformer_lens.pt" if out is None else out
    buf = io.BytesIO()
    torch.save(export, buf)
    atomic_write_bytes(out, buf.getvalue())
    return out, diff
