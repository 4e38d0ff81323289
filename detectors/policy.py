"""The policy: every threshold, with defaults, and per-location overrides, read from YAML.

A policy file looks like ``detectors/default_policy.yaml`` (which holds the defaults)::

    alert: {elevated: 55, high: 80}
    rules:
      rapid_drain: {window_minutes: 240, min_share: 0.6}
    locations:
      STORE-7:                          # a store that sells corporate batches
        rules:
          bulk_purchase: {min_cards_location: 12}

Anything not set keeps its default; an unknown section, rule or parameter stops loading with a
:class:`PolicyError` that names it.

>>> p = Policy.load(None)
>>> p.at("ANY").alert.elevated, p.at("ANY").rule("rapid_drain").min_share
(55.0, 0.3)
>>> q = Policy.from_dict({"locations": {"S7": {"rules": {"bulk_purchase": {"min_cards_location": 12}}}}})
>>> q.at("S7").rule("bulk_purchase").min_cards_location, q.at("S8").rule("bulk_purchase").min_cards_location
(12, 4)
>>> Policy.from_dict({"rules": {"rapid_drian": {}}})
Traceback (most recent call last):
...
detectors.policy.PolicyError: unknown rule 'rapid_drian' in rules (known: ...)
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import yaml

from detectors.models import MODEL_PARAMS
from detectors.rules import RULE_PARAMS


class PolicyError(ValueError):
    """The policy file is invalid; the message names the section and key."""


@dataclass(frozen=True, slots=True)
class AlertParams:
    """When a score becomes an alert (policy section ``alert``)."""

    elevated: float = 55.0       # score at or above which an alert is raised
    high: float = 80.0           # score at or above which the alert is ``high``
    min_rule_score: float = 45.0  # no alert unless one rule alone is this sure (weak evidence
    #                               and model signals add up, but never alert on their own)
    realert_hours: float = 24.0  # the same rules on the same card alert again only after this
    realert_margin: float = 10.0  # ... or when the score rises by this much
    carry_over: float = 0.9       # later spending on an alerted card inherits this share of
    carry_over_days: float = 7.0  # ... the alert's score, halving every this many days


def _coerce(section: str, name: str, default: Any, value: Any) -> Any:
    kind = type(default)
    try:
        if kind is bool:
            if not isinstance(value, bool):
                raise TypeError
            return value
        if kind is int:
            if isinstance(value, bool) or float(value) != int(value):
                raise TypeError
            return int(value)
        if kind is float:
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if kind is tuple:
            return tuple(value)
        return kind(value)
    except (TypeError, ValueError):
        raise PolicyError(f"{section}.{name} must be {kind.__name__}, got {value!r}") from None


def _override(section: str, params: Any, values: Any) -> Any:
    if values is None:
        return params
    if not isinstance(values, dict):
        raise PolicyError(f"{section} must be a mapping")
    known = {f.name: f for f in dataclasses.fields(params)}
    changes = {}
    for key, value in values.items():
        if key not in known:
            raise PolicyError(f"unknown parameter {key!r} in {section} "
                              f"(known: {', '.join(sorted(known))})")
        changes[key] = _coerce(section, key, getattr(params, key), value)
    return dataclasses.replace(params, **changes)


def _named(section: str, base: dict[str, Any], values: Any, kind: str) -> dict[str, Any]:
    if values is None:
        return dict(base)
    if not isinstance(values, dict):
        raise PolicyError(f"{section} must be a mapping")
    out = dict(base)
    for name, sub in values.items():
        if name not in base:
            raise PolicyError(f"unknown {kind} {name!r} in {section} "
                              f"(known: {', '.join(sorted(base))})")
        out[name] = _override(f"{section}.{name}", base[name], sub)
    return out


class LocationPolicy:
    """The resolved thresholds at one location: ``alert``, ``rule(name)`` and ``model(name)``."""

    __slots__ = ("alert", "models", "rules")

    def __init__(self, alert: AlertParams, rules: dict[str, Any], models: dict[str, Any]):
        self.alert = alert
        self.rules = rules
        self.models = models

    def rule(self, name: str) -> Any:
        return self.rules[name]

    def model(self, name: str) -> Any:
        return self.models[name]


_SECTIONS = ("alert", "rules", "models")
_YAML_HEADER = """\
# GiftGuard detector policy: the built-in defaults, written out by `python -m detectors.policy`.
# Copy this file, change what you need, and point GIFTGUARD_POLICY (or `backtest --policy`) at it.
# Anything left out keeps its default. Per-location overrides go under `locations`, e.g.:
#
#   locations:
#     STORE-7:                      # sells corporate batches of cards
#       rules:
#         bulk_purchase: {min_cards_location: 12}
#       alert: {elevated: 65}
#
# Amounts are in minor units (cents); scores are 0-100; each rule's module documents its numbers.
"""


class Policy:
    """Thresholds with per-location overrides. Build with :meth:`load` or :meth:`from_dict`."""

    def __init__(self, default: LocationPolicy, overrides: dict[str, LocationPolicy],
                 digest: str) -> None:
        self.default = default
        self.overrides = overrides
        self.digest = digest

    def at(self, location_id: str) -> LocationPolicy:
        """The thresholds that apply at ``location_id``."""
        return self.overrides.get(location_id, self.default)

    @classmethod
    def load(cls, path: str | Path | None) -> Policy:
        """Read a YAML policy; ``None`` gives the built-in defaults."""
        if path is None:
            return cls.from_dict({})
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except yaml.YAMLError as exc:
            raise PolicyError(f"{path}: not YAML: {exc}") from None
        try:
            return cls.from_dict(data)
        except PolicyError as exc:
            raise PolicyError(f"{path}: {exc}") from None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Policy:
        if not isinstance(data, dict):
            raise PolicyError("a policy must be a mapping")
        # ``holds`` sections belong to the worker's hold policy (streams/holds.py): allowed in
        # the same file, ignored here, and not part of the detectors' version digest.
        data = {k: v for k, v in data.items() if k != "holds"}
        for key in data:
            if key not in (*_SECTIONS, "locations", "version"):
                raise PolicyError(f"unknown section {key!r} (known: alert, rules, models, "
                                  "locations)")
        rules = {name: cls_() for name, cls_ in RULE_PARAMS.items()}
        models = {name: cls_() for name, cls_ in MODEL_PARAMS.items()}
        default = cls._resolve("", AlertParams(), rules, models, data)
        overrides = {}
        locations = data.get("locations") or {}
        if not isinstance(locations, dict):
            raise PolicyError("locations must be a mapping of location id to overrides")
        for loc, sub in locations.items():
            if not isinstance(sub, dict):
                raise PolicyError(f"locations.{loc} must be a mapping")
            sub = {k: v for k, v in sub.items() if k != "holds"}
            for key in sub:
                if key not in _SECTIONS:
                    raise PolicyError(f"unknown section {key!r} in locations.{loc}")
            overrides[str(loc)] = cls._resolve(f"locations.{loc}.", default.alert,
                                               default.rules, default.models, sub)
        digest = hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS,
                                             default=str)).hexdigest()[:8]
        return cls(default, overrides, digest)

    @staticmethod
    def _resolve(prefix: str, alert: AlertParams, rules: dict[str, Any],
                 models: dict[str, Any], data: dict[str, Any]) -> LocationPolicy:
        return LocationPolicy(
            _override(f"{prefix}alert", alert, data.get("alert")),
            _named(f"{prefix}rules", rules, data.get("rules"), "rule"),
            _named(f"{prefix}models", models, data.get("models"), "model"),
        )

    def to_yaml(self) -> str:
        """The default thresholds as the commented YAML of ``default_policy.yaml``."""
        return _YAML_HEADER + yaml.safe_dump(self.to_dict(), sort_keys=False)

    def to_dict(self) -> dict[str, Any]:
        """The default thresholds as plain data (what ``default_policy.yaml`` holds)."""
        d = self.default
        return {
            "alert": dataclasses.asdict(d.alert),
            "rules": {k: dataclasses.asdict(v) for k, v in d.rules.items()},
            "models": {k: dataclasses.asdict(v) for k, v in d.models.items()},
        }


if __name__ == "__main__":  # pragma: no cover - regenerates default_policy.yaml
    print(Policy.load(None).to_yaml(), end="")
