"""Synthetic driving-like scenes with full ground truth in super-taxonomy nodes.

Deterministic by seed, Qt-free, no downloads. Every class of the default super-taxonomy has its own
shape, size and colour so a small detector can tell them apart; nearer objects occlude farther ones;
**domains** (day, night, fog, wide camera) change the look the way customers' cameras do. Vehicles
carry side mirrors, so each vehicle has two boxes: with mirrors and without (a labeling rule).

`customer_view` turns a scene into the boxes one customer would draw: only the classes it labels,
under its label names, at its granularity, following its mirror rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from projects.taxonomy import ProjectView
from projects.values import Box


@dataclass(frozen=True)
class Domain:
    name: str
    sky: tuple[int, int, int]
    road: tuple[int, int, int]
    light: float = 1.0  # multiplies object colours
    fog: float = 0.0  # blend towards grey
    noise: float = 3.0  # sensor noise sigma
    scale: float = 1.0  # camera focal length: object size factor


DOMAINS: dict[str, Domain] = {
    "day": Domain("day", sky=(150, 190, 235), road=(105, 105, 110)),
    "night": Domain("night", sky=(12, 14, 30), road=(38, 38, 44), light=0.55, noise=7.0),
    "fog": Domain("fog", sky=(200, 200, 205), road=(150, 150, 155), fog=0.45, noise=2.0),
    "wide": Domain("wide", sky=(160, 200, 230), road=(115, 112, 108), scale=0.7),
}


@dataclass(frozen=True)
class SceneObject:
    node: str
    box: Box  # full extent, side mirrors included, clipped to the image
    box_no_mirrors: Box  # the same box without side mirrors (equal for objects without mirrors)
    visible: float  # share of the object's pixels not hidden by nearer objects


@dataclass
class Scene:
    image: np.ndarray  # RGB uint8
    objects: list[SceneObject] = field(default_factory=list)
    domain: str = "day"
    seed: int = 0


# class -> (relative frequency, size (w, h) as a share of image height at depth 1)
CLASSES: dict[str, tuple[float, tuple[float, float]]] = {
    "car": (3.0, (0.36, 0.20)),
    "truck": (1.0, (0.52, 0.38)),
    "bus": (0.8, (0.78, 0.34)),
    "motorcycle": (0.8, (0.20, 0.16)),
    "pedestrian_adult": (2.2, (0.11, 0.36)),
    "pedestrian_child": (1.5, (0.09, 0.22)),
    "cyclist": (1.0, (0.24, 0.36)),
    "traffic_light": (1.0, (0.06, 0.17)),
    "traffic_sign": (1.0, (0.10, 0.10)),
}
VEHICLES = ("car", "truck", "bus")  # the ones with side mirrors


class _Painter:
    """Draws on the image and, with the object's index, on an index map used for occlusion."""

    def __init__(self, img: np.ndarray, index: np.ndarray, idx: int, light: float):
        self.img, self.index, self.idx, self.light = img, index, idx, light

    def _c(self, color) -> tuple[int, int, int]:
        return tuple(int(min(255, c * self.light)) for c in color)

    def rect(self, x1, y1, x2, y2, color, mark=True):
        p1, p2 = (int(round(x1)), int(round(y1))), (int(round(x2)), int(round(y2)))
        cv2.rectangle(self.img, p1, p2, self._c(color), -1)
        if mark:
            cv2.rectangle(self.index, p1, p2, self.idx, -1)

    def circle(self, cx, cy, r, color, thickness=-1, mark=True):
        c, r = (int(round(cx)), int(round(cy))), max(1, int(round(r)))
        cv2.circle(self.img, c, r, self._c(color), thickness)
        if mark:
            cv2.circle(self.index, c, r, self.idx, thickness)

    def poly(self, pts, color, mark=True):
        arr = np.array(pts, np.int32).reshape(-1, 1, 2)
        cv2.fillPoly(self.img, [arr], self._c(color))
        if mark:
            cv2.fillPoly(self.index, [arr], self.idx)


def _draw(node: str, p: _Painter, x: float, y: float, w: float, h: float, rng: np.random.Generator) -> Box:
    """Draw `node` in the box (x, y, w, h) (mirrors may stick out); return the box without mirrors."""
    body = (x, y, x + w, y + h)
    if node in VEHICLES:
        paint = {"car": [(200, 30, 30), (30, 60, 200), (225, 225, 230), (40, 150, 60)],
                 "truck": [(230, 120, 20), (90, 60, 40)],
                 "bus": [(245, 200, 20), (240, 170, 0)]}[node]
        color = paint[rng.integers(len(paint))]
        wheel_r = h * (0.16 if node != "car" else 0.2)
        if node == "car":
            p.rect(x + 0.22 * w, y, x + 0.78 * w, y + 0.45 * h, color)  # cabin
            p.rect(x + 0.3 * w, y + 0.08 * h, x + 0.7 * w, y + 0.38 * h, (60, 80, 110))  # window
            p.rect(x, y + 0.4 * h, x + w, y + h - wheel_r, color)
            wheels = (0.22, 0.78)
            mirror_y = y + 0.33 * h
        elif node == "truck":
            p.rect(x, y, x + 0.68 * w, y + h - wheel_r, (215, 215, 215))  # cargo box
            p.rect(x + 0.68 * w, y + 0.3 * h, x + w, y + h - wheel_r, color)  # cab
            p.rect(x + 0.74 * w, y + 0.36 * h, x + 0.95 * w, y + 0.55 * h, (60, 80, 110))
            wheels = (0.15, 0.45, 0.85)
            mirror_y = y + 0.42 * h
        else:
            p.rect(x, y, x + w, y + h - wheel_r, color)
            for k in range(5):
                wx = x + (0.05 + 0.18 * k) * w
                p.rect(wx, y + 0.12 * h, wx + 0.14 * w, y + 0.42 * h, (50, 70, 100))
            wheels = (0.18, 0.82)
            mirror_y = y + 0.15 * h
        for fx in wheels:
            p.circle(x + fx * w, y + h - wheel_r, wheel_r, (20, 20, 20))
        m = 0.07 * w  # side mirrors stick out on both sides
        p.rect(x - m, mirror_y, x, mirror_y + 0.09 * h, (30, 30, 30))
        p.rect(x + w, mirror_y, x + w + m, mirror_y + 0.09 * h, (30, 30, 30))
    elif node == "motorcycle":
        r = 0.3 * h
        p.circle(x + r, y + h - r, r, (15, 15, 15))
        p.circle(x + w - r, y + h - r, r, (15, 15, 15))
        p.poly([(x + 0.25 * w, y + 0.55 * h), (x + 0.75 * w, y + 0.55 * h), (x + 0.85 * w, y + 0.2 * h),
                (x + 0.45 * w, y)], (150, 20, 160))
    elif node in ("pedestrian_adult", "pedestrian_child"):
        skin = [(235, 195, 160), (190, 140, 100), (120, 80, 50)][rng.integers(3)]
        head = 0.13 if node == "pedestrian_adult" else 0.2
        cloth = (40, 50, 90) if node == "pedestrian_adult" else (250, 80, 170)
        p.circle(x + w / 2, y + head * h / 2, head * h / 2, skin)
        p.rect(x + 0.05 * w, y + head * h, x + 0.95 * w, y + 0.6 * h, cloth)
        p.rect(x + 0.15 * w, y + 0.6 * h, x + 0.45 * w, y + h, (30, 30, 35))
        p.rect(x + 0.55 * w, y + 0.6 * h, x + 0.85 * w, y + h, (30, 30, 35))
    elif node == "cyclist":
        r = 0.2 * h
        p.circle(x + r, y + h - r, r, (10, 10, 10), thickness=max(2, int(r / 4)))
        p.circle(x + w - r, y + h - r, r, (10, 10, 10), thickness=max(2, int(r / 4)))
        p.poly([(x + r, y + h - r), (x + 0.5 * w, y + 0.62 * h), (x + w - r, y + h - r)], (0, 170, 90))
        p.circle(x + 0.5 * w, y + 0.09 * h, 0.09 * h, (235, 195, 160))
        p.rect(x + 0.38 * w, y + 0.18 * h, x + 0.62 * w, y + 0.62 * h, (0, 170, 90))
    elif node == "traffic_light":
        p.rect(x, y, x + w, y + h, (35, 35, 35))
        lit = rng.integers(3)
        for k, col in enumerate([(255, 30, 30), (255, 200, 0), (30, 230, 80)]):
            c = col if k == lit else tuple(v // 4 for v in col)
            p.circle(x + w / 2, y + (k + 0.5) * h / 3, 0.36 * w, c)
    elif node == "traffic_sign":
        if rng.random() < 0.5:
            p.circle(x + w / 2, y + h / 2, w / 2, (220, 20, 30))
            p.circle(x + w / 2, y + h / 2, w * 0.33, (250, 250, 250))
        else:
            p.poly([(x, y + h), (x + w, y + h), (x + w / 2, y)], (220, 20, 30))
            p.poly([(x + 0.22 * w, y + 0.85 * h), (x + 0.78 * w, y + 0.85 * h), (x + w / 2, y + 0.3 * h)],
                   (250, 250, 250))
    else:
        raise ValueError(f"the scene generator cannot draw {node!r}")
    return body


def make_scene(seed: int, domain: str | Domain = "day", size: tuple[int, int] = (512, 320),
               max_objects: int = 8, classes: dict[str, tuple[float, tuple[float, float]]] | None = None) -> Scene:
    """One scene of `size` (width, height). Same seed and domain, same pixels and boxes."""
    dom = DOMAINS[domain] if isinstance(domain, str) else domain
    classes = classes or CLASSES
    rng = np.random.default_rng(seed)
    W, H = size
    horizon = int(H * rng.uniform(0.38, 0.48))
    img = np.empty((H, W, 3), np.float32)
    img[:horizon] = np.linspace(np.array(dom.sky) * 0.8, dom.sky, horizon)[:, None, :]
    img[horizon:] = dom.road
    for _ in range(rng.integers(2, 6)):  # buildings and hills behind everything: clutter, not objects
        bx, bw, bh = rng.uniform(0, W), rng.uniform(0.05, 0.2) * W, rng.uniform(0.05, 0.25) * H
        shade = rng.uniform(0.55, 0.85) * np.array(dom.sky if dom.name != "night" else (40, 40, 60))
        img[max(0, int(horizon - bh)):horizon, int(bx):int(bx + bw)] = shade
    for k in range(3):  # lane markings
        lx = W * (0.2 + 0.3 * k)
        cv2.line(img, (int(lx), H), (int(W / 2 + (lx - W / 2) * 0.2), horizon), (200, 200, 190), 2)
    img = np.clip(img, 0, 255).astype(np.uint8)

    names = list(classes)
    freq = np.array([classes[n][0] for n in names])
    n_obj = int(rng.integers(1, max_objects + 1))
    placed = []
    for _ in range(n_obj):
        node = names[rng.choice(len(names), p=freq / freq.sum())]
        rw, rh = classes[node][1]
        if node in ("traffic_light", "traffic_sign"):
            depth = rng.uniform(0.6, 1.1)
            w, h = rw * H * depth * dom.scale, rh * H * depth * dom.scale
            bottom = rng.uniform(0.12, 0.45) * H + h
        else:
            depth = rng.uniform(0.45, 1.15)
            w, h = rw * H * depth * dom.scale, rh * H * depth * dom.scale
            bottom = horizon + (H - horizon) * (0.15 + 0.85 * (depth - 0.45) / 0.7) * rng.uniform(0.9, 1.0)
        w *= rng.uniform(0.9, 1.1)
        x = rng.uniform(-0.15 * w, W - 0.85 * w)
        placed.append((bottom, node, x, bottom - h, w, h, int(rng.integers(1 << 30))))
    placed.sort(key=lambda t: t[0])  # far (higher on screen) first, near last

    keep = list(range(len(placed)))
    for _ in range(len(placed) + 1):  # drop objects hidden too much, re-render without them
        canvas, index = img.copy(), np.full((H, W), -1, np.int32)
        bodies: dict[int, Box] = {}
        extents: dict[int, Box] = {}
        areas: dict[int, int] = {}
        for i in keep:
            _, node, x, y, w, h, s = placed[i]
            own = np.full((H, W), -1, np.int32)
            p = _Painter(canvas, own, i, dom.light)
            bodies[i] = _draw(node, p, x, y, w, h, np.random.default_rng(s))
            mask = own == i
            areas[i] = int(mask.sum())
            index[mask] = i
            if areas[i]:
                ys, xs = np.nonzero(mask)
                extents[i] = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
        visible = {i: (int((index == i).sum()) / areas[i] if areas[i] else 0.0) for i in keep}
        hidden = [i for i in keep if visible[i] < 0.35]
        if not hidden:
            break
        keep = [i for i in keep if i != min(hidden, key=visible.get)]

    out = canvas.astype(np.float32)
    if dom.fog:
        out = out * (1 - dom.fog) + dom.fog * np.array([205, 205, 210], np.float32)
    out += rng.normal(0, dom.noise, out.shape).astype(np.float32)
    out = np.clip(out, 0, 255).astype(np.uint8)

    objects = []
    for i in keep:
        if i not in extents or visible[i] <= 0:
            continue
        node = placed[i][1]
        body = _clip(bodies[i], W, H)
        objects.append(SceneObject(node, extents[i], body if node in VEHICLES else extents[i],
                                   round(visible[i], 3)))
    return Scene(out, objects, dom.name, seed)


def _clip(b: Box, W: int, H: int) -> Box:
    return (float(max(0, b[0])), float(max(0, b[1])), float(min(W, b[2] + 1)), float(min(H, b[3] + 1)))


@dataclass(frozen=True)
class CustomerBox:
    label: str
    box: Box
    node: str  # the super-taxonomy node the label maps to (coarser than or equal to the object's)


def customer_view(scene: Scene, view: ProjectView) -> list[CustomerBox]:
    """The boxes this customer would draw on the scene (its classes, names, granularity and box rule)."""
    mirrors = bool(view.taxonomy.rules.get("vehicle_mirrors", True))
    out = []
    for obj in scene.objects:
        label = view.label_for(obj.node)
        if label is None:
            continue
        out.append(CustomerBox(label.name, obj.box if mirrors else obj.box_no_mirrors, label.node))
    return out
