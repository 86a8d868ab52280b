"""Running jobs: GPU slots and the per-stage summary line; imports only :mod:`dars.core`."""
