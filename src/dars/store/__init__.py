"""Artifacts on disk: atomic writes, manifests, csv/json reads and the probability store.
Imports only :mod:`dars.core` and :mod:`dars.stats`."""
