"""The structural-grokking tasks: their sentences parse under the grammar, the split rules hold on every generated
example, and the loss mask and the task scores are right on hand-worked examples."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import cache

import pytest
import torch
import torch.nn.functional as F

from groklab.config import ModelConfig, TaskConfig
from groklab.data import Dataset, build_task
from groklab.data import question_formation as qf
from groklab.data import tense_inflection as ti
from groklab.data.dyck import closing_distances, opener_distances, shapes
from groklab.data.sequences import encode
from groklab.losses import make_loss
from groklab.models import build_model

SIZES = {"train_size": 600, "eval_size": 100, "gen_size": 100}


@cache
def data(name: str, **fields: int) -> Dataset:
    return build_task(TaskConfig(name=name, **{**SIZES, **fields}), 0)  # type: ignore[arg-type]


def examples(d: Dataset, split: str) -> list[list[str]]:
    """The words of every example of a split, without <s>, </s> and padding."""
    return [[d.vocab[t] for t in row if t > 2] for row in d.x[d.indices(split)].tolist()]


def one_hot(y: torch.Tensor, vocab: int) -> torch.Tensor:
    return F.one_hot(y, vocab).float()  # (n, seq, vocab): argmax == y everywhere


def unused(x: torch.Tensor) -> torch.Tensor:
    raise AssertionError("a score that reads the given logits only ran the model again")


# ---------------------------------------------------------------------------------------------
# Question formation: a recognizer of the grammar, written from its description (not from the generator).

NOUNS_SG, NOUNS_PL = set(qf.NOUNS), {qf.plural(n) for n in qf.NOUNS}
AUX = {"does": False, "doesn't": False, "do": True, "don't": True}


def qf_np(w: list[str], i: int) -> Iterator[tuple[int, bool]]:
    if i + 1 < len(w) and w[i] in qf.DETERMINERS and w[i + 1] in NOUNS_SG | NOUNS_PL:
        yield i + 2, w[i + 1] in NOUNS_PL


def qf_modified(w: list[str], i: int) -> Iterator[tuple[int, bool, str | None]]:
    """(end, head plural, the relative clause's auxiliary) of every parse of a modified NP at i."""
    for j, many in qf_np(w, i):
        yield j, many, None
        if j < len(w) and w[j] in qf.PREPOSITIONS:
            yield from ((k, many, None) for k, _ in qf_np(w, j + 1))
        if j + 2 < len(w) and w[j] in qf.RELATIVES:
            if w[j + 1] in AUX and AUX[w[j + 1]] == many and w[j + 2] in qf.INTRANSITIVE:
                yield j + 3, many, w[j + 1]
            if w[j + 1] in AUX and AUX[w[j + 1]] == many and w[j + 2] in qf.TRANSITIVE:
                yield from ((k, many, w[j + 1]) for k, _ in qf_np(w, j + 3))
            for k, rc_many in qf_np(w, j + 1):
                if k + 1 < len(w) and w[k] in AUX and AUX[w[k]] == rc_many and w[k + 1] in qf.TRANSITIVE:
                    yield k + 2, many, w[k]


def qf_parses(w: list[str]) -> list[tuple[int, str | None]]:
    """Every parse of a declarative: (index of the main auxiliary, the subject's relative-clause auxiliary)."""
    out = []
    for j, many, rc_aux in qf_modified(w, 0):
        if j >= len(w) or AUX.get(w[j]) != many:
            continue
        rest = w[j + 1 :]
        if rest and rest[0] in qf.INTRANSITIVE and len(rest) == 1:
            out.append((j, rc_aux))
        if rest and rest[0] in qf.TRANSITIVE and any(k == len(w) for k, _, _ in qf_modified(w, j + 2)):
            out.append((j, rc_aux))
    return out


def test_question_formation_sentences_parse_and_the_split_rules_hold() -> None:
    d = data("question_formation")
    for split in ("train", "val", "test", "gen"):
        for ex in examples(d, split):
            dot = ex.index(".")
            decl, marker, answer = ex[:dot], ex[dot + 1], ex[dot + 2 :]
            (main, rc_aux), *others = qf_parses(decl)  # exactly one parse
            assert not others
            if marker == qf.DECL:
                assert answer == [*decl, "."] and split != "gen"
                continue
            assert answer == [decl[main], *decl[:main], *decl[main + 1 :], "?"]  # the main auxiliary fronted
            if split == "gen":  # a subject relative clause whose auxiliary the linear rule would front instead
                assert rc_aux is not None and rc_aux != decl[main]
            else:
                assert rc_aux is None
    copies = [ex for ex in examples(d, "train") if ex[ex.index(".") + 1] == qf.DECL]
    assert any(qf_parses(ex[: ex.index(".")])[0][1] is not None for ex in copies)  # copies do have subject RCs


def test_question_formation_scores_the_first_word_of_the_answer() -> None:
    vocab = qf.make_vocab(qf.lexicon())
    words = "my raven that doesn't sleep does change . quest does my raven that doesn't sleep change ?".split()
    x, y, mask = encode([tuple(words)], vocab)
    assert vocab[x[0, 0]] == "<s>" and [vocab[t] for t in y[0]] == [*words, "</s>"] and bool(mask.all())
    d = data("question_formation")
    logits = one_hot(y, len(vocab))
    assert d.score(unused, x, logits, y, mask).tolist() == [1.0]  # type: ignore[misc]
    answer = words.index("quest") + 1  # y[answer] = "does", predicted from x[answer] = "quest"
    wrong = logits.clone()
    wrong[0, answer + 1] = 0  # a later word wrong: still right
    assert d.score(unused, x, wrong, y, mask).tolist() == [1.0]  # type: ignore[misc]
    wrong[0, answer, vocab.index("doesn't")] = 2.0  # the linear rule's auxiliary
    assert d.score(unused, x, wrong, y, mask).tolist() == [0.0]  # type: ignore[misc]


def test_the_loss_mask_covers_every_real_token_and_no_padding() -> None:
    vocab = ("<pad>", "<s>", "</s>", "a", "b")
    x, y, mask = encode([("a",), ("a", "b", "b")], vocab)
    assert x.tolist() == [[1, 3, 2, 0], [1, 3, 4, 4]]  # </s> as an input has only padding to predict
    assert y.tolist() == [[3, 2, 0, 0], [3, 4, 4, 2]]
    assert mask.tolist() == [[True, True, False, False], [True, True, True, True]]


# ---------------------------------------------------------------------------------------------
# Tense inflection.

PAST = {**ti.INTRANSITIVE, **ti.TRANSITIVE}


def ti_parse(w: list[str]) -> tuple[int, bool, bool]:
    """(main verb index, head plural, nearest noun before the main verb plural) of a past-tense sentence."""
    many = w[1] in NOUNS_PL
    nearest, i = many, 2
    if w[2] in qf.PREPOSITIONS:
        nearest, i = w[4] in NOUNS_PL, 5
    elif w[2] == "who" and w[3] in ti.INTRANSITIVE:
        i = 4
    elif w[2] == "who":
        nearest, i = w[5] in NOUNS_PL, 6
    elif w[2] == "that":
        assert w[5] in ti.TRANSITIVE
        nearest, i = w[4] in NOUNS_PL, 6
    assert w[0] in qf.DETERMINERS and w[1] in NOUNS_SG | NOUNS_PL and w[i] in PAST
    rest = w[i + 1 :]
    assert rest == [] if w[i] in ti.INTRANSITIVE else (len(rest) in (2, 5) and rest[0] in qf.DETERMINERS)
    return i, many, nearest


def test_tense_sentences_parse_agree_and_the_split_rules_hold() -> None:
    d = data("tense_inflection")
    for split in ("train", "val", "test", "gen"):
        for ex in examples(d, split):
            dot = ex.index(".")
            past, marker, answer = ex[:dot], ex[dot + 1], ex[dot + 2 : -1]
            main, many, nearest = ti_parse(past)
            if marker == ti.PAST:
                assert answer == past and split != "gen"
                continue
            assert answer[main] == PAST[past[main]][many]  # agrees with the subject's head
            rc_subject_plural = past[4] in NOUNS_PL if past[2] == "that" else many  # an object relative's verb: its own subject
            for k, (old, new) in enumerate(zip(past, answer, strict=True)):
                assert new == (PAST[old][many if k == main else rc_subject_plural] if old in PAST else old)
            assert (many != nearest) == (split == "gen")  # only gen separates the linear rule from the hierarchical


def follows(vocab: tuple[str, ...], y: torch.Tensor, answer: list[str]) -> Callable[[torch.Tensor], torch.Tensor]:
    """A scripted model of one example: it continues `answer` (the words after the task marker, then </s>) while
    the answer words it was fed so far are `answer`'s, and predicts the reference target y where they are not."""
    want, marker = [vocab.index(w) for w in answer], {vocab.index(ti.PRESENT), vocab.index(ti.PAST)}

    def forward(inp: torch.Tensor) -> torch.Tensor:
        row = inp[0].tolist()
        s = next(t for t, token in enumerate(row) if token in marker)  # the answer's first word is predicted here
        out = torch.zeros(1, len(row), len(vocab))
        for t in range(len(row)):
            k = t - s  # the answer word predicted at t, after the answer words row[s + 1 : t + 1]
            on_script = 0 <= k < len(want) and row[s + 1 : t + 1] == want[:k]
            out[0, t, want[k] if on_script else int(y[0, t])] = 1.0
        return out

    return forward


def test_tense_decodes_greedily_and_scores_the_main_verb_as_murty_et_al() -> None:
    """Right only when the decoded answer has the target's parts of speech and length and the target's main verb;
    teacher forcing (feeding the reference) would score the main verb after a prefix the model did not produce."""
    d = data("tense_inflection")
    words = tuple("the yak near the zebras swam . present the yak near the zebras swims .".split())
    x, y, mask = encode([words], d.vocab)
    main_verb = words.index("swims")  # y[i] is words[i]
    cases = {
        "the yak near the zebras swims .": 1.0,  # the reference
        "the yak near the zebra swims .": 1.0,  # another noun, same parts of speech, the right main verb
        "the yak near the zebra swim .": 0.0,  # the main verb agreeing with what the model itself wrote
        "the yak near the zebras swim .": 0.0,  # the linear rule
        "the yak near the zebras swims": 0.0,  # ends early
        "the yak near the zebras swims . .": 0.0,  # goes on
        "the yak who the zebras swims .": 0.0,  # a relativizer where the preposition is
    }
    for answer, expected in cases.items():
        forward = follows(d.vocab, y, [*answer.split(), "</s>"])
        logits = forward(x)
        assert d.score(forward, x, logits, y, mask).tolist() == [expected], answer  # type: ignore[misc]
    teacher_forced = follows(d.vocab, y, [*"the yak near the zebra swim .".split(), "</s>"])(x).argmax(-1)
    assert teacher_forced[0, main_verb] == y[0, main_verb]  # fed the reference, this model writes the right verb


def greedy_by_hand(model: torch.nn.Module, d: Dataset, words: list[str]) -> float:
    """Token-by-token greedy decoding of one example after its task marker, scored by Murty et al.'s rule."""
    past = words[: words.index(".")]
    main = ti_parse(past)[0]
    target = [d.vocab.index(w) for w in words[len(past) + 2 :]] + [2]
    tokens = [1, *(d.vocab.index(w) for w in words[: len(past) + 2])]
    decoded: list[int] = []
    while len(decoded) < len(target) and (not decoded or decoded[-1] != 2):  # as long as the target, or to its </s>
        decoded.append(int(model(torch.tensor([tokens + decoded]))[0, -1].argmax()))
    kind = {w: k for k, group in enumerate(ti.lexicon()) for w in group}
    part = lambda ids: [kind.get(d.vocab[i], d.vocab[i]) for i in ids]  # noqa: E731
    return float(part(decoded) == part(target) and decoded[main] == target[main])


def test_tense_greedy_decoding_matches_decoding_token_by_token() -> None:
    """A briefly trained LM (right on some answers, wrong on others, some of them only after its own earlier words):
    the batched fixed-point decoding scores every val and gen example as decoding one token at a time does."""
    torch.manual_seed(0)
    d = data("tense_inflection")
    model = build_model(ModelConfig(name="lm", d_model=32, n_layers=2, n_heads=2, d_mlp=64), d, seed=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    loss = make_loss("cross_entropy", "float32")
    for _ in range(250):
        idx = d.train[torch.randint(len(d.train), (32,))]
        optimizer.zero_grad()
        loss(model(d.x[idx]), d.y[idx], d.mask[idx]).backward()  # type: ignore[index]
        optimizer.step()
    model.eval()
    idx = torch.cat([d.val, d.extra_splits["gen"]])
    x, y, mask = d.x[idx], d.y[idx], d.mask[idx]  # type: ignore[index]
    with torch.inference_mode():
        batched = d.score(model, x, model(x), y, mask)  # type: ignore[misc]
        by_hand = torch.tensor([greedy_by_hand(model, d, words) for split in ("val", "gen") for words in examples(d, split)])
    assert torch.equal(batched, by_hand)
    assert 0.05 < float(batched.mean()) < 0.95  # some right, some wrong


# ---------------------------------------------------------------------------------------------
# Dyck.


def test_dyck_strings_are_well_nested_and_the_split_rules_hold() -> None:
    d = data("dyck", n_brackets=4, max_depth=4, max_len=40)
    strings = {split: [tuple(s) for s in examples(d, split)] for split in ("train", "val", "test", "gen")}
    for s in (s for group in strings.values() for s in group):
        stack: list[str] = []
        for token in s:
            if token.startswith("("):
                stack.append(token[1:])
                assert len(stack) <= 4
            else:
                assert stack.pop() == token[:-1]
        assert not stack and 4 <= len(s) <= 40
    seen = {shape for s in strings["train"] for shape in shapes(s)}
    assert all(any(shape not in seen for shape in shapes(s)) for s in strings["gen"])
    assert all(shape in seen for split in ("val", "test") for s in strings[split] for shape in shapes(s))
    eval_strings = [s for split in ("val", "test", "gen") for s in strings[split]]
    assert len(set(eval_strings)) == len(eval_strings) and not set(eval_strings) & set(strings["train"])
    assert shapes(("(a", "(b", "b)", "a)", "(c", "c)")) == [(1, 2, 1, 0), (1, 0)]


def test_dyck_scores_closing_brackets_among_closing_brackets_only() -> None:
    d = data("dyck", n_brackets=2, max_depth=3, max_len=20, min_distance=3)
    vocab = d.vocab  # <pad> <s> </s> (a (b a) b)
    words = ("(a", "(b", "b)", "(a", "a)", "a)")  # closing distances 1, 1, 5
    assert opener_distances(words) == [0, 0, 1, 0, 1, 5]
    x, y, mask = encode([words], vocab)
    assert closing_distances(y, 5, 2, 3).tolist() == [[0, 0, 1, 0, 1, 5, 0]]
    logits = one_hot(y, len(vocab))
    logits[0, :, vocab.index("(a")] = 5.0  # an opening bracket on top everywhere: not among the closing brackets
    assert d.score(unused, x, logits, y, mask).tolist() == [1.0]  # type: ignore[misc]
    logits[0, 2, vocab.index("a)")] = 2.0  # wrong at distance 1 < min_distance: not scored
    assert d.score(unused, x, logits, y, mask).tolist() == [1.0]  # type: ignore[misc]
    logits[0, 5, vocab.index("b)")] = 2.0  # wrong at distance 5
    assert d.score(unused, x, logits, y, mask).tolist() == [0.0]  # type: ignore[misc]
    every = data("dyck", n_brackets=2, max_depth=3, max_len=20)
    logits = one_hot(y, len(vocab))
    logits[0, 2, vocab.index("a)")] = 2.0
    assert every.score(unused, x, logits, y, mask).tolist() == [0.0]  # type: ignore[misc]


@pytest.mark.parametrize("name", ["dyck", "question_formation", "tense_inflection"])
def test_a_task_is_the_same_for_a_split_seed_and_differs_for_another(name: str) -> None:
    small = TaskConfig(name=name, train_size=50, eval_size=10, gen_size=10, n_brackets=3, max_depth=4, max_len=30)  # type: ignore[arg-type]
    a, b, c = build_task(small, 3), build_task(small, 3), build_task(small, 4)
    assert torch.equal(a.x, b.x) and not (a.x.shape == c.x.shape and torch.equal(a.x, c.x))
    assert a.split_names == ("train", "val", "test", "gen") and a.vocab[:3] == ("<pad>", "<s>", "</s>")
