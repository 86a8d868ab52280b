"""The layer every other one builds on: the error type, shared constants, the config schema
and the stage options. Imports no other part of dars."""
