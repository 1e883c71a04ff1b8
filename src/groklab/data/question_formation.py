"""Question formation (McCoy et al. 2020; Murty et al. 2023): turn an English declarative into a yes/no question.

Grammar (ours, in McCoy et al.'s style): a sentence is `NP_subj Aux VP`; noun phrases are `Det N`, optionally with a
prepositional phrase (`near the yaks`) or a relative clause with who / that (`who doesn't sleep`, `that the yak does
admire`); auxiliaries do / does / don't / doesn't agree in number with their subject; VP is an intransitive verb or a
transitive verb with an object NP. The question fronts the main clause's auxiliary:
`my raven that doesn't sleep does change .` -> `does my raven that doesn't sleep change ?`.

Examples are one sequence `decl . quest question ?` or `decl . decl decl .` (the copy). Training questions never have
a relative clause on the subject (copies do), so "front the first auxiliary" (linear) and "front the main clause's
auxiliary" (hierarchical) agree on all of them. The generalization split `gen` holds questions whose subject carries
a relative clause whose auxiliary is a different word from the main one: there the two rules give different first
words. Score: the first word of the answer (the moved auxiliary), as the paper scores it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from groklab.config import TaskConfig
from groklab.data.sequences import Forward, SequenceTask, answer_right, draw_splits, make_vocab, marker_position

Tensor = torch.Tensor

DETERMINERS = ("the", "some", "my", "your", "our", "her")
NOUNS = ("newt", "orangutan", "peacock", "quail", "raven", "salamander", "unicorn", "vulture", "walrus", "xylophone", "yak", "zebra")
INTRANSITIVE = ("giggle", "smile", "sleep", "swim", "wait", "move", "change", "read", "eat")
TRANSITIVE = ("entertain", "amuse", "high_five", "applaud", "confuse", "admire", "accept", "remember", "comfort")
PREPOSITIONS = ("around", "near", "with", "upon", "by", "behind", "above", "below")
RELATIVES = ("who", "that")
AUXILIARIES = {False: ("does", "doesn't"), True: ("do", "don't")}
"""Plural subject? -> its auxiliaries."""
QUEST, DECL = "quest", "decl"


def plural(noun: str) -> str:
    return noun + ("es" if noun.endswith("s") else "s")


@dataclass(frozen=True)
class Sentence:
    subject: tuple[str, ...]
    aux: str
    """The main clause's auxiliary."""
    predicate: tuple[str, ...]
    """The main verb and its object."""
    subject_aux: str | None
    """The auxiliary inside the subject's relative clause (None when the subject has none)."""

    @property
    def words(self) -> tuple[str, ...]:
        return (*self.subject, self.aux, *self.predicate)

    @property
    def question(self) -> tuple[str, ...]:
        return (self.aux, *self.subject, *self.predicate)


def noun_phrase(rng: random.Random) -> tuple[tuple[str, ...], bool]:
    """`Det N`, and whether N is plural."""
    many = rng.random() < 0.5
    noun = rng.choice(NOUNS)
    return (rng.choice(DETERMINERS), plural(noun) if many else noun), many


def relative_clause(rng: random.Random, head_plural: bool) -> tuple[tuple[str, ...], str]:
    """A relative clause on a head noun, and its auxiliary: subject-relative (`who doesn't sleep`, `who does amuse the
    yak`, the auxiliary agrees with the head) or object-relative (`that the yaks don't admire`, it agrees with `yaks`)."""
    rel, kind = rng.choice(RELATIVES), rng.randrange(3)
    if kind == 2:
        np, many = noun_phrase(rng)
        aux = rng.choice(AUXILIARIES[many])
        return (rel, *np, aux, rng.choice(TRANSITIVE)), aux
    aux = rng.choice(AUXILIARIES[head_plural])
    if kind == 0:
        return (rel, aux, rng.choice(INTRANSITIVE)), aux
    return (rel, aux, rng.choice(TRANSITIVE), *noun_phrase(rng)[0]), aux


def modified_np(rng: random.Random) -> tuple[tuple[str, ...], bool, str | None]:
    """`Det N`, `Det N P Det N` or `Det N RC` (a third each): the words, whether the head is plural, the RC's auxiliary."""
    np, many = noun_phrase(rng)
    kind = rng.randrange(3)
    if kind == 1:
        return (*np, rng.choice(PREPOSITIONS), *noun_phrase(rng)[0]), many, None
    if kind == 2:
        rc, aux = relative_clause(rng, many)
        return (*np, *rc), many, aux
    return np, many, None


def sentence(rng: random.Random) -> Sentence:
    subject, many, subject_aux = modified_np(rng)
    aux = rng.choice(AUXILIARIES[many])
    predicate = (rng.choice(INTRANSITIVE),) if rng.random() < 0.5 else (rng.choice(TRANSITIVE), *modified_np(rng)[0])
    return Sentence(subject, aux, predicate, subject_aux)


def example(s: Sentence, question: bool) -> tuple[str, ...]:
    """One sequence: `decl . quest question ?` or `decl . decl decl .`."""
    return (*s.words, ".", QUEST, *s.question, "?") if question else (*s.words, ".", DECL, *s.words, ".")


def in_distribution(rng: random.Random) -> tuple[str, ...] | None:
    """A copy of any sentence, or (as often) the question of a sentence without a relative clause on its subject."""
    s, question = sentence(rng), rng.random() < 0.5
    return None if question and s.subject_aux is not None else example(s, question)


def generalization(rng: random.Random) -> tuple[str, ...] | None:
    """The question of a sentence whose subject's relative clause has an auxiliary other than the main one."""
    s = sentence(rng)
    return example(s, True) if s.subject_aux is not None and s.subject_aux != s.aux else None


def lexicon() -> set[str]:
    nouns = {w for n in NOUNS for w in (n, plural(n))}
    auxes = {a for pair in AUXILIARIES.values() for a in pair}
    return {*DETERMINERS, *nouns, *INTRANSITIVE, *TRANSITIVE, *PREPOSITIONS, *RELATIVES, *auxes, ".", "?", QUEST, DECL}


def build(task: TaskConfig, seed: int) -> SequenceTask:
    vocab = make_vocab(lexicon())
    splits = draw_splits(seed, task, in_distribution, generalization)
    markers = torch.tensor([vocab.index(QUEST), vocab.index(DECL)])

    def score(forward: Forward, x: Tensor, logits: Tensor, y: Tensor, mask: Tensor) -> Tensor:
        """The first word of the answer (the target right after the task marker), greedy: (n, seq, vocab) -> (n,)."""
        return answer_right(logits, y, marker_position(y, markers.to(y.device)) + 1)

    return SequenceTask(vocab, splits, score)
