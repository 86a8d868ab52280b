"""The paper's ablation (Tables 4 and 5, Figs. 1 and 3): a comparison is a set of runs, laid
out by :mod:`~dars.compare.runs` and tabulated by ``dars compare`` (:mod:`~dars.compare.stage`).
"""
