"""The config kit: typed config dataclasses, their strict loader, and hash participation.

Generic, with nothing of a study in it: ``varscale.config`` builds the study's sections on
it, ``varscale.cell`` the cell's ``config.json``, ``varscale.data`` the dataset kinds' keys
and ``varscale.models.presets`` the presets. It imports nothing from varscale, so every one
of them can import it.

Loading is strict on purpose: a misspelt key silently falling back to a default would change
a scaling-law study without anyone noticing, so :func:`from_plain` reports every unknown key
(with a did-you-mean) and wrong type, each naming its path (``training.batch_size``), in one
:class:`ConfigError`.

Hash participation is declared on each field (``opt(default, hash=...)``):

* ``"always"``: the field enters the hash with its value (every field that existed when the
  committed studies were run; their hashes and cell ids are pinned in
  ``tests/test_pinned_hashes.py``);
* ``"when_set"``: the field enters only while it differs from its default. This is the rule
  for a field declared without ``hash=`` (plain ``name: int = 3`` too), so **a field added
  later, at its default, leaves every existing hash unchanged by construction**: the study
  hash, the data hash (half of the token cache's key), the tokenizer's config hash and every
  cell's run id. Set to another value it changes them, as it should;
* ``"never"``: how a thing is run, not what it computes (paths, thread counts, the study's
  name in a cell).

``hash`` may also map each scope to a rule: ``"id"`` (the study hash, the data hash and cell
run ids, which hash the same sections) and ``"tokenizer"`` (the tokenizer's config hash: the
data, tokenizer and preset sections). A field without a default always enters. A hash is
``digest(hash_view(obj, scope))``.

Removed options are declared in a section's ``RETIRED`` table (:class:`Retired`): a file that
still carries one at its old value loads (the key is ignored), any other value is an error
saying the option was removed, and the old value keeps entering the hashes it entered while it
existed, so removing an option changes no hash.

A config dataclass may shape itself through three optional hooks: ``_from_raw(raw, path,
errors)`` (its own loader), ``_plain()`` (its file mapping) and ``_hash_view(scope)`` (its
hash view); ``varscale.config.DataConfig`` uses all three.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import types
import typing
from dataclasses import MISSING, dataclass, field
from typing import Any, Literal, Optional, Union


class ConfigError(ValueError):
    """One or more problems in a study file or cell config; ``errors`` lists them one per line."""

    def __init__(self, errors: list[str], source: str | None = None, what: str = "study file"):
        self.errors = list(errors)
        head = f"invalid {what} {source}" if source else "invalid study config"
        super().__init__(head + ":\n" + "\n".join(f"  - {e}" for e in self.errors))


# --------------------------------------------------------------------------- hash declarations

HashRule = Literal["always", "when_set", "never"]
SCOPES = ("id", "tokenizer")
_RULES = typing.get_args(HashRule)


def hash_rules(hash: Union[str, dict[str, str]]) -> dict[str, str]:
    """A ``hash=`` declaration as one rule per scope (ValueError for anything else)."""
    rules = {s: hash for s in SCOPES} if isinstance(hash, str) else dict(hash)
    if set(rules) != set(SCOPES) or any(r not in _RULES for r in rules.values()):
        raise ValueError(f"hash must be one of {_RULES} or a mapping of every scope {SCOPES} to one, got {hash!r}")
    return rules


def opt(default: Any = MISSING, *, factory: Any = MISSING, hash: Union[str, dict[str, str]] = "when_set",
        key: Optional[str] = None) -> Any:
    """A config field whose hash participation is declared (see the module docstring).

    ``factory`` is a default factory (lists, nested sections); ``key`` the name in the file
    when it differs from the field's (``from`` is a Python keyword).
    """
    md: dict[str, Any] = {"hash": hash_rules(hash)}
    if key:
        md["key"] = key
    return field(default=default, default_factory=factory, metadata=md)


@dataclass(frozen=True)
class Retired:
    """A removed option: ``value`` is the only one still accepted (and ignored); ``reason``
    says why it went; ``hash`` is how it entered hashes while it existed (``"always"``: the
    old value keeps entering them, so no hash changes)."""

    value: Any
    reason: str
    hash: Union[str, dict[str, str]] = "always"


def field_rule(f: dataclasses.Field, scope: str) -> str:
    """The field's rule in ``scope``: as declared, else "when_set" (or "always" without a default)."""
    md = f.metadata.get("hash")
    if md is not None:
        return md[scope]
    if f.default is MISSING and f.default_factory is MISSING:
        return "always"  # nothing to compare with
    return "when_set"


def field_default(f: dataclasses.Field) -> Any:
    """The field's default (its factory called), or ``MISSING``."""
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return MISSING


def file_key(f: dataclasses.Field) -> str:
    """The field's key in the file (``opt(key=...)``, else its name)."""
    return f.metadata.get("key", f.name)


def hash_view(obj: Any, scope: str = "id") -> Any:
    """``obj`` as the plain data its hash is taken over in ``scope`` ("id" or "tokenizer").

    Fields enter by their declared rule; a section's retired options enter with their old
    value where they always did; a section may shape its own view (``DataConfig``: flat, every
    dataset kind's keys).
    """
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        own = getattr(obj, "_hash_view", None)
        if own is not None:
            return own(scope)
        out = {}
        for f in dataclasses.fields(obj):
            rule = field_rule(f, scope)
            v = getattr(obj, f.name)
            if rule == "never" or (rule == "when_set" and v == field_default(f)):
                continue
            out[file_key(f)] = hash_view(v, scope)
        for k, r in getattr(type(obj), "RETIRED", {}).items():
            if hash_rules(r.hash)[scope] == "always":
                out[k] = r.value
        return out
    if isinstance(obj, (list, tuple)):
        return [hash_view(v, scope) for v in obj]
    if isinstance(obj, dict):
        return {str(k): hash_view(v, scope) for k, v in obj.items()}
    return obj


def digest(view: Any, n: int = 8) -> str:
    """The first ``n`` hex digits of the SHA-256 of ``view`` as sorted-key JSON."""
    return hashlib.sha256(json.dumps(view, sort_keys=True, default=str).encode()).hexdigest()[:n]


# ------------------------------------------------------------------ strict conversion


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        s = " or ".join(_type_name(a) for a in args)
        return s + " or null" if len(args) < len(typing.get_args(tp)) else s
    if origin in (list, tuple):
        args = typing.get_args(tp)
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        return "mapping"
    if dataclasses.is_dataclass(tp):
        return "mapping (" + tp.__name__ + ")"
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, path: str, errors: list[str]) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            trial: list[str] = []
            out = _convert(value, a, path, trial)
            if not trial:
                return out
        errors.append(f"{path}: expected {_type_name(tp)}, got {show_value(value)}")
        return None
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            hint = did_you_mean(str(value), [str(a) for a in allowed])
            errors.append(f"{path}: {show_value(value)} is not one of {', '.join(map(repr, allowed))}{hint}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            errors.append(f"{path}: expected {_type_name(tp)}, got {show_value(value)}")
            return tp()
        return build(tp, value, path, errors)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            errors.append(f"{path}: expected {_type_name(tp)}, got {show_value(value)}")
            return value
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                errors.append(f"{path}: expected {len(args)} values, got {len(value)}")
                return tuple(value)
            return tuple(_convert(v, a, f"{path}[{i}]", errors) for i, (v, a) in enumerate(zip(value, args)))
        inner = args[0] if args else Any
        out = [_convert(v, inner, f"{path}[{i}]", errors) for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            errors.append(f"{path}: expected mapping, got {show_value(value)}")
            return {}
        _, vt = typing.get_args(tp)
        return {str(k): _convert(v, vt, f"{path}.{k}", errors) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            errors.append(f"{path}: expected bool (true/false), got {show_value(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            # 1e3 in YAML is a string or float; accept whole floats, nothing else
            if isinstance(value, float) and value.is_integer():
                return int(value)
            if isinstance(value, str):
                try:
                    f = float(value)
                    if f.is_integer():
                        return int(f)
                except ValueError:
                    pass
            errors.append(f"{path}: expected int, got {show_value(value)}")
        return value
    if tp is float:
        if isinstance(value, bool):
            errors.append(f"{path}: expected float, got {show_value(value)}")
            return value
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):  # PyYAML reads 1e12 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        errors.append(f"{path}: expected float, got {show_value(value)}")
        return value
    if tp is str:
        if not isinstance(value, str):
            errors.append(f"{path}: expected str, got {show_value(value)}")
        return value
    return value


def show_value(v: Any) -> str:
    """A value as an error message quotes it: its repr (cut at 60 characters) and type."""
    s = repr(v)
    return (s[:60] + "...") if len(s) > 60 else s + f" ({type(v).__name__})"


def nearest(word: str, choices, cutoff: float = 0.6) -> Optional[str]:
    """The choice closest to a mistyped ``word`` (None when none is close): every did-you-mean."""
    m = difflib.get_close_matches(word, list(choices), n=1, cutoff=cutoff)
    return m[0] if m else None


def did_you_mean(key: str, valid: list[str]) -> str:
    """`` (did you mean 'x'?)`` for the valid word nearest ``key``, or an empty string."""
    m = nearest(key, valid)
    return f" (did you mean '{m}'?)" if m else ""


def build(cls: type, raw: dict, path: str, errors: list[str]) -> Any:
    """``cls`` from ``raw`` through its own ``_from_raw`` if it has one, else :func:`build_fields`;
    problems are appended to ``errors``."""
    own = getattr(cls, "_from_raw", None)
    if own is not None:
        return own(raw, path, errors)
    return build_fields(cls, raw, path, errors)


def build_fields(cls: type, raw: dict, path: str, errors: list[str]) -> Any:
    """``cls`` from the mapping ``raw``: every key converted to its field's type, unknown keys
    and removed options' other values reported under ``path``."""
    hints = typing.get_type_hints(cls)
    by_key = {file_key(f): f for f in dataclasses.fields(cls) if f.init}
    retired = getattr(cls, "RETIRED", {})
    kwargs = {}
    for k, v in raw.items():
        k = str(k)
        where = f"{path}.{k}" if path else k
        if k in retired:
            r = retired[k]
            if v != r.value:
                errors.append(f"{where}: option removed: {r.reason}; only its old value "
                              f"{json.dumps(r.value)} still loads (remove the key)")
            continue
        if k not in by_key:
            valid = sorted(by_key)
            errors.append(f"{where}: unknown key '{k}'{did_you_mean(k, valid)}; "
                          f"valid keys{' in ' + path if path else ''}: {', '.join(valid)}")
            continue
        f = by_key[k]
        kwargs[f.name] = _convert(v, hints[f.name], where, errors)
    try:
        return cls(**kwargs)
    except TypeError as e:  # a required field missing, or a bad value left by a conversion error
        errors.append(f"{path or '<root>'}: {e}")
        return None


def to_plain(obj: Any) -> Any:
    """Dataclasses -> the plain mappings of the file format (tuples as lists)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        own = getattr(obj, "_plain", None)
        if own is not None:
            return {k: to_plain(v) for k, v in own().items()}
        return {file_key(f): to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    return obj


def from_plain(cls: type, raw: Any, source: str | None = None, what: str = "study file") -> Any:
    """``cls`` (a config dataclass) from plain data, strictly: ConfigError lists every problem."""
    if not isinstance(raw, dict):
        raise ConfigError([f"<root>: expected a mapping, got {show_value(raw)}"], source, what)
    errors: list[str] = []
    out = build(cls, raw, "", errors)
    if errors:
        raise ConfigError(errors, source, what)
    return out

