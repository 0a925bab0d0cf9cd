"""Super-taxonomy and customer taxonomies, and what one means for the other.

The super-taxonomy is one tree of *nodes* shared by every customer. A customer taxonomy
(one per project) names some of those nodes with its own *labels*. From that mapping follow
the rules that make Taxonomy Loss Masking work (ARCHITECTURE.md, "Domain words"):

* a project **labels** node *n* when a label maps to *n*, or when *n* has children and the
  project labels every child; every other node is **missing** for the project;
* the **missing-label mask** is 1 on labeled nodes, 0 on missing ones: training only
  learns a class from images whose customer would have boxed it;
* a box of node *n* is a **positive** for *n* and its ancestors; its descendants stay
  **unknown** (a "Human" box may be an adult or a child);
* a detection of node *n* is shown to a project under the label of the deepest node on *n*'s
  path to the root that one of its labels maps to, or not at all.

Files are YAML (JSON is valid YAML), small enough to read and edit by hand. Validation names
the file and the entry and raises before anything is written anywhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from projects.errors import LabelerError, shorten
from projects.untrusted import MAX_YAML_BYTES, load_yaml, read_file

ROOT = None  # the parent of top-level nodes


class TaxonomyError(LabelerError, ValueError):
    """A taxonomy file or mapping is invalid; the message names the file and the entry."""


@dataclass(frozen=True)
class Node:
    name: str
    parent: str | None = None


class SuperTaxonomy:
    """One tree of classes. Node order is the model's class order, so it never changes silently."""

    def __init__(self, nodes: Sequence[Node], name: str = "super-taxonomy", source: str = "<memory>"):
        self.name = name
        self.source = source
        _validate_tree(nodes, source)
        self.nodes: tuple[Node, ...] = tuple(nodes)
        self.index: dict[str, int] = {n.name: i for i, n in enumerate(self.nodes)}
        self.parent: dict[str, str | None] = {n.name: n.parent for n in self.nodes}
        children: dict[str | None, list[str]] = {n.name: [] for n in self.nodes}
        children[ROOT] = []
        for n in self.nodes:
            children[n.parent].append(n.name)
        self.children: dict[str | None, tuple[str, ...]] = {k: tuple(v) for k, v in children.items()}

    # --- structure -------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return [n.name for n in self.nodes]

    def __len__(self) -> int:
        return len(self.nodes)

    def __contains__(self, name: object) -> bool:
        return name in self.index

    def ancestors(self, name: str) -> list[str]:
        """Parent first, root-most last."""
        out, p = [], self.parent[name]
        while p is not ROOT:
            out.append(p)
            p = self.parent[p]
        return out

    def path_to_root(self, name: str) -> list[str]:
        return [name, *self.ancestors(name)]

    def descendants(self, name: str) -> list[str]:
        out, stack = [], list(self.children[name])
        while stack:
            c = stack.pop(0)
            out.append(c)
            stack.extend(self.children[c])
        return out

    def depth(self, name: str) -> int:
        return len(self.ancestors(name))

    def positives(self, name: str) -> list[str]:
        """Nodes a box of `name` is a positive example of: the node and all its ancestors."""
        return self.path_to_root(name)

    def unknown_for_box(self, name: str) -> list[str]:
        """Nodes a box of `name` says nothing about: its descendants."""
        return self.descendants(name)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "nodes": [{"name": n.name, "parent": n.parent} for n in self.nodes]}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SuperTaxonomy) and self.nodes == other.nodes

    def __hash__(self) -> int:
        return hash(self.nodes)

    # --- files -----------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Any, source: str = "<memory>") -> SuperTaxonomy:
        if not isinstance(data, dict) or not isinstance(data.get("nodes"), list):
            raise TaxonomyError(f"{source}: expected a mapping with a 'nodes' list")
        nodes = []
        for i, entry in enumerate(data["nodes"]):
            where = f"{source}: nodes[{i}]"
            if isinstance(entry, str):
                entry = {"name": entry}
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"]:
                raise TaxonomyError(f"{where}: expected {{name: ..., parent: ...}}, got {shorten(entry)}")
            parent = entry.get("parent")
            if parent is not None and not isinstance(parent, str):
                raise TaxonomyError(f"{where} ({_name(entry['name'])}): parent must be a node name")
            nodes.append(Node(entry["name"], parent))
        return cls(nodes, name=str(data.get("name", "super-taxonomy")), source=source)

    @classmethod
    def load(cls, path: str | Path) -> SuperTaxonomy:
        return cls.from_dict(_read_yaml(path), source=str(path))

    def save(self, path: str | Path) -> None:
        _write_yaml(path, self.to_dict())


def _validate_tree(nodes: Sequence[Node], source: str) -> None:
    seen: dict[str, int] = {}
    for i, n in enumerate(nodes):
        if not n.name or not isinstance(n.name, str):
            raise TaxonomyError(f"{source}: nodes[{i}]: empty node name")
        if n.name in seen:
            first = seen[n.name]
            raise TaxonomyError(f"{source}: nodes[{i}]: duplicate node name {shorten(n.name)} "
                                f"(first at nodes[{first}])")
        seen[n.name] = i
    parent = {n.name: n.parent for n in nodes}
    for i, n in enumerate(nodes):
        if n.parent is not None and n.parent not in parent:
            raise TaxonomyError(f"{source}: nodes[{i}] ({_name(n.name)}): unknown parent {shorten(n.parent)}")
    for i, n in enumerate(nodes):
        chain, p = [n.name], n.parent
        while p is not None:
            if p in chain:
                cycle = " -> ".join([*chain[chain.index(p):], p])
                raise TaxonomyError(f"{source}: nodes[{i}] ({_name(n.name)}): cycle {_name(cycle)}")
            chain.append(p)
            p = parent[p]


@dataclass(frozen=True)
class Label:
    """A customer's name for one super-taxonomy node."""

    name: str
    node: str
    color: str = "#e6194b"
    shortcut: str | None = None


PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45",
           "#fabed4", "#469990", "#dcbeff", "#9a6324", "#800000", "#aaffc3", "#808000", "#000075"]


@dataclass
class CustomerTaxonomy:
    """A project's labels (each mapped to one node) and its labeling rules."""

    labels: list[Label]
    rules: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    source: str = "<memory>"

    def validate(self, sup: SuperTaxonomy) -> CustomerTaxonomy:
        seen: set[str] = set()
        keys: dict[str, str] = {}
        for i, lab in enumerate(self.labels):
            where = f"{self.source}: labels[{i}] ({_name(lab.name)})"
            if not lab.name:
                raise TaxonomyError(f"{self.source}: labels[{i}]: empty label name")
            if lab.name in seen:
                raise TaxonomyError(f"{where}: duplicate label name")
            seen.add(lab.name)
            if lab.node not in sup:
                raise TaxonomyError(f"{where}: mapped to unknown node {shorten(lab.node)}")
            if lab.shortcut is not None:
                if lab.shortcut in keys:
                    raise TaxonomyError(f"{where}: shortcut {shorten(lab.shortcut)} already used by "
                                        f"{shorten(keys[lab.shortcut])}")
                keys[lab.shortcut] = lab.name
        return self

    @classmethod
    def from_dict(cls, data: Any, source: str = "<memory>") -> CustomerTaxonomy:
        if not isinstance(data, dict) or not isinstance(data.get("labels", []), list):
            raise TaxonomyError(f"{source}: expected a mapping with a 'labels' list")
        labels = []
        for i, entry in enumerate(data.get("labels", [])):
            where = f"{source}: labels[{i}]"
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
                raise TaxonomyError(f"{where}: expected {{name: ..., node: ...}}, got {shorten(entry)}")
            if not isinstance(entry.get("node"), str):
                raise TaxonomyError(f"{where} ({_name(entry['name'])}): missing 'node' (the super-taxonomy node it "
                                    "maps to)")
            shortcut = entry.get("shortcut", str(i + 1) if i < 9 else None)
            labels.append(Label(entry["name"], entry["node"], str(entry.get("color", PALETTE[i % len(PALETTE)])),
                                None if shortcut is None else str(shortcut)))
        rules = data.get("rules") or {}
        if not isinstance(rules, dict):
            raise TaxonomyError(f"{source}: 'rules' must be a mapping")
        return cls(labels, rules, name=str(data.get("name", "")), source=source)

    @classmethod
    def load(cls, path: str | Path) -> CustomerTaxonomy:
        return cls.from_dict(_read_yaml(path), source=str(path))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "rules": self.rules,
                "labels": [{"name": lab.name, "node": lab.node, "color": lab.color, "shortcut": lab.shortcut}
                           for lab in self.labels]}

    def save(self, path: str | Path) -> None:
        _write_yaml(path, self.to_dict())


class ProjectView:
    """A customer taxonomy read against the super-taxonomy: labeled nodes, mask, label lookup."""

    def __init__(self, sup: SuperTaxonomy, taxonomy: CustomerTaxonomy):
        self.sup = sup
        self.taxonomy = taxonomy.validate(sup)
        self.label_of_node: dict[str, Label] = {}
        for lab in taxonomy.labels:  # first label wins when two labels share a node
            self.label_of_node.setdefault(lab.node, lab)

    @cached_property
    def labeled_nodes(self) -> frozenset[str]:
        labeled = set(self.label_of_node)

        def visit(name: str) -> bool:
            kids = self.sup.children[name]
            child_flags = [visit(c) for c in kids]  # visit every child: grandchildren may complete them
            if kids and all(child_flags):
                labeled.add(name)
            return name in labeled

        for top in self.sup.children[ROOT]:
            visit(top)
        return frozenset(labeled)

    @property
    def missing_nodes(self) -> frozenset[str]:
        return frozenset(self.sup.names) - self.labeled_nodes

    def mask(self) -> np.ndarray:
        """Float32 vector over the super-taxonomy's node order: 1 where this project labels the node."""
        return np.array([1.0 if n in self.labeled_nodes else 0.0 for n in self.sup.names], dtype=np.float32)

    def label_for(self, node: str) -> Label | None:
        """The label a detection (or ground-truth object) of `node` gets in this project, or None."""
        for n in self.sup.path_to_root(node):
            if n in self.label_of_node:
                return self.label_of_node[n]
        return None

    def label_named(self, name: str) -> Label:
        for lab in self.taxonomy.labels:
            if lab.name == name:
                return lab
        raise KeyError(name)


def _name(value: object, limit: int = 80) -> str:
    """A name from a file, shown as is when short, else cut (see projects.errors.shorten)."""
    return value if isinstance(value, str) and len(value) <= limit else shorten(value, limit)


def _read_yaml(path: str | Path) -> Any:
    p = Path(path)
    try:
        text = read_file(p, MAX_YAML_BYTES).decode("utf-8-sig")
    except OSError as e:
        raise TaxonomyError(f"{p}: cannot read ({e.strerror or e})") from e
    except UnicodeDecodeError as e:
        raise TaxonomyError(f"{p}: not UTF-8 text") from e
    try:
        return load_yaml(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise TaxonomyError(f"{p}:{where} not valid YAML/JSON ({getattr(e, 'problem', e)})") from e


def _write_yaml(path: str | Path, data: Any) -> None:
    Path(path).write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")


def resource_path(*parts: str) -> Path:
    return Path(__file__).resolve().parent.parent / "resources" / Path(*parts)


def default_super_taxonomy() -> SuperTaxonomy:
    return SuperTaxonomy.load(resource_path("super_taxonomy.yaml"))


def names_in(nodes: Iterable[str], sup: SuperTaxonomy) -> list[str]:
    """Node names sorted in the super-taxonomy's order (stable output for stats and tests)."""
    return sorted(nodes, key=sup.index.__getitem__)
