"""Tense inflection (McCoy et al. 2020; Murty et al. 2023): re-inflect a past-tense sentence into the present, where
every verb must agree in number with its own subject.

Grammar (ours): `Subject Verb [Object]`, all verbs in the past. The subject is `Det N`, `Det N P Det N`,
`Det N who V_intr`, `Det N who V_tr Det N` or `Det N that Det N V_tr`; the object is `Det N` or `Det N P Det N`.
In the present, the main verb agrees with the subject's head noun ("my zebras near the yak swim"); a subject-relative
clause's verb agrees with the head, an object-relative clause's verb with its own subject.

Examples are one sequence `past . present present-sentence .` or `past . past past .` (the copy). The linear rule
(agree with the nearest noun before the verb) and the hierarchical one (agree with the subject) give the same main
verb on every training example: training re-inflections have no noun of the other number between the head and the
main verb (copies may). The generalization split `gen` holds re-inflections whose nearest noun before the main verb
differs in number from the head. Score: the form of the main verb in the greedily decoded answer, which must have the
target's part of speech at every position (Murty et al.'s code, after McCoy et al.).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from groklab.config import TaskConfig
from groklab.data.question_formation import DETERMINERS, NOUNS, PREPOSITIONS, plural
from groklab.data.sequences import Forward, SequenceTask, decoded_right, draw_splits, make_vocab, marker_position

Tensor = torch.Tensor

INTRANSITIVE = {
    "giggled": ("giggles", "giggle"), "smiled": ("smiles", "smile"), "slept": ("sleeps", "sleep"), "swam": ("swims", "swim"),
    "waited": ("waits", "wait"), "moved": ("moves", "move"), "changed": ("changes", "change"), "laughed": ("laughs", "laugh"),
}  # fmt: skip
TRANSITIVE = {
    "entertained": ("entertains", "entertain"), "amused": ("amuses", "amuse"), "applauded": ("applauds", "applaud"),
    "confused": ("confuses", "confuse"), "admired": ("admires", "admire"), "accepted": ("accepts", "accept"),
    "remembered": ("remembers", "remember"), "comforted": ("comforts", "comfort"),
}  # fmt: skip
"""Past form -> (present singular, present plural)."""
PRESENT, PAST = "present", "past"


@dataclass(frozen=True)
class Word:
    past: str
    agrees_plural: bool | None = None
    """For verbs: whether their subject is plural (None: not a verb)."""

    @property
    def present(self) -> str:
        if self.agrees_plural is None:
            return self.past
        singular, many = {**INTRANSITIVE, **TRANSITIVE}[self.past]
        return many if self.agrees_plural else singular


def noun_phrase(rng: random.Random) -> tuple[list[Word], bool]:
    many = rng.random() < 0.5
    noun = rng.choice(NOUNS)
    return [Word(rng.choice(DETERMINERS)), Word(plural(noun) if many else noun)], many


def subject(rng: random.Random) -> tuple[list[Word], bool, bool]:
    """The subject's words, whether its head is plural, whether the nearest noun before the main verb is plural."""
    head, many = noun_phrase(rng)
    kind = rng.randrange(5)
    if kind == 1:  # Det N P Det N
        np, np_many = noun_phrase(rng)
        return [*head, Word(rng.choice(PREPOSITIONS)), *np], many, np_many
    if kind == 2:  # Det N who V_intr
        return [*head, Word("who"), Word(rng.choice(list(INTRANSITIVE)), many)], many, many
    if kind == 3:  # Det N who V_tr Det N
        np, np_many = noun_phrase(rng)
        return [*head, Word("who"), Word(rng.choice(list(TRANSITIVE)), many), *np], many, np_many
    if kind == 4:  # Det N that Det N V_tr
        np, np_many = noun_phrase(rng)
        return [*head, Word("that"), *np, Word(rng.choice(list(TRANSITIVE)), np_many)], many, np_many
    return head, many, many


MAIN_VERB_AT = {"who_intransitive": 4, "who_transitive": 6, "that": 6, "preposition": 5, "plain": 2}
"""Index of the main verb in a sentence, by the subject's form (read off the words at indices 2 and 3)."""


@dataclass(frozen=True)
class Sentence:
    words: list[Word]
    agreement_differs: bool
    """The nearest noun before the main verb differs in number from the subject's head."""
    main_verb: int
    """Index of the main verb in `words`."""

    def example(self, present: bool) -> tuple[str, ...]:
        past = tuple(w.past for w in self.words)
        if not present:
            return (*past, ".", PAST, *past, ".")
        return (*past, ".", PRESENT, *(w.present for w in self.words), ".")


def sentence(rng: random.Random) -> Sentence:
    words, many, nearest_many = subject(rng)
    main_verb = len(words)
    if rng.random() < 0.5:
        words = [*words, Word(rng.choice(list(INTRANSITIVE)), many)]
    else:
        obj, _ = noun_phrase(rng)
        if rng.random() < 0.5:
            obj = [*obj, Word(rng.choice(PREPOSITIONS)), *noun_phrase(rng)[0]]
        words = [*words, Word(rng.choice(list(TRANSITIVE)), many), *obj]
    return Sentence(words, many != nearest_many, main_verb)


def in_distribution(rng: random.Random) -> tuple[str, ...] | None:
    """A copy of any sentence, or (as often) the re-inflection of one where both agreement rules give the same verb."""
    s, present = sentence(rng), rng.random() < 0.5
    return None if present and s.agreement_differs else s.example(present)


def generalization(rng: random.Random) -> tuple[str, ...] | None:
    """The re-inflection of a sentence whose nearest noun before the main verb has the other number than its subject."""
    s = sentence(rng)
    return s.example(True) if s.agreement_differs else None


def lexicon() -> tuple[set[str], ...]:
    """The words by part of speech: determiners, nouns (either number), verbs (any form), prepositions, relativizers."""
    verbs = {w for table in (INTRANSITIVE, TRANSITIVE) for past, forms in table.items() for w in (past, *forms)}
    nouns = {w for n in NOUNS for w in (n, plural(n))}
    return set(DETERMINERS), nouns, verbs, set(PREPOSITIONS), {"who", "that"}


def parts_of_speech(vocab: tuple[str, ...], classes: tuple[set[str], ...]) -> Tensor:
    """(vocab,) a class per token id: the index of its part of speech in `classes`; every other token (punctuation,
    markers, specials) a class of its own."""
    return torch.tensor([next((k for k, c in enumerate(classes) if w in c), len(classes) + i) for i, w in enumerate(vocab)])


def build(task: TaskConfig, seed: int) -> SequenceTask:
    classes = lexicon()
    vocab = make_vocab(set().union(*classes, {".", PRESENT, PAST}))
    splits = draw_splits(seed, task, in_distribution, generalization)
    ids = lambda words: torch.tensor([vocab.index(w) for w in words])  # noqa: E731
    markers, transitive = ids([PRESENT, PAST]), ids([w for past, forms in TRANSITIVE.items() for w in (past, *forms)])
    who, that, prepositions, pos = vocab.index("who"), vocab.index("that"), ids(PREPOSITIONS), parts_of_speech(vocab, classes)

    def score(forward: Forward, x: Tensor, logits: Tensor, y: Tensor, mask: Tensor) -> Tensor:
        """The main verb of the greedily decoded answer: (n,) float."""
        start = marker_position(y, markers.to(y.device)) + 1  # (n,) the answer's first word
        rows = torch.arange(len(y), device=y.device)
        third, fourth = y[rows, (start + 2).clamp(max=y.shape[1] - 1)], y[rows, (start + 3).clamp(max=y.shape[1] - 1)]
        at = torch.full_like(start, MAIN_VERB_AT["plain"])
        at = torch.where(torch.isin(third, prepositions.to(y.device)), MAIN_VERB_AT["preposition"], at)
        at = torch.where(third == that, MAIN_VERB_AT["that"], at)
        is_tr = torch.isin(fourth, transitive.to(y.device))
        at = torch.where(third == who, torch.where(is_tr, MAIN_VERB_AT["who_transitive"], MAIN_VERB_AT["who_intransitive"]), at)
        return decoded_right(forward, x, logits, y, mask, start, start + at, pos.to(y.device))

    return SequenceTask(vocab, splits, score)
