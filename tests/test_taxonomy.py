"""The taxonomy semantics of ARCHITECTURE.md, case by case."""

from __future__ import annotations

import numpy as np
import pytest

from projects.taxonomy import (
    CustomerTaxonomy,
    Label,
    Node,
    ProjectView,
    SuperTaxonomy,
    TaxonomyError,
    default_super_taxonomy,
)

SUP = default_super_taxonomy()


def view(*pairs: tuple[str, str]) -> ProjectView:
    return ProjectView(SUP, CustomerTaxonomy([Label(n, node) for n, node in pairs]))


# (case, labels, labeled nodes expected)
LABELED_CASES = [
    ("coarse only: Human->person labels person, not its children",
     [("Human", "person")], {"person"}),
    ("fine only, some children: a child-only project labels that node, not person",
     [("Pedestrian_child", "pedestrian_child")], {"pedestrian_child"}),
    ("fine labels covering all children make the parent labeled",
     [("Adult", "pedestrian_adult"), ("Child", "pedestrian_child")],
     {"pedestrian_adult", "pedestrian_child", "person"}),
    ("fine labels covering some children leave the parent missing",
     [("Car", "car"), ("Bus", "bus")], {"car", "bus"}),
    ("all vehicle kinds -> vehicle labeled",
     [("Car", "car"), ("Truck", "truck"), ("Bus", "bus"), ("Moto", "motorcycle")],
     {"car", "truck", "bus", "motorcycle", "vehicle"}),
    ("coarse and one fine label: both labeled, the other child missing",
     [("Human", "person"), ("Kid", "pedestrian_child")], {"person", "pedestrian_child"}),
    ("leaf top-level classes", [("Light", "traffic_light")], {"traffic_light"}),
    ("no labels: everything missing", [], set()),
]


@pytest.mark.parametrize("case,labels,expected", LABELED_CASES, ids=[c[0] for c in LABELED_CASES])
def test_labeled_and_missing_nodes(case, labels, expected):
    v = view(*labels)
    assert v.labeled_nodes == expected
    assert v.missing_nodes == set(SUP.names) - expected
    mask = v.mask()
    assert mask.dtype == np.float32 and mask.shape == (len(SUP),)
    assert {SUP.names[i] for i in np.flatnonzero(mask)} == expected


def test_labeled_propagates_through_several_levels():
    sup = SuperTaxonomy([Node("a"), Node("b", "a"), Node("c", "a"), Node("b1", "b"), Node("b2", "b")])
    v = ProjectView(sup, CustomerTaxonomy([Label("B1", "b1"), Label("B2", "b2"), Label("C", "c")]))
    assert v.labeled_nodes == {"b1", "b2", "b", "c", "a"}
    v2 = ProjectView(sup, CustomerTaxonomy([Label("B1", "b1"), Label("C", "c")]))
    assert v2.labeled_nodes == {"b1", "c"}


@pytest.mark.parametrize("node,positives,unknown", [
    ("pedestrian_child", ["pedestrian_child", "person"], []),
    ("person", ["person"], ["pedestrian_adult", "pedestrian_child"]),
    ("car", ["car", "vehicle"], []),
    ("vehicle", ["vehicle"], ["car", "truck", "bus", "motorcycle"]),
    ("cyclist", ["cyclist"], []),
])
def test_positives_and_unknowns_of_a_box(node, positives, unknown):
    assert SUP.positives(node) == positives
    assert sorted(SUP.unknown_for_box(node)) == sorted(unknown)


# (labels of the project, detected node, label shown or None)
MAPPING_CASES = [
    ([("Human", "person")], "pedestrian_child", "Human"),
    ([("Human", "person")], "person", "Human"),
    ([("Human", "person")], "car", None),  # a people-only customer never sees vehicles
    ([("Adult", "pedestrian_adult"), ("Child", "pedestrian_child")], "pedestrian_child", "Child"),
    ([("Adult", "pedestrian_adult"), ("Child", "pedestrian_child")], "person", None),  # no label for coarse
    ([("Human", "person"), ("Kid", "pedestrian_child")], "pedestrian_child", "Kid"),  # deepest wins
    ([("Human", "person"), ("Kid", "pedestrian_child")], "pedestrian_adult", "Human"),
    ([("Vehicle", "vehicle")], "truck", "Vehicle"),
    ([("Car", "car")], "vehicle", None),
    ([("Car", "car")], "bus", None),
]


@pytest.mark.parametrize("labels,node,expected", MAPPING_CASES)
def test_detection_maps_to_deepest_labeled_label(labels, node, expected):
    lab = view(*labels).label_for(node)
    assert (lab.name if lab else None) == expected


@pytest.mark.parametrize("nodes,message", [
    ([{"name": "a"}, {"name": "a"}], "nodes[1]: duplicate node name 'a'"),
    ([{"name": "a", "parent": "zzz"}], "nodes[0] (a): unknown parent 'zzz'"),
    ([{"name": "a", "parent": "b"}, {"name": "b", "parent": "a"}], "cycle"),
    ([{"name": "a", "parent": "a"}], "cycle a -> a"),
    ([{"parent": "a"}], "nodes[0]: expected"),
])
def test_super_taxonomy_validation_names_file_and_entry(tmp_path, nodes, message):
    import yaml

    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump({"nodes": nodes}))
    with pytest.raises(TaxonomyError) as e:
        SuperTaxonomy.load(f)
    assert str(f) in str(e.value) and message in str(e.value)


def test_customer_taxonomy_validation(tmp_path):
    f = tmp_path / "cust.yaml"
    f.write_text("labels:\n  - {name: Human, node: person}\n  - {name: Robot, node: robot}\n")
    with pytest.raises(TaxonomyError, match=r"cust.yaml: labels\[1\] \(Robot\): mapped to unknown node 'robot'"):
        CustomerTaxonomy.load(f).validate(SUP)
    f.write_text("labels:\n  - {name: Human, node: person}\n  - {name: Human, node: cyclist}\n")
    with pytest.raises(TaxonomyError, match="duplicate label name"):
        CustomerTaxonomy.load(f).validate(SUP)
    f.write_text("labels: [ {name: Human, node: person\n")
    with pytest.raises(TaxonomyError, match="line"):
        CustomerTaxonomy.load(f)


def test_files_round_trip_and_json_is_accepted(tmp_path):
    SUP.save(tmp_path / "s.yaml")
    assert SuperTaxonomy.load(tmp_path / "s.yaml") == SUP
    (tmp_path / "c.json").write_text('{"labels": [{"name": "Human", "node": "person"}]}')
    tax = CustomerTaxonomy.load(tmp_path / "c.json")
    assert tax.labels[0].shortcut == "1"  # default 1-9 shortcuts
    tax.save(tmp_path / "c2.yaml")
    assert CustomerTaxonomy.load(tmp_path / "c2.yaml").labels == tax.labels
