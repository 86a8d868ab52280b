"""Datasets: split files, image/mask folders, the embedded demo and training transforms."""
