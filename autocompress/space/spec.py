"""Search spaces as YAML: per layer (by type or name pattern), the choices of each knob.

A space file reads::

    version: 1
    round_to: null              # or e.g. 8: pruned channel counts become multiples of 8
    defaults:                   # choices for every compressible layer
      keep_ratio: [1.0, 0.75, 0.5, 0.25]
    rules:                      # applied in order; a later rule overrides a knob of an earlier one
      - match: {type: Linear}   # torch layer class (or a list); subclasses match too
        keep_ratio: [1.0]
      - match: {name: "layer3.*"}   # shell-style pattern on the module name
        keep_ratio: [1.0, 0.5]
      - match: {type: Linear}
        act_bits: [32, 8]
        tie: true               # one decision for every matched layer (not one per layer)

Knobs are those the registered compression methods declare (`compress.METHODS`); a method
added there is usable here.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from autocompress.compress.fits import refusal
from autocompress.compress.method import METHODS, ordered
from autocompress.config import check_setting, default_of, settings
from autocompress.errors import AutocompressError, SpaceError
from autocompress.space.discover import LAYER_TYPES, LayerInfo

SPACE_VERSION = 1
KNOBS = tuple(settings())
_PACKAGED = Path(__file__).resolve().parent.parent / "search_spaces"


@dataclass(frozen=True)
class Rule:
    """Choices for the layers a rule matches."""

    types: tuple[str, ...] | None
    pattern: str | None
    choices: Mapping[str, tuple[Any, ...]]
    tie: bool = False

    def matches(self, layer: LayerInfo) -> bool:
        """True when `layer` fits both the type and the name pattern (each optional); the type
        is the torch class a layer derives from (`discover.layer_type`)."""
        if self.types is not None and layer.type not in self.types:
            return False
        return self.pattern is None or fnmatch.fnmatchcase(layer.name, self.pattern)


@dataclass(frozen=True)
class Knob:
    """One searched decision: a parameter name for the sampler, its choices, and what it sets."""

    param: str
    setting: str
    choices: tuple[Any, ...]
    layers: tuple[str, ...]


@dataclass(frozen=True)
class SearchSpace:
    """A parsed search-space file.

    Args:
        defaults: knob -> choices for every layer.
        rules: overrides in order.
        round_to: channel multiple for pruning, or None.
        source: where it was read from (for messages and reports).
    """

    defaults: Mapping[str, tuple[Any, ...]]
    rules: tuple[Rule, ...] = ()
    round_to: int | None = None
    source: str = "<memory>"

    def choices_for(
        self, layer: LayerInfo, module: nn.Module | None = None
    ) -> dict[str, tuple[Any, ...]]:
        """The knob choices of one layer after applying every matching rule.

        Args:
            layer: the layer.
            module: the layer itself; when given, levels it cannot take are dropped
                (`compress.fits.refusal`), leaving the identity where none is left.
        """
        result = dict(self.defaults)
        for rule in self.rules:
            if rule.matches(layer):
                result.update(rule.choices)
        # Each knob applies to the layer types its method declares: an embedding table is
        # looked up, not multiplied, so only its storage bits can change; an LSTM computes
        # int8 with dynamic activations only and has no sparse form.
        known = settings()
        result = {k: v for k, v in result.items() if layer.type in known[k].layer_types}
        if module is not None:
            result = {k: _fitting(module, k, v) for k, v in result.items()}
        return result

    def knobs(
        self,
        layers: Sequence[LayerInfo],
        *,
        methods: Sequence[str] | None = None,
        model: nn.Module | None = None,
    ) -> list[Knob]:
        """Resolve the space on a model's layers into the decisions a sampler makes.

        Knobs decided per coupling group (channel keep ratios) or per block (dropping
        it) are decided once per group or block (`Setting.decided_per`; the intersection of its
        members' choices); every other knob once per layer. A knob whose single choice is the
        default (leave the layer as it is) is left out; one whose single choice is not (e.g.
        `weight_bits: [8]`) stays as a one-choice knob, so every plan applies it.

        Args:
            layers: from `discover(model, inputs)`.
            methods: only the knobs of these methods (`compress.METHODS` names); None for all.
            model: the dense model `layers` were found in; when given, each layer offers only
                the levels it can take (no rank that saves no weights, no 2:4 on an input
                width that is not a multiple of 4; `compress.fits`).

        Raises:
            SpaceError: a name rule matches no layer, a group's members share no choice, or
                an unknown method is named.
        """
        allowed = settings_for_methods(methods)
        for rule in self.rules:
            if rule.pattern is not None and not any(rule.matches(layer) for layer in layers):
                names = ", ".join(layer.name for layer in layers[:6])
                raise SpaceError(
                    f"{self.source}: rule with name {_excerpt(rule.pattern)} matches no layer; "
                    f"layer names look like: {names}"
                )
        modules = dict(model.named_modules()) if model is not None else {}
        per_layer = {
            layer.name: self.choices_for(layer, modules.get(layer.name)) for layer in layers
        }
        grouped = {s.name: s.decided_per for s in settings().values() if s.decided_per != "layer"}
        knobs = []
        for setting, unit in grouped.items():
            if setting in allowed:
                knobs += self._group_knobs(layers, per_layer, setting, unit)
        for layer in layers:
            for setting, choices in per_layer[layer.name].items():
                if setting not in grouped and setting in allowed and _decides(setting, choices):
                    knobs.append(Knob(f"{setting}:{layer.name}", setting, choices, (layer.name,)))
        for index, rule in enumerate(self.rules):
            if rule.tie:
                knobs = _tie(knobs, rule, index, {layer.name: layer for layer in layers})
        return knobs

    def _group_knobs(
        self,
        layers: Sequence[LayerInfo],
        per_layer: Mapping[str, Mapping[str, tuple[Any, ...]]],
        setting: str,
        unit: str,
    ) -> list[Knob]:
        groups: dict[str, list[str]] = {}
        for layer in layers:
            key = layer.group if unit == "group" else layer.block
            if key is not None:
                groups.setdefault(key, []).append(layer.name)
        knobs = []
        for group, members in groups.items():
            default = (default_of(setting),)
            shared = list(per_layer[members[0]].get(setting, default))
            for member in members[1:]:
                allowed = set(per_layer[member].get(setting, default))
                shared = [c for c in shared if c in allowed]
            if not shared:
                raise SpaceError(
                    f"{self.source}: layers {', '.join(members)} must be pruned together "
                    f"but their {setting} choices have nothing in common; give them a shared value"
                )
            if _decides(setting, shared):
                knobs.append(Knob(f"{setting}:{group}", setting, tuple(shared), tuple(members)))
        return knobs


def _tie(knobs: list[Knob], rule: Rule, index: int, layers: Mapping[str, LayerInfo]) -> list[Knob]:
    """Merge the knobs a tied rule sets, on the layers it matches, into one knob per setting.

    The merged knob takes the place of the first knob merged; its choices are those every
    merged knob offers, and its parameter is named after the rule (``act_bits:rule2``).
    """
    merged: list[Knob] = []
    for knob in knobs:
        tied = knob.setting in rule.choices and all(
            rule.matches(layers[name]) for name in knob.layers
        )
        if not tied:
            merged.append(knob)
            continue
        param = f"{knob.setting}:rule{index}"
        first = next((k for k in merged if k.param == param), None)
        if first is None:
            merged.append(Knob(param, knob.setting, knob.choices, knob.layers))
            continue
        shared = tuple(c for c in first.choices if c in knob.choices)
        if not shared:
            raise SpaceError(
                f"rules[{index}] ties {knob.setting} of layers with no choice in common; "
                "give them a shared value"
            )
        merged[merged.index(first)] = Knob(
            param, knob.setting, shared, (*first.layers, *knob.layers)
        )
    return merged


def _fitting(module: nn.Module, setting: str, choices: tuple[Any, ...]) -> tuple[Any, ...]:
    """The choices `module` can take; the identity value when it can take none of them."""
    kept = tuple(c for c in choices if refusal(module, setting, c) is None)
    return kept or (default_of(setting),)


def _decides(setting: str, choices: Sequence[Any]) -> bool:
    """True when a knob changes some plan: several choices, or one that is not the default."""
    return len(choices) > 1 or choices[0] != default_of(setting)


def settings_for_methods(methods: Sequence[str] | None) -> set[str]:
    """The LayerConfig knobs the named methods own (all of them for None).

    Raises:
        SpaceError: an unknown method name, or none at all (`--methods ''`).
    """
    if methods is None:
        return set(KNOBS)
    if not any(m.strip() for m in methods):
        raise SpaceError(
            f"--methods names no method; give some of {','.join(_methods())}, or leave it out "
            "for all of them"
        )
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise SpaceError(
            f"unknown method {_excerpt(unknown[0])} in --methods; "
            f"choose from: {', '.join(_methods())}"
        )
    return {s.name for m in methods for s in METHODS.get(m).settings}


def _methods() -> list[str]:
    """The method names in `apply`'s order (prune, lowrank, sparse, quant, ...)."""
    return [m.name for m in ordered()]


def _excerpt(value: Any, limit: int = 60) -> str:
    """`repr(value)`, cut to `limit` characters: an error line quotes a bad value, not a book."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _choices(value: Any, knob: str, where: str) -> tuple[Any, ...]:
    if not isinstance(value, list) or not value:
        raise SpaceError(
            f"{where}.{knob}: expected a non-empty list of choices, got {_excerpt(value)}"
        )
    for choice in value:
        # each choice alone: rules between knobs (act_bits 8 needs weight_bits 8) are kept
        # when a plan is drawn (`space.sample.valid_settings`)
        try:
            check_setting(knob, choice)
        except (AutocompressError, TypeError) as exc:
            raise SpaceError(f"{where}.{knob}: bad choice {_excerpt(choice)}: {exc}") from None
    return tuple(dict.fromkeys(value))


def _knob_table(data: Mapping[str, Any], where: str, extra: set[str]) -> dict[str, tuple[Any, ...]]:
    unknown = sorted(set(data) - set(KNOBS) - extra)
    if unknown:
        raise SpaceError(
            f"{where}: unknown key {_excerpt(unknown[0])}; knobs are: {', '.join(KNOBS)}"
        )
    return {k: _choices(v, k, where) for k, v in data.items() if k in KNOBS}


def _rule(data: Any, index: int, source: str) -> Rule:
    where = f"{source}: rules[{index}]"
    if not isinstance(data, Mapping):
        raise SpaceError(f"{where}: expected a mapping with 'match' and knobs")
    match = data.get("match")
    if not isinstance(match, Mapping) or not match:
        raise SpaceError(f"{where}.match: expected a mapping with 'type' and/or 'name'")
    unknown = sorted(set(match) - {"type", "name"})
    if unknown:
        raise SpaceError(f"{where}.match: unknown key {_excerpt(unknown[0])}; use 'type' or 'name'")
    types = match.get("type")
    if isinstance(types, str):
        types = [types]
    if types is not None and (
        not isinstance(types, list) or not all(isinstance(t, str) for t in types)
    ):
        raise SpaceError(f"{where}.match.type: expected a class name or a list of them")
    for name in types or ():
        if name not in LAYER_TYPES:
            raise SpaceError(
                f"{where}.match.type: {_excerpt(name)} is not a layer type; use one of "
                f"{', '.join(LAYER_TYPES)} (a subclass, e.g. a Conv2d that pads in forward, "
                "matches the torch class it derives from)"
            )
    pattern = match.get("name")
    if pattern is not None and not isinstance(pattern, str):
        raise SpaceError(f"{where}.match.name: expected a string pattern, got {_excerpt(pattern)}")
    choices = _knob_table(data, where, extra={"match", "tie"})
    if not choices:
        raise SpaceError(f"{where}: sets no knob; add one of: {', '.join(KNOBS)}")
    tie = data.get("tie", False)
    if not isinstance(tie, bool):
        raise SpaceError(f"{where}.tie: expected true or false, got {_excerpt(tie)}")
    return Rule(tuple(types) if types else None, pattern, choices, tie)


def parse_space(data: Any, *, source: str = "<memory>") -> SearchSpace:
    """Validate a loaded YAML document and build the SearchSpace.

    Raises:
        SpaceError: naming the key and what is wrong with it.
    """
    if not isinstance(data, Mapping):
        raise SpaceError(f"{source}: expected a mapping with 'version', 'defaults' and 'rules'")
    unknown = sorted(set(data) - {"version", "round_to", "defaults", "rules"})
    if unknown:
        raise SpaceError(
            f"{source}: unknown key {_excerpt(unknown[0])}; "
            "top-level keys are version, round_to, defaults, rules"
        )
    if data.get("version") != SPACE_VERSION:
        raise SpaceError(
            f"{source}: version must be {SPACE_VERSION}, got {_excerpt(data.get('version'))}"
        )
    round_to = data.get("round_to")
    if round_to is not None and (
        not isinstance(round_to, int) or isinstance(round_to, bool) or round_to < 1
    ):
        raise SpaceError(
            f"{source}: round_to must be a positive integer or null, got {_excerpt(round_to)}"
        )
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, Mapping):
        raise SpaceError(f"{source}: defaults must be a mapping of knob -> list of choices")
    rules = data.get("rules") or []
    if not isinstance(rules, list):
        raise SpaceError(f"{source}: rules must be a list")
    return SearchSpace(
        defaults=_knob_table(defaults, f"{source}: defaults", extra=set()),
        rules=tuple(_rule(r, i, source) for i, r in enumerate(rules)),
        round_to=round_to,
        source=source,
    )


def packaged_spaces() -> list[str]:
    """Names of the search spaces shipped with autocompress ("default", ...)."""
    return sorted(p.stem for p in _PACKAGED.glob("*.yaml"))


def load_space(path_or_name: str | Path = "default") -> SearchSpace:
    """Read a search space from a YAML file, or a packaged one by name ("default").

    Raises:
        SpaceError: the file is missing, not YAML, or malformed.
    """
    import yaml

    path = Path(path_or_name)
    if not path.exists() and (_PACKAGED / f"{path_or_name}.yaml").exists():
        path = _PACKAGED / f"{path_or_name}.yaml"
    if not path.is_file():
        raise SpaceError(
            f"search space {str(path_or_name)!r} not found; give a YAML file or one of: "
            f"{', '.join(packaged_spaces())}"
        )
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_no_alias_loader(path.name))
    except UnicodeDecodeError as exc:
        raise SpaceError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except yaml.YAMLError as exc:
        raise SpaceError(f"{path}: not valid YAML: {str(exc).splitlines()[0][:200]}") from None
    return parse_space(data, source=path.name)


def _no_alias_loader(source: str) -> type:
    """A safe YAML loader that refuses aliases (`*name`): a space needs none, and nested
    aliases expand exponentially (a few hundred bytes can become gigabytes)."""
    import yaml

    class Loader(yaml.SafeLoader):
        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.events.AliasEvent):
                mark = self.peek_event().start_mark
                raise SpaceError(
                    f"{source}: YAML aliases are not supported (line {mark.line + 1}); "
                    "write each value out"
                )
            return super().compose_node(parent, index)

    return Loader
