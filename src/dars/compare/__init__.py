"""The paper's ablation (Tables 4 and 5, Figs. 1 and 3): a comparison is a set of runs.

:mod:`~dars.compare.runs` expands the config into the run directories (teachers and
branches) and their options, the one place that knows where each keeps what;
:mod:`~dars.compare.control` writes the labeled-only control's pseudo labels (a stage of the
branches); :mod:`~dars.compare.statistics` has the intervals, :mod:`~dars.compare.tables` the
tables and their markdown, :mod:`~dars.compare.plots` the figures, and
:mod:`~dars.compare.stage` is ``dars compare``, which the workflow hands every file it reads.
"""
