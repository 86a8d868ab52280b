"""dars-pipeline: DARS semi-supervised semantic segmentation as a Snakemake workflow."""

__version__ = "0.1.0"
