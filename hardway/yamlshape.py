"""The shape pass of every YAML file hardway reads: cluster.yaml, pki/catalog.yaml, units/plan.yaml.

A pydantic model (`extra="forbid"`, strict) says what keys and types a file may hold; this module turns
pydantic's errors into one line per problem in the user's words: the line in the file, the field path,
the value as written, and what is allowed (the valid keys, with a did-you-mean; the allowed values).
What the fields mean together is each reader's own second pass.
"""

from __future__ import annotations

import difflib
import types
from typing import Any, Callable, Iterable, Iterator, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError



class Strict(BaseModel):
    """The base of every file's model: unknown keys are errors, types are not coerced ("1" is no 1)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def parse_yaml(text: str) -> tuple[yaml.Node | None, Any]:
    """The node tree (for line numbers) and the data built from it, in one pass of the parser
    (libyaml's when available: the 1000-worker example parses in a tenth of the time)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(text)
    try:
        tree = loader.get_single_node()
        return tree, (loader.construct_document(tree) if tree is not None else None)
    finally:
        loader.dispose()


def yaml_syntax_problem(e: yaml.MarkedYAMLError, document: str = "a cluster spec") -> str:
    """`e` as one line: where, what, and the context that started there."""
    mark = e.problem_mark or e.context_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    problem = e.problem or "cannot parse it"
    context = ""
    if e.context and "single document" in e.context:
        problem, context = f"a second YAML document ('---'); {document} is one document", ""
    elif e.context:
        context = f" ({e.context}"
        if e.context_mark and e.problem_mark and e.context_mark.line != e.problem_mark.line:
            context += f" that starts on line {e.context_mark.line + 1}, column {e.context_mark.column + 1}"
        context += ")"
    return f"{where}YAML syntax error: {problem}{context}"


def kind(value: Any) -> str:
    if value is None:
        return "an empty value"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"  # dates and timestamps


class Scan:
    """What the parsed data forgets: the line of each field, the text as written, duplicate keys.
    Without a tree (data built in code) it knows nothing, and messages have no line numbers."""

    def __init__(self, tree: yaml.Node | None):
        self.lines: dict[tuple, int] = {}
        self.raw: dict[tuple, str] = {}
        self.duplicates: list[tuple[tuple, int, int]] = []
        self._walk(tree, (), set())

    def _walk(self, node: yaml.Node | None, path: tuple, seen: set[int]) -> None:
        if node is None or id(node) in seen:  # an alias may point back at its parent
            return
        seen = seen | {id(node)}
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.ScalarNode):
            self.raw[path] = node.value
        elif isinstance(node, yaml.MappingNode):
            first: dict[str, int] = {}
            for key, value in node.value:
                if not isinstance(key, yaml.ScalarNode):
                    continue
                sub = path + (key.value,)
                line = key.start_mark.line + 1
                if key.value in first:
                    self.duplicates.append((sub, first[key.value], line))
                    continue
                first[key.value] = line
                self._walk(value, sub, seen)
                self.lines[sub] = line
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self._walk(item, path + (i,), seen)

    def at(self, loc: tuple) -> str:
        """'line N: ' of the field, or of the nearest enclosing one that is in the file."""
        loc = tuple(loc)
        while loc and loc not in self.lines:
            loc = loc[:-1]
        return f"line {self.lines[loc]}: " if loc else ""


def path(loc: Iterable) -> str:
    """A field path as the user reads it: nodes[0].roles."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "the top level of the file"


# ---------------------------------------------------------------- the model at a path ------------

def _members(annotation) -> tuple:
    """The types a field may hold: the members of a union (X | None), or the type itself."""
    if get_origin(annotation) in (Union, types.UnionType):
        return get_args(annotation)
    return (annotation,)


def _fields(model: type[BaseModel]) -> dict:
    """The model's keys as written in the file (an alias when the key is not a Python name)."""
    return {(f.alias or name): f for name, f in model.model_fields.items()}


def _step(annotation, part):
    for member in _members(annotation):
        if isinstance(part, int) and get_origin(member) in (list, tuple):
            return get_args(member)[0]
        if isinstance(part, str) and isinstance(member, type) and issubclass(member, BaseModel):
            found = _fields(member).get(part)
            return found.annotation if found else None
        if isinstance(part, str) and get_origin(member) is dict:
            return get_args(member)[1]
    return None


def _at(model: type[BaseModel], loc: tuple):
    annotation = model
    for part in loc:
        annotation = _step(annotation, part)
        if annotation is None:
            return None
    return annotation


def fields_of(model: type[BaseModel], loc: tuple) -> list[str]:
    """The valid keys at the mapping that holds `loc`'s last part."""
    found = _at(model, loc[:-1])
    for member in _members(found) + sum((get_args(m) for m in _members(found)), ()):
        if isinstance(member, type) and issubclass(member, BaseModel):
            return list(_fields(member))
    return []


def allowed_values(model: type[BaseModel], loc: tuple) -> list[str]:
    """The values a Literal field allows."""
    for member in _members(_at(model, loc)):
        if get_origin(member) is Literal:
            return [str(v) for v in get_args(member)]
    return []


# ---------------------------------------------------------------- messages -----------------------

def got(loc: tuple, value: Any, raw: dict[tuple, str]) -> str:
    """The bad value as the user wrote it, and what YAML made of it when that is the surprise."""
    if isinstance(value, (dict, list)) or value is None:
        return kind(value)
    text = raw.get(loc)
    if isinstance(value, str) or text is None:
        shown = repr(value)
        return shown if len(shown) <= 80 else shown[:77] + "..."
    return f"{text}, which YAML reads as {kind(value)}"


def _nothing(loc: tuple) -> str:
    return ""


Special = Callable[[tuple, str, Any, str], "str | None"]  # (loc, pydantic error type, value, got) -> message


def shape_problems(error: ValidationError, raw: dict[tuple, str], model: type[BaseModel], *,
                   required: Callable[[tuple], str] = _nothing, examples: dict[str, str] | None = None,
                   special: Special | None = None) -> Iterator[tuple[tuple, str]]:
    """(loc, "path: what is wrong; what is allowed") for each of pydantic's errors. `required(loc)`
    says what a required field holds (": ..."), `examples` shows a string field's value by key, and
    `special` may word one error its own way (None: the usual words)."""
    examples = examples or {}
    for e in error.errors():
        loc = tuple(e["loc"])
        kind_ = e["type"]
        value = e.get("input")
        key = str(loc[-1]) if loc else ""
        where = path(loc)
        shown = got(loc, value, raw)
        own = special(loc, kind_, value, shown) if special else None
        if kind_ == "extra_forbidden":
            valid = fields_of(model, loc)
            close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
            hint = f"did you mean '{close[0]}'? " if close else ""
            yield loc, f"{where}: unknown key '{key}'; {hint}allowed here: {', '.join(valid)}"
        elif kind_ == "missing":
            yield loc, f"{where}: missing, and required{required(loc)}"
        elif own is not None:
            yield loc, f"{where}: {own}"
        elif value is None and kind_ in ("string_type", "int_type", "list_type", "model_type", "dict_type"):
            what = {"string_type": "a string", "int_type": "a whole number", "list_type": "a list"}.get(kind_)
            what = what or f"a mapping with the keys {', '.join(fields_of(model, loc + ('x',)))}"
            yield loc, f"{where}: is empty; it must be {what}{required(loc)}"
        elif kind_ == "invalid_key":
            valid = fields_of(model, loc)
            yield loc[:-1], f"{path(loc[:-1])}: unknown key {raw.get(loc, key)}; allowed here: {', '.join(valid)}"
        elif kind_ in ("model_type", "dict_type"):
            keys = fields_of(model, loc + ("x",))
            what = f"a mapping with the keys {', '.join(keys)}" if keys else "a mapping"
            yield loc, f"{where}: must be {what}; got {shown}"
        elif kind_ == "list_type":
            hint = f"; write {key}: [{raw[loc]}]" if isinstance(value, str) and loc in raw else ""
            yield loc, f"{where}: must be a list, got {shown}{hint}"
        elif kind_ == "string_type":
            hint = ""
            if key in examples:  # quoting would not help: the value needs a unit or a name
                hint = f"; e.g. {key}: {examples[key]}"
            elif loc in raw:
                hint = f'; quote it: "{raw[loc]}"' if isinstance(loc[-1], int) else f'; quote it: {key}: "{raw[loc]}"'
            yield loc, f"{where}: must be a string, got {shown}{hint}"
        elif kind_ in ("int_type", "int_parsing", "int_from_float"):
            hint = "; remove the quotes" if isinstance(value, str) and value.strip().isdigit() else ""
            yield loc, f"{where}: must be a whole number, got {shown}{hint}"
        elif kind_ == "literal_error":
            yield loc, f"{where}: unknown value {shown}; allowed: {', '.join(allowed_values(model, loc))}"
        elif kind_ == "bool_type":
            yield loc, f"{where}: must be true or false, got {shown}"
        else:
            yield loc, f"{where}: {e['msg']}, got {shown}"


def validate(model: type[BaseModel], data: Any, scan: Scan, **wording) -> tuple[BaseModel | None, list[str]]:
    """The model instance and no problems, or None and one "line N: path: ..." line per problem
    (duplicate keys first). `wording`: shape_problems's keyword arguments."""
    problems = [f"line {line}: {path(loc)}: duplicate key; the first is on line {first}, and YAML would silently keep only the last; remove one"
                for loc, first, line in scan.duplicates]
    try:
        value = model.model_validate(data)
    except ValidationError as e:
        problems += [scan.at(loc) + msg for loc, msg in shape_problems(e, scan.raw, model, **wording)]
        value = None
    return (None if problems else value), problems
