"""Synthetic customer scenes: deterministic, complete ground truth, and customer views by taxonomy."""

from __future__ import annotations

import numpy as np
import pytest

from projects.synthetic import CLASSES, DOMAINS, VEHICLES, customer_view, make_scene
from projects.taxonomy import CustomerTaxonomy, ProjectView, default_super_taxonomy, resource_path

SUP = default_super_taxonomy()


def project(name: str) -> ProjectView:
    return ProjectView(SUP, CustomerTaxonomy.load(resource_path("taxonomies", f"{name}.yaml")))


def test_same_seed_same_scene_and_domains_differ():
    a, b = make_scene(7, "day"), make_scene(7, "day")
    assert np.array_equal(a.image, b.image) and a.objects == b.objects
    means = {d: make_scene(7, d).image.mean() for d in DOMAINS}
    assert means["night"] < 0.5 * means["day"] and means["fog"] > means["day"]


def test_every_class_appears_with_boxes_inside_the_image():
    seen = set()
    for seed in range(60):
        s = make_scene(seed, "day")
        H, W = s.image.shape[:2]
        for o in s.objects:
            seen.add(o.node)
            x1, y1, x2, y2 = o.box
            assert 0 <= x1 < x2 <= W and 0 <= y1 < y2 <= H and o.visible >= 0.35
            assert o.node in SUP
    assert seen == set(CLASSES)


def test_vehicles_have_mirror_and_no_mirror_boxes():
    vehicles = [o for s in range(40) for o in make_scene(s).objects if o.node in VEHICLES]
    assert vehicles
    for o in vehicles:
        inner, outer = o.box_no_mirrors, o.box
        assert outer[0] <= inner[0] and outer[2] >= inner[2] and (outer[2] - outer[0]) > (inner[2] - inner[0])


def test_customer_views_follow_taxonomy_and_box_rule():
    A, B, C = project("A"), project("B"), project("C")
    totals = {"A": 0, "B": 0, "C": 0, "objects": 0}
    for seed in range(40):
        s = make_scene(seed)
        totals["objects"] += len(s.objects)
        a, b, c = customer_view(s, A), customer_view(s, B), customer_view(s, C)
        people = [o for o in s.objects if o.node.startswith("pedestrian")]
        vehicles = [o for o in s.objects if SUP.parent[o.node] == "vehicle"]
        assert [x.label for x in a] == ["Human"] * len(people)
        assert [x.label for x in c] == ["Vehicle"] * len(vehicles)
        cars_c = [x.box for x in c]
        assert cars_c == [o.box_no_mirrors for o in vehicles]  # C leaves mirrors out
        assert {x.label for x in b} <= {"Pedestrian_adult", "Pedestrian_child", "Car", "Truck", "Bus",
                                        "Motorcycle", "Traffic_light"}
        assert len(b) == sum(o.node not in ("cyclist", "traffic_sign") for o in s.objects)
        totals["A"] += len(a)
        totals["C"] += len(c)
    assert totals["A"] > 0 and totals["C"] > 0


@pytest.mark.parametrize("domain", list(DOMAINS))
def test_domains_render(domain):
    s = make_scene(3, domain, size=(320, 200))
    assert s.image.shape == (200, 320, 3) and s.image.dtype == np.uint8 and s.domain == domain
