"""The comparison as a set of runs: the run directories a config asks for, each one's options,
and where each keeps what -- the only place that knows this layout.

A run is a directory of rounds, ``round0/`` (its baseline) then ``round<s>/`` per student round:
the main run ``<run>/`` and, for ``snakemake compare``, under ``<run>/compare/``::

    teacher<t>/                   teacher t: its baseline (round0/) and round-1 store at T = 1,
                                  unless t is the run's seed, whose teacher *is* the main run;
                                  for every teacher, the "+ts" rows' store round1/probs_ts.zarr
    teacher<t>/<method>/seed<k>/  a branch: rounds 1.. of one method on teacher t, student seed k

A branch has no round 0: it starts from its teacher's model, and its round 1 thresholds the
teacher's store at the branch's T (inference applies T: one store per T, :data:`STORE_SUFFIXES`).
Rules ask :class:`RunTable` what a run shares with its teacher: nothing is copied or trained twice.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dars.core.errors import DarsError
from dars.core.options import Options
from dars.pseudo.thresholds import METHODS

if TYPE_CHECKING:  # the config module loads jsonschema
    from dars.core.config import Config

# Compared method names (:func:`parse_variant`; tests check the schema's $defs.variant against
# VARIANT). "@<alpha>": e.g. DARS keeping as much as CBST, to tell amount from class balance.
TEMPERED = "+ts"
AT_ALPHA = "@"
LABELED_ONLY = "labeled-only"
THRESHOLDED = re.compile(rf"({'|'.join(METHODS)})({re.escape(TEMPERED)})?"
                         rf"(?:{AT_ALPHA}(0\.[0-9]*[1-9]|1))?")
VARIANT = re.compile(rf"{THRESHOLDED.pattern}|{LABELED_ONLY}")
BASELINE_METHOD = "baseline"  # the method of a teacher's own run in the tables

#: The suffixes of a round's stores (:func:`store_name`): at its run's own T (probs.zarr), at
#: T = 1 (the main run's teacher when the run's T is not 1), at compare.temperature.
OWN_T, AT_T1, AT_TEMPERED = "", "_t1", "_ts"
STORE_SUFFIXES = (OWN_T, AT_T1, AT_TEMPERED)


def store_name(suffix: str) -> str:
    """The file name of a round's store with ``suffix`` (one of :data:`STORE_SUFFIXES`)."""
    return f"probs{suffix}.zarr"


@dataclass(frozen=True)
class Variant:
    """One compared method: a thresholding method, optionally after temperature scaling and at
    its own round-1 alpha (None = the round's), or the labeled-only control (no pseudo labels)."""

    method: str
    tempered: bool
    alpha: float | None = None


def parse_variant(name: str) -> Variant:
    """A :data:`VARIANT` name: "cbst+ts" (tempered), "dars@0.45" (own alpha) or the control."""
    if name == LABELED_ONLY:
        return Variant(LABELED_ONLY, tempered=False)
    match = THRESHOLDED.fullmatch(name)
    if not match:
        raise DarsError(f"unknown comparison method {name!r}: expected {', '.join(METHODS)} "
                        f"(optionally with {TEMPERED}, then {AT_ALPHA}<alpha in (0, 1]>) "
                        f"or {LABELED_ONLY}")
    return Variant(match[1], match[2] is not None, float(match[3]) if match[3] else None)


def branches(methods: Sequence[str], progressive: Sequence[str], rounds: int
             ) -> list[tuple[str, int]]:
    """(method, rounds run) of every table row: each method for 1 round, progressive for all;
    a progressive method's first round *is* its 1-round run, trained once for both rows."""
    rows = [(m, 1) for m in methods]
    if rounds > 1:
        rows += [(m, rounds) for m in progressive]
    return rows


def row_label(method: str, rounds: int) -> str:
    return method if rounds == 1 else f"{method} + IT ({rounds} rounds)"


def comparison_keys(rows: Sequence[tuple[str, int]], teacher_seeds: Sequence[int],
                    seeds: Sequence[int]) -> list[tuple[str, int, int, int | None]]:
    """(method, rounds, teacher, student seed) of every run of the tables: the baselines (0
    rounds, no student seed), then each row's runs, teacher by teacher."""
    return ([(BASELINE_METHOD, 0, t, None) for t in teacher_seeds]
            + [(m, r, t, k) for m, r in rows for t in teacher_seeds for k in seeds])


@dataclass(frozen=True)
class Comparison(Options):
    """What ``dars compare`` tabulates: the ``compare:`` lists, the run's seed (whose teacher is
    the run's baseline) and each run's round folder, in :func:`comparison_keys` order."""

    methods: tuple[str, ...]
    progressive: tuple[str, ...]
    seeds: tuple[int, ...]
    teacher_seeds: tuple[int, ...]
    run_seed: int
    rounds: int
    folders: tuple[str, ...]

    def __post_init__(self) -> None:
        for name in (*self.methods, *self.progressive):
            parse_variant(name)
        if len(self.folders) != len(self.keys()):
            raise DarsError(f"{len(self.folders)} round folders for {len(self.keys())} runs")

    @property
    def rows(self) -> list[tuple[str, int]]:
        return branches(self.methods, self.progressive, self.rounds)

    @property
    def tempered(self) -> bool:
        """Whether a row scales temperature ("+ts")."""
        return any(parse_variant(m).tempered for m, _ in self.rows)

    def keys(self) -> list[tuple[str, int, int, int | None]]:
        return comparison_keys(self.rows, self.teacher_seeds, self.seeds)

    def runs(self) -> Iterator[tuple[str, int, int, int | None, str]]:
        """(method, rounds, teacher, student seed, round folder) of every run."""
        return ((*key, folder) for key, folder in zip(self.keys(), self.folders, strict=True))


@dataclass(frozen=True)
class Run:
    """One run directory: what its rules read from the config."""

    teacher: str  # the run whose round 0 it starts from (itself for a baseline)
    method: str  # how its pseudo labels are made: a METHODS name or labeled-only
    temperature: float | str  # the T of its own stores ("auto": fitted per model)
    seed: int  # of its training: a teacher's seed, a branch's student seed
    sampling_seed: int  # of its pseudo labels' sampling
    alpha: float | None = None  # round 1's alpha when not the round's ("dars@0.45")
    first_store: str | None = None  # the round-1 store it thresholds when its teacher's


class RunTable:
    """A config's run directories (relative to ``root``) in :attr:`runs`: the main run, one per
    teacher seed, one per (teacher, method, student seed); :attr:`comparison` for the tables."""

    def __init__(self, config: Config, root: str = "results") -> None:
        self.root, self.main, self.seed = root, config["run"], config["seed"]
        section, compare = config["pseudo_label"], config["compare"]
        self.main_temperature, self.tempered = section["temperature"], compare["temperature"]
        self.runs = {self.main: Run(self.main, section["method"], section["temperature"],
                                    self.seed, section["seed"])}
        # compare.teacher_seeds unset (null): the run's own baseline only
        teacher_seeds = list(compare["teacher_seeds"] or [int(self.seed)])
        for t in teacher_seeds:
            self.runs[self.teacher_folder(t)] = Run(self.teacher(t), BASELINE_METHOD, 1.0, t, 0)
            for name in dict.fromkeys([*compare["methods"], *compare["progressive"]]):
                variant = parse_variant(name)
                for k in compare["seeds"]:
                    self.runs[self.branch(t, name, k)] = Run(
                        self.teacher(t), variant.method,
                        self.tempered if variant.tempered else 1.0, k, k, variant.alpha,
                        self.teacher_store(t, variant.tempered))
        rounds = len(config["rounds"])
        keys = comparison_keys(branches(compare["methods"], compare["progressive"], rounds),
                               teacher_seeds, compare["seeds"])
        folders = tuple(self.round_dir(self.teacher(t) if m == BASELINE_METHOD
                                       else self.branch(t, m, k), r) for m, r, t, k in keys)
        self.comparison = Comparison(tuple(compare["methods"]), tuple(compare["progressive"]),
                                     tuple(compare["seeds"]), tuple(teacher_seeds), self.seed,
                                     rounds, folders)

    def __getitem__(self, run: str) -> Run:
        return self.runs[run]

    def teacher_folder(self, t: int) -> str:
        return f"{self.main}/compare/teacher{t}"

    def teacher(self, t: int) -> str:
        """The run whose round 0 is teacher ``t``: the main run for the run's seed."""
        return self.main if int(t) == int(self.seed) else self.teacher_folder(t)

    def branch(self, t: int, method: str, k: int) -> str:
        return f"{self.teacher_folder(t)}/{method}/seed{k}"

    def teacher_store(self, t: int, tempered: bool) -> str:
        """Teacher ``t``'s round-1 store at T = 1, or (``tempered``) at compare.temperature."""
        if tempered:
            return f"{self.root}/{self.teacher_folder(t)}/round1/{store_name(AT_TEMPERED)}"
        own = int(t) != int(self.seed) or self.main_temperature == 1.0
        return f"{self.root}/{self.teacher(t)}/round1/{store_name(OWN_T if own else AT_T1)}"

    def pattern(self, method: str | None = None, exclude: bool = False) -> str:
        """A regex of the run directories (with ``method``: those of it, or of every other)."""
        names = [d for d, r in self.runs.items()
                 if method is None or (r.method == method) != exclude]
        return "|".join(map(re.escape, names)) or "(?!)"  # (?!): matches nothing

    def round_dir(self, run: str, r: int | str) -> str:
        """The folder of round ``r`` of ``run``; round 0 is its teacher's."""
        return f"{self.root}/{self.runs[run].teacher if int(r) == 0 else run}/round{r}"

    def store(self, run: str, s: int | str) -> str:
        """The store round ``s`` of ``run`` thresholds: a branch's round 1 its teacher's."""
        first = self.runs[run].first_store
        own = f"{self.root}/{run}/round{s}/{store_name(OWN_T)}"
        return first if int(s) == 1 and first else own

    def store_temperature(self, run: str, suffix: str) -> float | str:
        """The T the store of ``run`` with ``suffix`` (:data:`STORE_SUFFIXES`) is inferred at."""
        return {OWN_T: self.runs[run].temperature, AT_T1: 1.0, AT_TEMPERED: self.tempered}[suffix]

    def alpha(self, run: str, s: int | str) -> float | None:
        """Round ``s``'s alpha of ``run`` when its own (None: the round's)."""
        return self.runs[run].alpha if int(s) == 1 else None
