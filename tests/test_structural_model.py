"""The language model of the sequence tasks (model `lm`), tree-structuredness on cases with a known answer, and the
one-line refusals of bad structural-grokking input."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import tiny

from groklab.analysis import training_metrics
from groklab.analysis.tree import greedy_parse, sentence_score, span_scores, tree_structuredness
from groklab.cli import main
from groklab.config import Config, ModelConfig, apply_overrides, validate
from groklab.data import build_task
from groklab.errors import UserError
from groklab.losses import make_loss
from groklab.models import build_model
from groklab.models.transformer import LanguageModel
from groklab.presets import get_preset
from groklab.runio import load_run
from groklab.train import Hook, train

LM = ModelConfig(name="lm", d_model=16, n_layers=2, n_heads=2, d_mlp=32)


def test_a_tied_lm_shares_one_matrix_and_an_untied_one_does_not() -> None:
    tied = LanguageModel(ModelConfig(name="lm", d_model=8, n_heads=2, tie_embeddings=True), 11, 11, seq_len=5)
    untied = LanguageModel(ModelConfig(name="lm", d_model=8, n_heads=2), 11, 11, seq_len=5)
    assert tied.unembed.weight is tied.embed.weight and untied.unembed.weight is not untied.embed.weight
    assert sum(p.numel() for p in untied.parameters()) - sum(p.numel() for p in tied.parameters()) == 11 * 8
    assert tied(torch.randint(0, 11, (3, 5))).shape == (3, 5, 11)


def test_restricted_attention_sees_only_its_span() -> None:
    torch.manual_seed(0)
    model = LanguageModel(LM, 10, 10, seq_len=8).eval()
    x = torch.randint(0, 10, (1, 8))
    assert torch.allclose(model.residual(x, first=torch.tensor([0])), model.residual(x), atol=1e-6)
    other = x.clone()
    other[0, :3] = (x[0, :3] + 1) % 10  # change every token before the span 3..7
    a, b = model.residual(x, first=torch.tensor([3])), model.residual(other, first=torch.tensor([3]))
    assert torch.allclose(a[:, 3:], b[:, 3:], atol=1e-6) and not torch.allclose(model.residual(x)[:, 3:], model.residual(other)[:, 3:])


def test_greedy_parse_finds_the_tree_the_span_scores_encode() -> None:
    """Spans of ((0 1) (2 3)) and single tokens score 1, every other span 0: the parse is that tree, and the root's
    best split (2) beats a random one by 2 − (1 + 2 + 1)/3 = 2/3 on average (its children have one split each)."""
    scores = torch.zeros(4, 4)
    for i, j in [(0, 0), (1, 1), (2, 2), (3, 3), (0, 1), (2, 3)]:
        scores[i, j] = 1.0
    assert greedy_parse(scores) == [(0, 3, 1), (0, 1, 0), (2, 3, 2)]
    draws = [sentence_score(scores, torch.Generator().manual_seed(s)) for s in range(600)]
    assert set(draws) == {0.0, 1.0} and sum(draws) / len(draws) == pytest.approx(2 / 3, abs=0.06)


def test_span_scores_are_cosines_of_span_sums() -> None:
    full = torch.randn(5, 7)
    assert torch.allclose(span_scores(full, full.expand(5, 5, 7)).triu(), torch.ones(5, 5).triu(), atol=1e-5)
    restricted = full.expand(5, 5, 7).clone()
    restricted[1, 2] = -full[2] - 2 * full[1]  # span (1, 2) read alone sums to the opposite of its full-context sum
    assert span_scores(full, restricted)[1, 2] == pytest.approx(-1.0, abs=1e-5)
    assert span_scores(full, restricted)[2, 1].isnan()


def test_a_model_whose_attention_adds_nothing_has_tree_structuredness_zero() -> None:
    """With the attention output projection zero, a token's vector never depends on its context: every span reads the
    same alone as in context, every split scores alike, and the measure is 0."""
    torch.manual_seed(0)
    model = LanguageModel(LM, 10, 10, seq_len=9).eval()
    x = torch.randint(3, 10, (4, 9))
    assert tree_structuredness(model, x, [(1, 8)] * 4) > 0.01  # with attention: some split stands out
    with torch.no_grad():
        for block in model.blocks:
            block.proj.weight.zero_()
    assert tree_structuredness(model, x, [(1, 8)] * 4) == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize("name", ["dyck", "question-formation", "tense-inflection"])
def test_tree_analysis_is_logged_for_a_sequence_task(name: str) -> None:
    config = apply_overrides(get_preset(name), {"task.train_size": 40, "task.eval_size": 8, "task.gen_size": 8, "analysis": "tree"})
    data = build_task(config.task, 0)
    model = build_model(config.model, data, 0)
    out = training_metrics(model, data, config, make_loss("cross_entropy", "float32"))
    # The logged score is the tree measure over the first sentence (from after <s> to its end) of the first 32 val rows.
    x = data.x[data.val[:32]]
    ends = [next((i for i in range(1, len(row)) if data.vocab[int(row[i])] in (".", "</s>", "<pad>")), len(row)) for row in x]
    assert set(out) == {"tree/score"} and out["tree/score"] == tree_structuredness(model, x, [(1, end) for end in ends])


BAD = [
    (["--task.max-depth", "0"], "task.max_depth=0 is not valid: expected an integer >= 1"),
    (["--task.n-brackets", "0"], "task.n_brackets=0 is not valid: expected an integer >= 1"),
    (["--task.bracket-types", "3"], "unknown config field 'task.bracket-types'"),
    (["--model.name", "transformer"], "model.name='transformer' is not valid for task.name='dyck' (a sequence task): expected lm"),
    (["--model.name", "mlp"], "model.name='mlp' is not valid for task.name='dyck' (a sequence task): expected lm"),
    (  # more distinct strings than Dyck-(1, 1) up to 4 tokens has: found when the data is built, before any file
        ["--task.n-brackets", "1", "--task.max-depth", "1", "--task.max-len", "4", "--task.train-size", "10"],
        "task.train_size=10 is not valid: the generator found only 1 distinct such examples; ask for fewer",
    ),
]


@pytest.mark.parametrize(("args", "message"), BAD, ids=[a[0][0] for a in BAD])
def test_bad_structural_input_is_one_line_exit_2_nothing_written(tmp_path: Path, capsys, args: list[str], message: str) -> None:  # noqa: ANN001
    out = tmp_path / "run"
    assert main(["train", "--preset", "dyck", "--out", str(out), "--quiet", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and not out.exists()


def test_an_lm_on_a_table_task_and_tied_embeddings_elsewhere_are_refused() -> None:
    with pytest.raises(UserError, match=r"^model.name='lm' is not valid for task.name='binop'"):
        validate(Config(model=ModelConfig(name="lm")))
    with pytest.raises(UserError, match=r"^model.tie_embeddings=true is not valid for model.name='transformer'"):
        validate(Config(model=ModelConfig(name="transformer", tie_embeddings=True)))
    assert validate(tiny(get_preset("dyck"))).task == get_preset("dyck").task


class Claims(Hook):
    """Overrides metric keys of every row before the loop reads it: what stopping would see if it looked there."""

    def __init__(self, keys: tuple[str, ...]) -> None:
        self.keys = keys

    def measure(self, member: int, evaluation: int, model: torch.nn.Module) -> dict[str, float]:
        return dict.fromkeys(self.keys, 1.0)


def test_stopping_reads_val_never_gen_or_test_and_the_summary_carries_gen(tmp_path: Path) -> None:
    config = tiny(get_preset("tense-inflection"), {"task.train_size": 40, "task.eval_size": 8, "task.gen_size": 8, "steps": 12, "stop_patience": 3})
    ran = train(config, tmp_path / "gen-test", progress=False, hooks=[Claims(("gen/acc", "test/acc"))])
    assert ran["steps"] == 12 and not ran.get("stopped_early") and ran["steps_to_val_acc_99"] is None
    assert ran["final"]["gen/acc"] == 1.0 and load_run(tmp_path / "gen-test").metrics[-1]["gen/loss"] == ran["final"]["gen/loss"]
    stopped = train(config, tmp_path / "val", progress=False, hooks=[Claims(("val/acc",))])  # the control: val does stop it
    assert stopped["stopped_early"] and stopped["steps"] == 3
