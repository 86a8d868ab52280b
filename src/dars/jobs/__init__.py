"""Running jobs: GPU slots for a job and the per-stage summary line. Imports only
:mod:`dars.core`."""
