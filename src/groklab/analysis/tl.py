"""`groklab export-tl RUN`: a run's transformer (Nanda's or Power's) as a TransformerLens HookedTransformer.

TransformerLens (the optional extra `interp`) gives hooks and caches on every activation, so its tools
(activation patching, attention patterns, logit lens) work on a groklab run. The `nanda` model (no LayerNorm)
maps onto a plain HookedTransformer. The `power` model normalizes *after* each residual addition
(x = LN(x + attn(x)); x = LN(x + mlp(x))), which TransformerLens's pre-LayerNorm blocks cannot express; it becomes
a HookedTransformer without LayerNorms plus permanent hooks on `blocks.i.hook_resid_mid` and
`blocks.i.hook_resid_post` that apply the run's LayerNorms there, so those hook points carry the normalized stream
that the next layer reads. `load_hooked` rebuilds either from the saved file, hooks included.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from groklab.errors import UserError

TL_ACTIVATIONS = {"relu": "relu", "gelu": "gelu", "silu": "silu"}
"""groklab activations that TransformerLens has under the same function."""

EXPORT_HELP = """\
usage: groklab export-tl RUN [--step N] [--out FILE]

Build a TransformerLens HookedTransformer from a run of the `nanda` or `power` model (weights of the newest,
or step N's, checkpoint), check that its last-position logits match groklab's on every example to 1e-4, and
save its config, state_dict and the power model's post-residual LayerNorms to FILE (default
RUN/transformer_lens.pt). The power model's LayerNorms come after each residual addition, which TransformerLens
blocks cannot express: they run as permanent hooks on blocks.i.hook_resid_mid and blocks.i.hook_resid_post.
Needs the `interp` extra.

load it back (hooks included):
  from groklab.analysis.tl import load_hooked
  model = load_hooked("RUN/transformer_lens.pt")

examples:
  groklab export-tl runs/nanda
  groklab export-tl runs/nanda --step 4096 --out nanda-4096.pt
"""


def require_transformer_lens() -> Any:
    try:
        import transformer_lens
    except ImportError:
        raise UserError("export-tl needs TransformerLens: pip install -e .[interp]") from None
    return transformer_lens


def tl_config(model_cfg: Any, vocab_size: int, n_classes: int, seq_len: int) -> dict[str, Any]:
    """HookedTransformerConfig fields for a groklab transformer: no LayerNorm of TransformerLens's own (the power
    model's run as hooks, see `post_layernorms`), biases zero where groklab has none."""
    if model_cfg.name not in ("nanda", "power"):
        raise UserError(f"export-tl supports the transformers, model.name='nanda' or 'power', not {model_cfg.name!r}")
    if model_cfg.activation not in TL_ACTIVATIONS:
        raise UserError(
            f"model.activation={model_cfg.activation!r} has no TransformerLens equivalent: expected one of {', '.join(TL_ACTIVATIONS)}"
        )
    return {
        "n_layers": 1 if model_cfg.name == "nanda" else model_cfg.n_layers,
        "d_model": model_cfg.d_model,
        "d_head": model_cfg.d_model // model_cfg.n_heads,
        "n_heads": model_cfg.n_heads,
        "d_mlp": model_cfg.d_mlp,
        "d_vocab": vocab_size,
        "d_vocab_out": n_classes,
        "n_ctx": seq_len,
        "act_fn": TL_ACTIVATIONS[model_cfg.activation],
        "normalization_type": None,
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

    state = {
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
    return state


def post_layernorms(model: torch.nn.Module) -> dict[str, dict[str, Any]]:
    """The power model's LayerNorms by the TransformerLens hook point they apply at: after attention's residual
    addition (hook_resid_mid) and after the MLP's (hook_resid_post). Empty for the nanda model."""
    norms = {}
    for i, block in enumerate(model.blocks):  # type: ignore[union-attr, arg-type]
        for point, ln in (("hook_resid_mid", block.ln_attn), ("hook_resid_post", block.ln_mlp)):
            if isinstance(ln, torch.nn.LayerNorm):
                norms[f"blocks.{i}.{point}"] = {"weight": ln.weight.detach().clone(), "bias": ln.bias.detach().clone(), "eps": ln.eps}
    return norms


def add_post_layernorms(hooked: Any, norms: dict[str, dict[str, Any]]) -> None:
    """Permanent hooks that replace each listed activation by its LayerNorm (they survive `reset_hooks()`)."""
    for name, ln in norms.items():

        def normalize(act: torch.Tensor, hook: Any, ln: dict[str, Any] = ln) -> torch.Tensor:
            return F.layer_norm(act, act.shape[-1:], ln["weight"], ln["bias"], ln["eps"])

        hooked.add_perma_hook(name, normalize)


def load_hooked(path: str | Path) -> Any:
    """The HookedTransformer that `groklab export-tl` saved at `path`, with the power model's LayerNorm hooks."""
    tl = require_transformer_lens()
    saved = torch.load(path, weights_only=False)
    hooked = tl.HookedTransformer(tl.HookedTransformerConfig(**saved["cfg"]))
    hooked.load_state_dict(saved["state_dict"])
    add_post_layernorms(hooked, saved.get("post_layernorm", {}))
    return hooked.eval()


def to_hooked_transformer(run: Any, step: int | None = None, atol: float = 1e-4) -> tuple[Any, dict[str, Any], float]:
    """(HookedTransformer, what `load_hooked` reads back, max |logit difference| over every example) for a transformer run.

    Raises UserError if the logits differ from groklab's by more than `atol` anywhere.
    """
    tl = require_transformer_lens()
    from groklab.data import build_task

    data = build_task(run.config.task, run.config.split_seed)
    model = run.load_model(step).eval()
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


def command(args: list[str]) -> None:
    """`groklab export-tl RUN [--step N] [--out FILE]`."""
    if not args or "--help" in args or "-h" in args:
        print(EXPORT_HELP)
        if not args:
            raise UserError("groklab export-tl needs a run directory: groklab export-tl RUN")
        return
    from groklab.cli import int_option, parse_options
    from groklab.runio import atomic_write_bytes, load_run

    known, unknown = parse_options(args[1:], flags=set(), options={"step", "out"})
    if unknown:
        raise UserError(f"unknown option --{next(iter(unknown))} for groklab export-tl: expected --step N, --out FILE")
    path = Path(args[0])
    if not path.is_dir():
        raise UserError(f"{path} is not a directory holding a groklab run")
    step = int_option(known, "step", "an integer step with a model checkpoint")
    require_transformer_lens()
    _, export, diff = to_hooked_transformer(load_run(path), step)
    out = Path(str(known.get("out", path / "transformer_lens.pt")))
    import io

    buf = io.BytesIO()
    torch.save(export, buf)
    atomic_write_bytes(out, buf.getvalue())
    print(f"wrote {out}: HookedTransformer with logits within {diff:.2g} of groklab's on every example")
