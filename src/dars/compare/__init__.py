"""The paper's ablation (Tables 4, 5, Figs. 1, 3): a set of runs laid out by
:mod:`~dars.compare.runs` and tabulated by ``dars compare`` (:mod:`~dars.compare.stage`)."""
