"""Reading files that a user or another tool hands us: bounded, so no file can hang or flood the app.

Two dangers that a plain `Path.read_text()` and `yaml.safe_load()` let through:
- a path that is not a regular file: a FIFO blocks the reader forever, `/dev/zero` is read until memory
  runs out. `open_regular`/`read_file` open without blocking and refuse anything but a regular file.
- a YAML alias bomb: nine levels of nine aliases is a 2 KB file that *means* 387 million strings.
  `safe_load` itself stays cheap (aliases share one object), but every consumer that walks or prints
  the value pays the full expansion (a `repr` in an error message was 226 MB). `load_yaml` refuses
  documents with more than `MAX_ALIASES` aliases, an expanded size over `MAX_NODES`, recursive aliases,
  or nesting too deep for the parser. Real taxonomies, mapping files and data.yaml files use few or none.

Both raise the exceptions callers already handle (`OSError`, `yaml.YAMLError`), so each caller keeps
turning them into its own one-line error that names the file. This module imports no other project
module, so every layer can use it.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Any, BinaryIO

import yaml

MAX_YAML_BYTES = 64 << 20  # taxonomies, mapping files and data.yaml files are kilobytes
MAX_ALIASES = 1_000
MAX_NODES = 1_000_000  # scalars, lists and mappings once every alias is expanded


KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
         (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


class NotRegularFile(OSError):
    """The path is a FIFO, socket, device or folder; `kind` says which ("a FIFO (named pipe)")."""

    def __init__(self, path: str | Path, mode: int):
        self.kind = next((name for test, name in KINDS if test(mode)), "not a regular file")
        super().__init__(errno.EINVAL, f"not a regular file ({self.kind})", str(path))


class FileTooLarge(OSError):
    def __init__(self, path: str | Path, limit: int):
        self.limit = limit
        super().__init__(errno.EFBIG, f"over the limit of {limit:,} bytes", str(path))


def open_regular(path: str | Path) -> BinaryIO:
    """A regular file opened for reading; NotRegularFile for anything else, never blocking.

    Opening with O_NONBLOCK returns at once even for a FIFO without a writer; `fstat` on the open
    descriptor then says what it really is (no race between a check and the open)."""
    flags = (os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)
             | getattr(os, "O_BINARY", 0))
    try:
        fd = os.open(path, flags)
    except OSError:  # a socket cannot be opened at all (ENXIO): say what it is rather than "no such device"
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFile(path, mode) from None
        raise
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFile(path, mode)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_file(path: str | Path, max_bytes: int | None = None) -> bytes:
    """A regular file's bytes; OSError for anything else (NotRegularFile) or one over `max_bytes`
    (FileTooLarge), checked on the file's size before anything is read."""
    with open_regular(path) as f:
        size = os.fstat(f.fileno()).st_size
        if max_bytes is not None and size > max_bytes:
            raise FileTooLarge(path, max_bytes)
        data = f.read(size + 1)  # read(n) allocates n bytes up front: ask for what the file holds
        if len(data) > size:  # it grew since the fstat (still being written)
            rest = f.read() if max_bytes is None else f.read(max_bytes + 1 - len(data))
            data += rest
            if max_bytes is not None and len(data) > max_bytes:
                raise FileTooLarge(path, max_bytes)
        return data


class YAMLBombError(yaml.YAMLError):
    """A YAML document refused for its size once expanded (aliases), its alias count or its depth."""

    def __init__(self, problem: str, mark: Any = None):
        super().__init__(problem)
        self.problem = problem
        self.problem_mark = mark

    def __str__(self) -> str:
        line = f" (line {self.problem_mark.line + 1})" if self.problem_mark is not None else ""
        return f"{self.problem}{line}"


class _BoundedLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that counts alias uses while composing (before anything is constructed)."""

    max_aliases = MAX_ALIASES

    def __init__(self, stream: Any):
        super().__init__(stream)
        self._aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > self.max_aliases:
                mark = self.peek_event().start_mark
                raise YAMLBombError(f"more than {self.max_aliases} aliases (*name): refused as a possible alias "
                                    f"bomb", mark)
        return super().compose_node(parent, index)


def _expanded_size(root: yaml.Node, limit: int) -> int:
    """Nodes in the document once every alias is expanded, counted without expanding (memo per shared node)."""
    size: dict[int, int] = {}
    active: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            active.discard(key)
            kids = _children(node)
            total = 1 + sum(size[id(k)] for k in kids)
            size[key] = min(total, limit + 1)
            continue
        if key in size:
            continue
        if key in active:
            raise YAMLBombError("a recursive alias (a value that contains itself): refused", node.start_mark)
        active.add(key)
        stack.append((node, True))
        stack.extend((k, False) for k in _children(node) if id(k) not in size)
    return size[id(root)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def load_yaml(text: str, max_aliases: int = MAX_ALIASES, max_nodes: int = MAX_NODES) -> Any:
    """`yaml.safe_load(text)` with the bounds above; raises yaml.YAMLError (YAMLBombError when refused)."""
    if len(text) > MAX_YAML_BYTES:
        raise YAMLBombError(f"{len(text):,} characters, over the limit of {MAX_YAML_BYTES:,} for a YAML file")
    loader = _BoundedLoader(text)
    loader.max_aliases = max_aliases
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        n = _expanded_size(node, max_nodes)
        if n > max_nodes:
            raise YAMLBombError(f"expands to more than {max_nodes:,} values (through aliases): refused as a "
                                f"possible alias bomb", node.start_mark)
        return loader.construct_document(node)
    except RecursionError as e:
        raise YAMLBombError("nested too deeply") from e
    finally:
        loader.dispose()
