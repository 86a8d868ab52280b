"""Pseudo labels: label histogram, confidence histograms, thresholds and label assignment.

The thresholds and assign modules touch no file; the stage module does the I/O around them."""
