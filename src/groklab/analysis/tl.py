"""`groklab export-tl RUN`: a run's Nanda transformer as a TransformerLens HookedTransformer.

TransformerLens (the optional extra `interp`) gives hooks and caches on every activation, so its tools
(activation patching, attention patterns, logit lens) work on a groklab run. Only the `nanda` model maps
exactly: TransformerLens blocks are pre-LayerNorm, while the `power` model normalizes after each residual
addition, so exporting it would silently change its function.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from groklab.config import UserError

TL_ACTIVATIONS = {"relu": "relu", "gelu": "gelu", "silu": "silu"}
"""groklab activations that TransformerLens has under the same function."""

EXPORT_HELP = """\
usage: groklab export-tl RUN [--step N] [--out FILE]

Build a TransformerLens HookedTransformer from a run of the `nanda` model (weights of the newest, or step
N's, checkpoint), check that its last-position logits match groklab's on every example to 1e-4, and save
its state_dict and config to FILE (default RUN/transformer_lens.pt). Needs the `interp` extra.

load it back:
  from transformer_lens import HookedTransformer, HookedTransformerConfig
  saved = torch.load("RUN/transformer_lens.pt")
  model = HookedTransformer(HookedTransformerConfig(**saved["cfg"])); model.load_state_dict(saved["state_dict"])

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
    """HookedTransformerConfig fields for a groklab `nanda` model (1 layer, no LayerNorm, MLP with biases)."""
    if model_cfg.name != "nanda":
        raise UserError(
            f"export-tl supports model.name='nanda', not {model_cfg.name!r}: TransformerLens has no post-LayerNorm blocks like the power model's"
        )
    if model_cfg.activation not in TL_ACTIVATIONS:
        raise UserError(
            f"model.activation={model_cfg.activation!r} has no TransformerLens equivalent: expected one of {', '.join(TL_ACTIVATIONS)}"
        )
    return {
        "n_layers": 1,
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
    block = model.blocks[0]  # type: ignore[index]
    d = model.embed.weight.shape[1]  # type: ignore[union-attr]
    dh = d // n_heads
    # qkv.weight (3·d, d): rows [q heads | k heads | v heads], each head dh rows -> W (heads, d_model, d_head).
    w_q, w_k, w_v = (w.reshape(n_heads, dh, d).transpose(1, 2) for w in block.qkv.weight.detach().chunk(3))
    zeros = torch.zeros(n_heads, dh)
    return {
        "embed.W_E": model.embed.weight.detach(),  # type: ignore[union-attr]
        "pos_embed.W_pos": model.pos.weight.detach(),  # type: ignore[union-attr]
        "blocks.0.attn.W_Q": w_q,
        "blocks.0.attn.W_K": w_k,
        "blocks.0.attn.W_V": w_v,
        "blocks.0.attn.b_Q": zeros,
        "blocks.0.attn.b_K": zeros,
        "blocks.0.attn.b_V": zeros,
        # proj.weight (d, heads·dh) reads the concatenated heads -> W_O (heads, d_head, d_model).
        "blocks.0.attn.W_O": block.proj.weight.detach().T.reshape(n_heads, dh, d),
        "blocks.0.attn.b_O": torch.zeros(d),
        "blocks.0.mlp.W_in": block.fc_in.weight.detach().T,
        "blocks.0.mlp.b_in": block.fc_in.bias.detach(),
        "blocks.0.mlp.W_out": block.fc_out.weight.detach().T,
        "blocks.0.mlp.b_out": block.fc_out.bias.detach(),
        "unembed.W_U": model.unembed.weight.detach().T,  # type: ignore[union-attr]
        "unembed.b_U": torch.zeros(model.unembed.weight.shape[0]),  # type: ignore[union-attr]
    }


def to_hooked_transformer(run: Any, step: int | None = None, atol: float = 1e-4) -> tuple[Any, dict[str, Any], float]:
    """(HookedTransformer, its config fields, max |logit difference| over every example) for a nanda run.

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
    hooked.eval()
    with torch.no_grad():
        ours = model(data.x)  # (N, n_classes)
        theirs = hooked(data.x)[:, -1]  # (N, n_classes) at the answer position
    diff = float((ours - theirs).abs().max())
    if not diff <= atol:
        raise UserError(
            f"the TransformerLens model's logits differ from groklab's by {diff:.3g} (> {atol:g}); please report this run's config"
        )
    return hooked, cfg, diff


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
    hooked, cfg, diff = to_hooked_transformer(load_run(path), step)
    out = Path(str(known.get("out", path / "transformer_lens.pt")))
    import io

    buf = io.BytesIO()
    torch.save({"cfg": cfg, "state_dict": hooked.state_dict()}, buf)
    atomic_write_bytes(out, buf.getvalue())
    print(f"wrote {out}: HookedTransformer with logits within {diff:.2g} of groklab's on every example")
