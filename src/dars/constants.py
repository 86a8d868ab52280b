"""Values every stage must agree on, kept in one place (this module imports nothing)."""

#: "No label" inside the pipeline: masks are read with the dataset's own ignore value mapped to
#: this (dars.data.io.read_mask), and pseudo labels, padding, the loss and the metrics use it.
IGNORE = 255
