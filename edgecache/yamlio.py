"""Reading YAML that users hand us, within bounds: the one loader every YAML reader uses.

Sits at the bottom of the stack, next to :mod:`edgecache.config`: the CLI's ``--config`` file
(:func:`edgecache.config.settings_from_yaml`), Dataset/EdgeCacheRuntime/DataLoad files
(:mod:`edgecache.dataset`) and, later, the controller and agent read YAML only through
:func:`load_yaml_documents` and files only through :func:`read_text_file`.

A YAML file is untrusted input: 425 bytes of nested aliases (a "billion laughs") expand to
billions of nodes, 50,000 ``[`` exhaust the recursion limit, a 5,000-digit number is more than
Python's ``int`` accepts, ``/dev/zero`` never ends. So every input is bounded *before* it is
parsed, by :class:`YAMLLimits`:

- the file is read up to ``max_bytes`` and refused beyond, and refused when it is binary (a NUL
  byte) or not UTF-8;
- nesting deeper than ``max_depth`` is refused while the document is composed, before anything
  recursive walks it;
- a scalar longer than ``max_scalar_chars``, a number longer than ``max_number_chars`` is
  refused;
- a key given twice in one mapping is refused (PyYAML keeps the last silently, so a typo'd
  second ``name:`` would win unseen; kubectl refuses it too); a merge key (``<<: *base``) may
  still be overridden, as YAML intends;
- aliases are **allowed, within a budget**: an alias counts every node of what it repeats
  against ``max_expanded_nodes``, so a document is refused as soon as its expanded size passes
  the budget; recursive aliases are refused. (Refusing aliases altogether would be simpler, but
  kubectl accepts them and people share one ``options:`` block among several mounts with an
  anchor; the budget keeps that working and stops bombs at the first alias over the line.)

Every failure is a :class:`~edgecache.errors.ConfigError` of one line: the source, what is
wrong, where (line and column), and the limit.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent, ScalarEvent
from yaml.nodes import MappingNode, Node, ScalarNode
from yaml.resolver import Resolver

from edgecache.errors import ConfigError, quoted

__all__ = ["DEFAULT_LIMITS", "YAMLLimits", "load_yaml_documents", "read_text_file"]

KiB = 1024
MiB = 1024**2


@dataclass(frozen=True)
class YAMLLimits:
    """Bounds on one YAML input. The defaults leave room for any real config or Dataset file
    (a few KiB, nested less than 15 levels) and bound what a hostile one costs to well under a
    second and a few MiB."""

    max_bytes: int = 1 * MiB
    """Largest file, in bytes. A Kubernetes object is at most 1.5 MiB once stored; a config or
    Dataset file is a few KiB, so 1 MiB refuses nothing real and parses in about a second."""
    max_depth: int = 100
    """Deepest nesting of mappings and sequences. Kubernetes manifests (a Pod template inside a
    Deployment included) stay below 20; 100 keeps every recursive walk far from Python's
    recursion limit."""
    max_scalar_chars: int = 256 * KiB
    """Longest single value, in characters: room for an inline CA bundle or a ConfigMap script
    bundled in the same file, not for a value that is really a file of its own."""
    max_number_chars: int = 64
    """Longest number (int or float, as written). A byte count has at most 20 digits; Python
    refuses integers above 4,300 digits and converting long ones costs quadratic time."""
    max_expanded_nodes: int = 100_000
    """Most nodes of the whole input with every alias replaced by what it repeats. A Dataset
    file has a few hundred; a billion-laughs file passes this at its first few aliases."""


DEFAULT_LIMITS = YAMLLimits()


def _where(node_or_event: Any) -> str:
    mark = getattr(node_or_event, "start_mark", None)
    return f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""


_NUMBER_TAGS = frozenset({"tag:yaml.org,2002:int", "tag:yaml.org,2002:float"})


class _LimitExceeded(Exception):
    """Raised inside the loader; :func:`load_yaml_documents` turns it into a ConfigError."""


class _DuplicateKey(Exception):
    """Raised inside the loader for a key given twice in one mapping."""


_MERGE_TAG = "tag:yaml.org,2002:merge"


if yaml.__with_libyaml__:
    # libyaml's C scanner and parser produce the events (four times faster than PyYAML's own);
    # composing and constructing stay in Python, where the limits are checked.
    from yaml._yaml import CParser as _EventSource
else:  # pragma: no cover - wheels without libyaml

    class _EventSource(  # type: ignore[no-redef]
        yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser
    ):
        def __init__(self, stream: str) -> None:
            yaml.reader.Reader.__init__(self, stream)
            yaml.scanner.Scanner.__init__(self)
            yaml.parser.Parser.__init__(self)


class _BoundedLoader(Composer, SafeConstructor, Resolver, _EventSource):
    """PyYAML's safe loader with the checks of :class:`YAMLLimits` while composing."""

    def __init__(self, stream: str, limits: YAMLLimits) -> None:
        _EventSource.__init__(self, stream)
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        self.limits = limits
        self.depth = 0
        self.expanded_nodes = 0
        # Expanded size of each anchored node, by identity (nodes are unhashable). An anchor
        # still being composed has no entry yet, which is how a recursive alias is recognised.
        self.anchored_sizes: dict[int, int] = {}

    def compose_document(self) -> Node | None:
        node: Node | None = super().compose_document()
        self.anchored_sizes.clear()  # anchors are per document
        return node

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        event: Any = self.peek_event()
        if isinstance(event, AliasEvent):
            node = super().compose_node(parent, index)
            size = self.anchored_sizes.get(id(node))
            if size is None:
                raise _LimitExceeded(f"recursive alias *{event.anchor}{_where(event)}")
            self._count(size, event)
            return node
        if self.depth >= self.limits.max_depth:
            raise _LimitExceeded(
                f"nested deeper than {self.limits.max_depth} levels{_where(event)}"
            )
        if isinstance(event, ScalarEvent) and len(event.value) > self.limits.max_scalar_chars:
            raise _LimitExceeded(
                f"a value of {len(event.value):,} characters{_where(event)} (at most "
                f"{self.limits.max_scalar_chars:,})"
            )
        before = self.expanded_nodes
        self.depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self.depth -= 1
        self._count(1, event)
        if (
            isinstance(node, ScalarNode)
            and node.tag in _NUMBER_TAGS
            and len(node.value) > self.limits.max_number_chars
        ):
            raise _LimitExceeded(
                f"a number of {len(node.value):,} characters{_where(event)} (at most "
                f"{self.limits.max_number_chars})"
            )
        if event.anchor is not None:
            self.anchored_sizes[id(node)] = self.expanded_nodes - before
        return node

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        """The mapping, refused when one of its own keys appears twice. Keys that merge keys
        bring in are not compared: overriding them is what a merge is for."""
        first_seen: dict[tuple[type, Any], Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                # by type too: 1 and true are equal in Python, not in YAML
                earlier = first_seen.setdefault((type(key), key), key_node)
            except TypeError:
                continue  # an unhashable key: the constructor below refuses it with its mark
            if earlier is not key_node:
                raise _DuplicateKey(
                    f"duplicate key {quoted(key)}{_where(key_node)} (first{_where(earlier)})"
                )
        mapping: dict[Any, Any] = super().construct_mapping(node, deep=deep)
        return mapping

    def _count(self, nodes: int, event: Any) -> None:
        self.expanded_nodes += nodes
        if self.expanded_nodes > self.limits.max_expanded_nodes:
            raise _LimitExceeded(
                f"more than {self.limits.max_expanded_nodes:,} nodes with aliases expanded"
                f"{_where(event)} (a YAML bomb?)"
            )


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """One line from a PyYAML error (their ``str`` spans several lines and quotes the input)."""
    if isinstance(exc, yaml.reader.ReaderError):
        # libyaml gives the character as a code point, PyYAML as a string.
        char = exc.character if isinstance(exc.character, int) else ord(exc.character[:1] or "\0")
        return f"not YAML text: character U+{char:04X} at position {exc.position} is not allowed"
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(exc, "problem", None) or type(exc).__name__
    return f"not valid YAML{where}: {problem}"


def load_yaml_documents(
    text: str, *, source: str, limits: YAMLLimits = DEFAULT_LIMITS
) -> list[Any]:
    """Every document of ``text`` as plain Python data (dict, list, str, int, float, bool,
    None, datetime...), checked against ``limits``.

    Raises :class:`ConfigError` of one line starting with ``source``.
    """
    if len(text) > limits.max_bytes:
        raise ConfigError(f"{source}: larger than {limits.max_bytes:,} bytes; not read")
    loader = _BoundedLoader(text, limits)
    try:
        documents: list[Any] = []
        while loader.check_data():  # type: ignore[no-untyped-call]
            documents.append(loader.get_data())
        return documents
    except _LimitExceeded as exc:
        raise ConfigError(f"{source}: refused: {exc}") from None
    except _DuplicateKey as exc:
        raise ConfigError(f"{source}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: {_yaml_problem(exc)}") from exc
    except (ValueError, TypeError, OverflowError) as exc:
        # PyYAML's constructors let a few through (an impossible date such as 2024-13-45).
        raise ConfigError(f"{source}: not valid YAML: {type(exc).__name__}: {exc}") from exc
    except RecursionError:
        # Merge keys (<<: *a) that chain through many anchors are flattened recursively.
        raise ConfigError(f"{source}: refused: merge keys nested too deeply") from None
    finally:
        loader.dispose()


def read_text_file(
    path: str | os.PathLike[str], *, max_bytes: int = DEFAULT_LIMITS.max_bytes
) -> str:
    """The UTF-8 text of a file the user named, read no further than ``max_bytes``.

    Refuses, with a one-line :class:`ConfigError` naming the path: files larger than
    ``max_bytes`` (``/dev/zero`` included: the read stops there), binary files (a NUL byte),
    text that is not UTF-8. Pipes work (``--config <(...)``). A leading UTF-8 BOM is dropped.
    """
    name = os.fsdecode(path)
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read: {exc.strerror or exc}") from exc
    if len(data) > max_bytes:
        raise ConfigError(f"{name}: larger than {max_bytes:,} bytes; not read")
    nul = data.find(b"\0")
    if nul >= 0:
        raise ConfigError(f"{name}: a binary file (NUL byte at offset {nul}), not text")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{name}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})"
        ) from None
    return text.removeprefix("\ufeff")
