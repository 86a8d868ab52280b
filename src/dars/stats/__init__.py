"""Pure counting on arrays (no file, no store): the exact confidence histograms. Imports only
:mod:`dars.core`."""
