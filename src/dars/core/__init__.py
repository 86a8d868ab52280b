"""The base layer: error type, constants, config schema, stage options; imports no other dars."""
