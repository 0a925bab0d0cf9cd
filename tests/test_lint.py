"""The linter on small constructed cases: one test per finding kind, the taxonomy guard, the cleanlab
adapter, storage per model version, dismissed findings, and a whole-project lint through the service."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from inference.lint import LintConfig, LintError, lint_image, lint_project, lint_stored_image
from inference.lint_cleanlab import box_qualities
from projects.imaging import ImageInfo, write_image
from projects.taxonomy import CustomerTaxonomy, ProjectView, default_super_taxonomy, resource_path

W, H = 400, 300


@dataclass
class Det:
    node: str
    box: tuple
    score: float


def view(name: str) -> ProjectView:
    return ProjectView(default_super_taxonomy(), CustomerTaxonomy.load(resource_path("taxonomies", f"{name}.yaml")))


def ann(i, label, box):
    return {"id": i, "label": label, "x1": box[0], "y1": box[1], "x2": box[2], "y2": box[3]}


CAR, TRUCK, KID = (20, 100, 120, 160), (200, 80, 330, 200), (150, 150, 180, 230)


def scene_b():
    """Project B: a car, a truck and a child, all boxed, all seen by the model."""
    anns = [ann(1, "Car", CAR), ann(2, "Truck", TRUCK), ann(3, "Pedestrian_child", KID)]
    dets = [Det("car", CAR, 0.9), Det("truck", TRUCK, 0.85), Det("pedestrian_child", KID, 0.8)]
    return anns, dets


def kinds(result):
    return [f.kind for f in result.findings]


def test_correct_annotations_give_no_finding():
    anns, dets = scene_b()
    r = lint_image(anns, dets, view("B"), W, H)
    assert r.findings == []
    assert r.image_score < 0.2


def test_missed_object():
    anns, dets = scene_b()
    r = lint_image(anns[1:], dets, view("B"), W, H)
    assert kinds(r) == ["missed"]
    f = r.findings[0]
    assert f.box == CAR and f.suggested_label == "Car" and f.annotation_id is None
    assert f.score >= 0.8 and "Car" in f.message
    assert r.image_score > lint_image(anns, dets, view("B"), W, H).image_score


def test_missed_object_touching_a_neighbour_is_still_found():
    """cleanlab alone leaves any prediction that touches an annotation unjudged: crowds would hide misses."""
    anns = [ann(1, "Pedestrian_adult", (100, 100, 140, 220))]
    hidden = (130, 100, 170, 220)  # overlaps the boxed neighbour, IoU 0.14
    dets = [Det("pedestrian_adult", (100, 100, 140, 220), 0.9), Det("pedestrian_adult", hidden, 0.8)]
    r = lint_image(anns, dets, view("B"), W, H)
    assert kinds(r) == ["missed"] and r.findings[0].box == hidden
    q = box_qualities(np.array([(100, 100, 140, 220)]), np.array([0]),
                      np.array([(100, 100, 140, 220), hidden]), np.array([0, 0]), np.array([0.9, 0.8]),
                      missed_min_score=0.5, swap_min_score=0.5, badloc_min_score=0.3, touch_iou=0.0)
    assert np.isnan(q.overlooked).all()  # touch_iou 0 is cleanlab's own rule: nothing found


def test_unconfident_prediction_is_not_a_miss():
    anns, dets = scene_b()
    dets[0] = Det("car", CAR, 0.3)
    assert lint_image(anns[1:], dets, view("B"), W, H).findings == []


def test_wrong_class():
    anns, dets = scene_b()
    anns[1] = ann(2, "Bus", TRUCK)
    r = lint_image(anns, dets, view("B"), W, H)
    assert kinds(r) == ["wrong_class"]
    f = r.findings[0]
    assert f.annotation_id == 2 and f.suggested_label == "Truck" and f.box == TRUCK
    assert "labeled Bus" in f.message


def test_wrong_class_is_weighed_by_the_models_belief_in_the_annotated_label():
    anns, dets = scene_b()
    anns[1] = ann(2, "Bus", TRUCK)
    sure = lint_image(anns, dets, view("B"), W, H).candidates[0].score
    torn = lint_image(anns, [*dets, Det("bus", TRUCK, 0.85)], view("B"), W, H)
    wc = [f for f in torn.candidates if f.kind == "wrong_class"]
    assert wc and wc[0].score == pytest.approx(sure / 2, rel=0.05)
    assert "wrong_class" not in kinds(torn)


def test_loose_box():
    anns, dets = scene_b()
    loose = (TRUCK[0] - 30, TRUCK[1] - 25, TRUCK[2] + 30, TRUCK[3] + 25)
    anns[1] = ann(2, "Truck", loose)
    r = lint_image(anns, dets, view("B"), W, H)
    assert kinds(r) == ["bad_box"]
    f = r.findings[0]
    assert f.annotation_id == 2 and f.box == TRUCK and "loose" in f.message


def test_shifted_box():
    anns, dets = scene_b()
    w = TRUCK[2] - TRUCK[0]
    anns[1] = ann(2, "Truck", (TRUCK[0] + 0.25 * w, TRUCK[1], TRUCK[2] + 0.25 * w, TRUCK[3]))
    r = lint_image(anns, dets, view("B"), W, H)
    assert kinds(r) == ["bad_box"] and "elsewhere" in r.findings[0].message


def test_slightly_off_box_is_fine():
    anns, dets = scene_b()
    anns[1] = ann(2, "Truck", (TRUCK[0] + 3, TRUCK[1] - 2, TRUCK[2] + 2, TRUCK[3]))
    assert lint_image(anns, dets, view("B"), W, H).findings == []


def test_bad_box_not_judged_by_a_neighbours_prediction():
    """Two overlapping cars, the model sees only the right one: the left box is not 'badly located'."""
    left, right = (50, 100, 150, 160), (110, 100, 210, 160)
    anns = [ann(1, "Car", left), ann(2, "Car", right)]
    r = lint_image(anns, [Det("car", right, 0.9)], view("B"), W, H)
    assert "bad_box" not in [f.kind for f in r.candidates]


def test_duplicate():
    anns, dets = scene_b()
    anns.append(ann(4, "Car", (CAR[0] + 2, CAR[1] + 1, CAR[2] + 2, CAR[3])))
    r = lint_image(anns, dets, view("B"), W, H)
    assert kinds(r) == ["duplicate"]
    assert r.findings[0].annotation_id == 4 and r.findings[0].score > 0.9


def test_overlapping_boxes_the_model_sees_as_two_objects_score_lower():
    a, b = (100, 100, 200, 160), (110, 100, 210, 160)  # IoU 0.82
    anns = [ann(1, "Car", a), ann(2, "Car", b)]
    alone = lint_image(anns, [], view("B"), W, H).findings
    seen = lint_image(anns, [Det("car", a, 0.9), Det("car", b, 0.9)], view("B"), W, H, LintConfig(nms_iou=0.9))
    assert [f.kind for f in alone] == ["duplicate"]
    assert seen.findings == [] and seen.candidates[0].score == pytest.approx(alone[0].score / 2)


def test_conflicting_classes_on_one_object_are_a_duplicate():
    anns = [ann(1, "Car", CAR), ann(2, "Truck", CAR)]
    r = lint_image(anns, None, view("B"), W, H)
    assert kinds(r) == ["duplicate"] and "same object" in r.findings[0].message


@pytest.mark.parametrize("box,kind,text", [
    ((10, 10, 10, 50), "zero_area", "zero area"),
    ((380, 250, 420, 310), "out_of_image", "outside"),
    ((10, 10, 13, 60), "tiny", "tiny"),
])
def test_rules(box, kind, text):
    r = lint_image([ann(7, "Car", box)], None, view("B"), W, H)
    assert kinds(r) == [kind] and text in r.findings[0].message and r.findings[0].annotation_id == 7
    if kind == "out_of_image":
        assert r.findings[0].box == (380, 250, W, H)
    assert r.cleanlab_quality is None  # rules only


def test_box_on_the_edge_within_tolerance_is_fine():
    assert lint_image([ann(1, "Car", (-0.5, 0, W + 0.5, H))], None, view("B"), W, H).findings == []


def test_tiny_threshold_follows_the_project_rule():
    tax = CustomerTaxonomy.load(resource_path("taxonomies", "B.yaml"))
    tax.rules["min_box_px"] = 20
    v = ProjectView(default_super_taxonomy(), tax)
    assert kinds(lint_image([ann(1, "Car", (10, 10, 25, 60))], None, v, W, H)) == ["tiny"]
    assert lint_image([ann(1, "Car", (10, 10, 25, 60))], None, view("B"), W, H).findings == []


def test_label_not_in_the_taxonomy():
    r = lint_image([ann(1, "Robot", CAR)], [Det("car", CAR, 0.9)], view("B"), W, H)
    assert "unknown_label" in kinds(r)
    assert "'Robot'" in next(f.message for f in r.findings if f.kind == "unknown_label")


def test_classes_the_project_does_not_label_never_produce_findings():
    """A people-only customer's unboxed cars and a vehicles-only customer's unboxed people are not errors,
    and a confident car on a Human box is not a 'wrong class' for a project that has no car label."""
    human = (150, 100, 190, 230)
    dets = [Det("car", CAR, 0.95), Det("truck", TRUCK, 0.95), Det("bus", human, 0.97),
            Det("pedestrian_child", human, 0.9), Det("traffic_light", (10, 10, 20, 40), 0.9)]
    a = lint_image([ann(1, "Human", human)], dets, view("A"), W, H)
    assert a.findings == [] and a.candidates == []
    c_dets = [Det("car", CAR, 0.9), Det("pedestrian_adult", human, 0.95), Det("cyclist", (300, 50, 350, 150), 0.9)]
    c = lint_image([ann(1, "Vehicle", CAR)], c_dets, view("C"), W, H)
    assert c.findings == [] and c.candidates == []
    # but a person the people-only customer forgot is found, named in its own taxonomy
    missed = lint_image([], dets, view("A"), W, H)
    assert [(f.kind, f.suggested_label) for f in missed.findings] == [("missed", "Human")]


def test_cleanlab_adapter_runs_on_this_numpy():
    """cleanlab's find_label_issues calls np.in1d (gone in numpy 2.4); the adapter uses only the rank
    scores. A swapped box and an overlooked object get low qualities, a good box a high one."""
    boxes = np.array([(0, 0, 10, 10), (20, 0, 30, 10)], dtype=float)
    q = box_qualities(boxes, np.array([0, 1]), np.array([(0, 0, 10, 10), (20, 0, 30, 10), (50, 0, 60, 10)]),
                      np.array([0, 0, 1]), np.array([0.9, 0.9, 0.9]), missed_min_score=0.5, swap_min_score=0.5,
                      badloc_min_score=0.3, touch_iou=0.3)
    assert q.badloc[0] > 0.95 and q.swap[0] > 0.99  # right class, right place
    assert q.swap[1] < 0.1  # labeled 1, the model sees 0 there
    assert q.overlooked[2] < 0.1 and np.isnan(q.overlooked[:2]).all()
    assert 0 <= q.image_quality < 0.5


# --- the workspace side -----------------------------------------------------------------------------------
@pytest.fixture
def ws_b(ws):
    ws.add_project("B", CustomerTaxonomy.load(resource_path("taxonomies", "B.yaml")))
    labels = {lab["name"]: lab["id"] for lab in ws.labels("B")}
    image = ws.insert_images(ws.project_id("B"), [ImageInfo(ws.folder / "x.jpg", "0" * 64, W, H)]).added[0]
    ws.add_annotation(image, labels["Truck"], TRUCK)
    ws.add_annotation(image, labels["Pedestrian_child"], KID)
    model = ws.register_model("m1", "m1")
    ws.save_predictions(image, model, [(d.node, d.box, d.score) for d in scene_b()[1]])
    return ws, image, model, labels


def test_findings_are_stored_per_model_version_and_replaced_on_relint(ws_b):
    ws, image, model, labels = ws_b
    r = lint_stored_image(ws, image, model)
    assert [f.kind for f in r.findings] == ["missed"]
    stored = ws.lint_findings(image)
    assert [(f["kind"], f["model_id"], f["state"], f["suggested_label"]) for f in stored] == \
        [("missed", model, "open", "Car")]
    assert ws.lint_ranking("B", model)[0]["score"] == pytest.approx(r.image_score)
    ws.add_annotation(image, labels["Car"], CAR)  # the annotator fixes it
    assert lint_stored_image(ws, image, model).findings == []
    assert ws.lint_findings(image, model, any_model=False, state="open") == []
    m2 = ws.register_model("m2", "m2")
    assert lint_stored_image(ws, image, m2).findings == []  # m2 has not predicted it: rules only, model None
    assert ws.lint_ranking("B", None)[0]["image_id"] == image


def test_dismissed_findings_are_not_raised_again(ws_b):
    ws, image, model, _ = ws_b
    lint_stored_image(ws, image, model)
    (finding,) = ws.lint_findings(image, state="open")
    ws.set_finding_state(finding["id"], "dismissed")
    assert lint_stored_image(ws, image, model).findings == []
    assert [f["state"] for f in ws.lint_findings(image)] == ["dismissed"]
    m2 = ws.register_model("m2", "m2")  # a newer model sees the same thing: still answered
    ws.save_predictions(image, m2, [(d.node, d.box, d.score) for d in scene_b()[1]])
    assert lint_stored_image(ws, image, m2).findings == []
    with pytest.raises(Exception, match="unknown finding state"):
        ws.set_finding_state(finding["id"], "maybe")


def test_annotation_with_another_projects_label_is_flagged(ws_b):
    ws, image, model, _ = ws_b
    ws.add_project("A", CustomerTaxonomy.load(resource_path("taxonomies", "A.yaml")))
    human = ws.labels("A")[0]["id"]
    ws.add_annotation(image, human, (300, 10, 330, 60))
    r = lint_stored_image(ws, image, model)
    assert "unknown_label" in [f.kind for f in r.findings]


class FakePredictor:
    """Sees every object of the scene exactly (its boxes come from the test's truth table)."""

    def __init__(self, truth: dict[tuple, list[Det]]):
        self.version = "fake"
        self.truth = truth
        self.calls = 0

    def predict(self, images):
        self.calls += len(images)
        return [self.truth[img.shape[:2] + (int(img[0, 0, 0]),)] for img in images]


def test_lint_project_predicts_what_is_missing_and_ranks_the_faulty_image_first(ws_b, tmp_path):
    ws, image, model, labels = ws_b
    truth = {}
    ids = []
    for k in range(3):  # three more images, correctly labeled, not predicted yet
        path = ws.folder / f"img{k}.png"
        write_image(path, np.full((H, W, 3), 10 * k, np.uint8))
        (i,) = ws.add_images("B", [path]).added
        ws.add_annotation(i, labels["Car"], CAR)
        truth[(H, W, 10 * k)] = [Det("car", CAR, 0.9)]
        ids.append(i)
    fake = FakePredictor(truth)
    stages = []
    out = lint_project(ws.folder, "B", loader=lambda path, threads: fake, threads=1,
                       progress=lambda stage, done, total: stages.append((stage, done, total)))
    assert fake.calls == 3 and out.predicted == 3
    assert ("predict", 3, 3) in stages and ("lint", 4, 4) in stages
    assert [r["image_id"] for r in out.ranking][0] == image  # the one with the missed car
    assert [f.kind for f in out.findings[image]] == ["missed"]
    assert all(out.findings[i] == [] for i in ids)
    again = lint_project(ws.folder, "B", loader=lambda path, threads: fake, threads=1)
    assert fake.calls == 3 and again.predicted == 0  # cached per model version


def test_lint_project_with_a_broken_model_says_so(ws_b):
    ws, image, _, labels = ws_b
    path = ws.folder / "new.png"
    write_image(path, np.zeros((H, W, 3), np.uint8))
    (i,) = ws.add_images("B", [path]).added
    ws.add_annotation(i, labels["Car"], CAR)

    def broken(path: Path, threads: int):
        raise ValueError("not a model")

    with pytest.raises(LintError, match="could not be loaded"):
        lint_project(ws.folder, "B", loader=broken, threads=1)
    assert lint_project(ws.folder, "B", rules_only=True).model_id is None


def test_score_calibration_maps_raw_scores_to_the_chance_of_a_real_object():
    """A shy model: its real objects score 0.3, its ghosts 0.1. Calibrated on labeled images, 0.3 becomes
    a near-certain object, and the miss it points at is reported at the default threshold."""
    from inference.lint import project_proposals
    from inference.lint_calibration import fit_calibration, match_flags
    from inference.lint_types import Annotated

    v = view("B")
    pairs = []
    for k in range(30):
        car = (10 + k, 100, 110 + k, 160)
        anns = [Annotated(1, "Car", car)]
        dets = [Det("car", car, 0.3), Det("truck", (200, 20, 260, 60), 0.1)]
        pairs.append((anns, project_proposals(dets, v, LintConfig(min_prediction_score=0.0))))
    assert match_flags(*pairs[0]) == [True, False]
    cal = fit_calibration(pairs)
    assert cal is not None and cal.positives == 30 and cal.negatives == 30
    assert cal(0.3) == pytest.approx(1.0) and cal(0.1) == pytest.approx(0.0)
    dets = [Det("car", CAR, 0.3)]
    assert lint_image([], dets, v, W, H).findings == []  # raw 0.3: too shy to report
    assert kinds(lint_image([], dets, v, W, H, calibration=cal)) == ["missed"]
    assert fit_calibration(pairs[:5]) is None  # too little data: raw scores
