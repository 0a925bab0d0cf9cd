"""Detections become proposals in the customer's names; unlabeled classes are never shown."""

from __future__ import annotations

from dataclasses import dataclass

from inference.prelabels import customer_proposals
from projects.taxonomy import CustomerTaxonomy, ProjectView, default_super_taxonomy, resource_path

SUP = default_super_taxonomy()


def view(name):
    return ProjectView(SUP, CustomerTaxonomy.load(resource_path("taxonomies", f"{name}.yaml")))


@dataclass
class Det:
    node: str
    box: tuple
    score: float


DETS = [Det("car", (10, 10, 60, 40), 0.9), Det("vehicle", (11, 10, 61, 41), 0.8), Det("truck", (12, 11, 60, 40), 0.3),
        Det("pedestrian_child", (100, 10, 120, 60), 0.7), Det("person", (100, 11, 121, 60), 0.6),
        Det("cyclist", (200, 10, 230, 60), 0.9), Det("traffic_sign", (300, 5, 320, 25), 0.02)]


def test_people_only_customer_never_sees_vehicles_and_gets_one_human_per_person():
    props = customer_proposals(DETS, view("A"))
    assert [(p.label, p.node) for p in props] == [("Human", "pedestrian_child")]


def test_vehicles_only_customer_gets_one_vehicle_box_after_mapping():
    props = customer_proposals(DETS, view("C"))
    assert [(p.label, p.score) for p in props] == [("Vehicle", 0.9)]


def test_fine_customer_sees_fine_labels_and_no_coarse_duplicates():
    props = customer_proposals(DETS, view("B"))
    assert {(p.label, p.node) for p in props} == {("Car", "car"), ("Truck", "truck"),
                                                   ("Pedestrian_child", "pedestrian_child")}


def test_proposals_already_annotated_are_hidden():
    ann = [{"label": "Vehicle", "x1": 10, "y1": 10, "x2": 60, "y2": 40}]
    assert customer_proposals(DETS, view("C"), ann) == []
    other = [{"label": "Human", "x1": 10, "y1": 10, "x2": 60, "y2": 40}]
    assert len(customer_proposals(DETS, view("C"), other)) == 1
