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


def test_fine_customer_sees_fine_labels_and_one_proposal_per_object():
    """Car 0.9 and Truck 0.3 on one vehicle (IoU 0.9) are one object named twice: the better one stays."""
    props = customer_proposals(DETS, view("B"))
    assert {(p.label, p.node) for p in props} == {("Car", "car"), ("Pedestrian_child", "pedestrian_child")}


def test_two_labels_on_overlapping_but_different_objects_both_stay():
    dets = [Det("car", (0, 0, 100, 50), 0.9), Det("truck", (40, 0, 140, 50), 0.6)]  # IoU 0.43
    assert [p.label for p in customer_proposals(dets, view("B"))] == ["Car", "Truck"]


def test_proposals_already_annotated_are_hidden():
    ann = [{"label": "Vehicle", "x1": 10, "y1": 10, "x2": 60, "y2": 40}]
    assert customer_proposals(DETS, view("C"), ann) == []
    other = [{"label": "Human", "x1": 25, "y1": 10, "x2": 75, "y2": 40}]  # IoU 0.54 with the Vehicle proposal
    assert len(customer_proposals(DETS, view("C"), other)) == 1


def test_a_proposal_over_a_box_of_the_same_object_is_hidden():
    """Issue 14, item 8: a proposal at IoU 0.67 with an existing box of its label was shown over it (and its
    tag hid the box's); at IoU >= 0.7 a box of another label is the same object named otherwise."""
    dets = [Det("car", (100, 100, 200, 160), 0.8)]
    same = [{"label": "Car", "x1": 100, "y1": 100, "x2": 180, "y2": 150}]  # IoU 0.67
    assert customer_proposals(dets, view("B"), same) == []
    relabelled = [{"label": "Truck", "x1": 100, "y1": 100, "x2": 195, "y2": 160}]  # IoU 0.95
    assert customer_proposals(dets, view("B"), relabelled) == []


def test_answered_detections_are_hidden_without_uncovering_a_duplicate():
    """A rejected proposal stays gone, and the weaker duplicate it suppressed does not take its place."""
    dets = [Det("car", (10.25, 10.5, 60.75, 40.0), 0.9), Det("car", (11, 10, 61, 41), 0.6),
            Det("traffic_light", (200, 10, 230, 60), 0.9)]
    assert len(customer_proposals(dets, view("B"))) == 2
    props = customer_proposals(dets, view("B"), answered=[("car", (10.25, 10.5, 60.75, 40.0))])
    assert [p.node for p in props] == ["traffic_light"]
    other_node = customer_proposals(dets, view("B"), answered=[("truck", (10.25, 10.5, 60.75, 40.0))])
    assert len(other_node) == 2
