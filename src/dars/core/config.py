"""Load and validate run configuration against the one schema the Snakefile also uses
(``config.schema.yaml``, linked from ``workflow/schemas/``): it gives every key a default and
forbids unknown keys, so a typo stops the run with a message naming the key."""

from __future__ import annotations

import copy
import json
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from dars.core.errors import DarsError

Config = dict[str, Any]


@cache
def schema() -> dict[str, Any]:
    """The config JSON schema shipped inside the package."""
    return yaml.safe_load(resources.files("dars").joinpath("config.schema.yaml").read_text())


def _set_defaults(validator, properties, instance, subschema):  # type: ignore[no-untyped-def]
    """Validate ``properties``, filling in schema defaults (deep copies, not the schema's own)."""
    if isinstance(instance, dict):
        for key, sub in properties.items():
            if "default" in sub:
                instance.setdefault(key, copy.deepcopy(sub["default"]))
    yield from jsonschema.Draft202012Validator.VALIDATORS["properties"](
        validator, properties, instance, subschema)


_Validator = jsonschema.validators.extend(jsonschema.Draft202012Validator,
                                          {"properties": _set_defaults})


def _key_path(error: jsonschema.ValidationError) -> str:
    parts = [str(p) for p in error.absolute_path]
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        parts.append(",".join(extra))
        return ".".join(parts) + " (unknown key)"
    return ".".join(parts) or "<top level>"


def validate(config: Config) -> Config:
    """Validate ``config`` in place, fill defaults and return it; raise DarsError naming the key."""
    if not isinstance(config, dict):
        raise DarsError("config must be a mapping of keys to values")
    errors = sorted(_Validator(schema()).iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        message = err.message
        if err.validator in ("oneOf", "anyOf") and "description" in err.schema:
            message = f"{err.instance!r} is not valid: expected {err.schema['description']}"
        raise DarsError(f"config key {_key_path(err)}: {message}")
    return config


def coerce_cli_strings(value: Any) -> Any:
    """Nested numeric/boolean/null strings back to values, as ``snakemake --config`` gives them for
    e.g. rounds='[{alpha: 0.3}]'; top-level strings stay (a run name like "007")."""

    def coerce(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: coerce(x) for k, x in v.items()}
        if isinstance(v, list):
            return [coerce(x) for x in v]
        parsed = yaml.safe_load(v) if isinstance(v, str) and v.strip() else v
        return parsed if parsed is None or isinstance(parsed, bool | int | float) else v

    if isinstance(value, dict):
        return {k: coerce(v) if isinstance(v, dict | list) else v for k, v in value.items()}
    return value


def load(path: str | Path | None = None, json_text: str | None = None) -> Config:
    """A YAML file and/or a JSON string (a full or partial config), validated with defaults."""
    config: Config = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise DarsError(f"config file not found: {p}")
        try:
            config = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise DarsError(f"config file {p} is not valid YAML: {exc}") from exc
    if json_text:
        try:
            config.update(json.loads(json_text))
        except json.JSONDecodeError as exc:
            raise DarsError(f"--config-json is not valid JSON: {exc}") from exc
    return validate(config)


def epochs_per_round(config: Config) -> list[int]:
    """Epochs of round 0 (baseline) followed by each self-training round's."""
    return [config["train"]["epochs"]] + [r["epochs"] for r in config["rounds"]]


def scale_range(config: Config, round_index: int) -> tuple[float, float]:
    """The random-scale range of a round: round k >= 1 widens [s_min, s_max] to
    [(1 - beta_min) * s_min, (1 + beta_max) * s_max] with its betas (paper §3.3)."""
    s_min, s_max = config["train"]["scale"]
    if round_index == 0:
        return float(s_min), float(s_max)
    r = config["rounds"][round_index - 1]
    return (1 - r["beta_min"]) * s_min, (1 + r["beta_max"]) * s_max


def evaluate_schedule(config: Config, round_index: int) -> tuple[int, int]:
    """(evaluate_start, evaluate_every) of a round, in its own epochs: round 0's ``train``
    keys, which a round's own non-null keys override."""
    own = config["rounds"][round_index - 1] if round_index else {}
    start, every = (config["train"][k] if own.get(k) is None else own[k]
                    for k in ("evaluate_start", "evaluate_every"))
    return start, every
