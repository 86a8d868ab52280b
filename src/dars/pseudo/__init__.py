"""Pseudo labels: label histogram, confidence histograms, thresholds and label assignment.

The thresholding maths (:mod:`dars.pseudo.thresholds`) and the per-image assignment
(:mod:`dars.pseudo.assign`) touch no file; :mod:`dars.pseudo.stage` does the I/O around them.
"""
