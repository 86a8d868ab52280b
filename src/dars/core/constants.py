"""Values every stage must agree on, kept in one place (this module imports nothing)."""

#: "No label" inside the pipeline: masks are read with the dataset's own ignore value mapped to
#: this (dars.data.images.read_mask), and pseudo labels, padding, the loss and the metrics use it.
IGNORE = 255

#: ``prediction`` value of store pixels outside an image (images of several sizes are padded to
#: the largest): the same byte as IGNORE, so padding can never become a pseudo label.
PAD = IGNORE

#: float16 bit pattern of 1.0, the largest valid confidence; confidence histograms have one
#: column per bit pattern 0 .. ONE_BITS (exact thresholds for float16 confidences).
ONE_BITS = 0x3C00
NUM_BINS = ONE_BITS + 1
