"""Presets: small named Configs that override few fields. `groklab presets` lists them."""

from __future__ import annotations

from dataclasses import dataclass

from groklab.config import Config, ModelConfig, OptimConfig, TaskConfig, UserError


@dataclass(frozen=True)
class Preset:
    description: str
    config: Config


POWER_MODEL = ModelConfig(name="transformer", d_model=128, n_layers=2, n_heads=4, d_mlp=512, norm="post", mlp_bias=False, init="torch")
NANDA_MODEL = ModelConfig(name="transformer", d_model=128, n_layers=1, n_heads=4, d_mlp=512, norm="none", mlp_bias=True, init="normal")
POWER_OPTIM = OptimConfig(name="adamw", lr=1e-3, beta1=0.9, beta2=0.98, weight_decay=1.0, warmup_steps=10, batch_size=512)
# Structural grokking (Murty et al. 2023) shrunk to a CPU: the paper's post-LN LM is 512 wide with 8 heads, trained with
# batch 8 at lr 1e-4 for 300k steps on 100k-200k sequences (recipe `structural --scale paper`); these keep its shape.
STRUCTURAL_MODEL = ModelConfig(name="lm", d_model=64, n_layers=3, n_heads=4, d_mlp=256, norm="post")
STRUCTURAL_OPTIM = OptimConfig(name="adamw", lr=1e-3, beta1=0.9, beta2=0.98, weight_decay=0.0, warmup_steps=100, batch_size=32)
SEQUENCE_SIZES = {"train_size": 5000, "eval_size": 200, "gen_size": 500}

PRESETS: dict[str, Preset] = {
    "mlp": Preset(
        "the quick default: MLP on x+y mod 97, 50% train; groks in well under a minute on a laptop CPU",
        Config(
            task=TaskConfig(op="x+y", p=97, train_frac=0.5),
            model=ModelConfig(name="mlp", d_model=128, width=256, depth=1),
            optim=OptimConfig(lr=3e-3, weight_decay=1.0, batch_size=512),
            steps=3000,
            eval_every=50,
            stop_patience=500,
        ),
    ),
    "power-fig1": Preset(
        "Power et al. Fig 1: 2-layer transformer, AdamW lr 1e-3 wd 1, batch 512, on x/y mod 97 at 50%",
        Config(task=TaskConfig(op="x/y", p=97, train_frac=0.5), model=POWER_MODEL, optim=POWER_OPTIM, steps=20_000, eval_spacing="log"),
    ),
    "nanda": Preset(
        "Nanda et al.: 1-layer transformer without LayerNorm, x+y mod 113 at 30%, full batch, AdamW wd 1",
        Config(
            task=TaskConfig(op="x+y", p=113, train_frac=0.3, val_frac=0.35),
            model=NANDA_MODEL,
            optim=OptimConfig(lr=1e-3, beta1=0.9, beta2=0.98, weight_decay=1.0, warmup_steps=10, batch_size=0),
            steps=40_000,
            eval_every=100,
        ),
    ),
    "s5": Preset(
        "Power et al. permutation task: the 2-layer transformer on x∘y in S5 (120 elements) at 50%",
        Config(task=TaskConfig(op="s5:xy", train_frac=0.5), model=POWER_MODEL, optim=POWER_OPTIM, steps=20_000, eval_spacing="log"),
    ),
    "parity": Preset(
        "Merrill et al. sparse parity: MLP on 40 bits, label = parity of 3, 1,000 training samples; groks after memorizing",
        Config(
            task=TaskConfig(name="parity", n_bits=40, k_bits=3, n_samples=2000, train_frac=0.5),
            model=ModelConfig(name="mlp", width=1000, depth=1),
            # wd 1 at lr 3e-3: with weaker decay at a lower lr, val accuracy stays at chance far past this budget
            # (the measured runs are in docs/recipes.md).
            optim=OptimConfig(lr=3e-3, weight_decay=1.0, batch_size=32, warmup_steps=0),
            steps=4000,
            eval_every=100,
        ),
    ),
    "digits": Preset(
        "scikit-learn's 8×8 digits, 1,000 training images, MLP (Omnigrok's image setting, offline)",
        Config(
            task=TaskConfig(name="digits", train_size=1000, val_frac=0.2),
            model=ModelConfig(name="mlp", width=200, depth=2),
            optim=OptimConfig(lr=1e-3, weight_decay=0.01, batch_size=200, warmup_steps=0),
            steps=1000,
            eval_every=50,
        ),
    ),
    "fast-grok": Preset(
        "the fastest grokking found for Power's transformer on x*y mod 97 at 50%: AdamW lr 4e-3 (50 warm-up steps), wd 2",
        Config(
            task=TaskConfig(op="x*y", p=97, train_frac=0.5),
            model=POWER_MODEL,
            # Grokfast's setting (x*y mod 97 at 50%) with a larger lr and weight decay instead of a gradient filter:
            # the fastest of the settings tried (each one's steps to 95% val are in docs/recipes.md).
            optim=OptimConfig(name="adamw", lr=4e-3, beta1=0.9, beta2=0.98, weight_decay=2.0, warmup_steps=50, batch_size=512),
            steps=2000,
            eval_every=20,
            stop_patience=100,
        ),
    ),
    "question-formation": Preset(
        "Murty et al. structural grokking, CPU-sized: a 3-layer LM turns declaratives into questions; gen = subject relative clauses",
        Config(
            task=TaskConfig(name="question_formation", **SEQUENCE_SIZES),
            model=STRUCTURAL_MODEL,
            optim=STRUCTURAL_OPTIM,
            steps=12_000,
            eval_every=500,
        ),
    ),
    "tense-inflection": Preset(
        "Murty et al. structural grokking, CPU-sized: a 3-layer LM re-inflects past to present; gen = an attractor noun of the other number",
        Config(
            task=TaskConfig(name="tense_inflection", **SEQUENCE_SIZES),
            model=STRUCTURAL_MODEL,
            optim=STRUCTURAL_OPTIM,
            steps=12_000,
            eval_every=500,
        ),
    ),
    "dyck": Preset(
        "Murty et al. Dyck, CPU-sized: a 3-layer LM on 8 bracket types nested at most 6 deep; gen = unseen depth structures",
        Config(
            task=TaskConfig(name="dyck", n_brackets=8, max_depth=6, max_len=64, **SEQUENCE_SIZES),
            model=STRUCTURAL_MODEL,
            optim=STRUCTURAL_OPTIM,
            steps=12_000,
            eval_every=500,
        ),
    ),
    "liu-toy": Preset(
        "Liu et al. 2022's toy model: (a, b) -> Dec(E_a + E_b) on a + b over 0..9 (55 pairs), MSE to random targets, Adam",
        Config(
            task=TaskConfig(name="addition", p=10, train_frac=0.6, val_frac=0.2),
            # as the released toy code: 1-D embeddings from U(−½, ½) and a tanh decoder 200-200 to 30-d targets; Adam with
            # β2 0.999, representation lr 1e-3, decoder lr 1e-4; batches of 45 (full batch up to 45 training pairs)
            model=ModelConfig(name="toy", d_model=1, width=200, depth=2, activation="tanh", target_dim=30, init="uniform"),
            optim=OptimConfig(name="adam", lr=1e-4, embed_lr=1e-3, beta2=0.999, weight_decay=0.0, warmup_steps=0, batch_size=45),
            loss="target_mse",
            steps=20_000,
            eval_every=100,
            analysis="rqi",
            analysis_every=1,
        ),
    ),
}


def get_preset(name: str) -> Config:
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}: expected one of {', '.join(PRESETS)}")
    return PRESETS[name].config
