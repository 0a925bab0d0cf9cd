"""YOLO: one text file per image, `class cx cy w h` normalised to the image size, classes 0-based.

Two layouts are read:
- Ultralytics: a `data.yaml` with `names` (a list, or a dict {0: name}) and `train`/`val`/`test`
  (folders or lists of image paths, relative to the yaml's folder or its `path`), labels found by
  swapping the last `images` folder for `labels`, as Ultralytics does;
- darknet (labelImg, CVAT "YOLO 1.1"): `classes.txt` or `obj.names` (in the folder, below it, or one
  folder up when a `labels` folder is given on its own), label files next to the images (or in a
  `labels` folder beside `images`). A `.txt` that is neither named like an image nor made of label lines
  (a README) is skipped and counted.
Class names are the label order, used or not, so class ids stay the same through an import and export.
Segmentation lines (`class x1 y1 x2 y2 ...`) become their bounding box, counted in the report. An image
without a label file is an image without objects. Writing produces the Ultralytics layout split by the
workspace's stable split (images/train, labels/train, ...), `data.yaml` with names as a dict, and
`classes.txt` for darknet tools.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from projects.errors import shorten
from projects.formats.common import Dataset, ExportData, FormatError, ImageEntry, PathGuard, copy_image, read_text
from projects.formats.registry import Format, ReadContext, register
from projects.imaging import IMAGE_SUFFIXES
from projects.untrusted import YAMLBombError, load_yaml

NAME_FILES = ("classes.txt", "obj.names", "classes.names")
LIST_FILES = frozenset({"classes.txt", "obj.names", "classes.names", "train.txt", "valid.txt", "val.txt", "test.txt"})
YAML_NAMES = ("data.yaml", "data.yml", "dataset.yaml")


@register
class Yolo(Format):
    name = "yolo"
    description = "YOLO txt (Ultralytics data.yaml, or darknet classes.txt/obj.names)"

    def read(self, path: Path, ctx: ReadContext) -> Dataset:
        if path.is_file() and path.suffix.lower() in (".yaml", ".yml"):
            return read_ultralytics(path, ctx.images_dir)
        if path.is_dir():
            for name in YAML_NAMES:
                if (path / name).is_file():
                    return read_ultralytics(path / name, ctx.images_dir)
            return read_darknet(path, ctx.images_dir)
        raise FormatError(path, "", "expected a data.yaml file or a folder of YOLO label files")

    def write(self, data: ExportData, out: Path) -> None:
        write_yolo(data, out)


# --- class names ---------------------------------------------------------------------------------
def names_from_file(f: Path) -> list[str]:
    lines = read_text(f).splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    names = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            raise FormatError(f, f"line {n}", "empty class name (it would shift every class id after it)")
        names.append(line.strip())
    if not names:
        raise FormatError(f, "", "no class names")
    return names


def names_from_yaml(data: dict[str, Any], f: Path) -> list[str]:
    names = data.get("names")
    if isinstance(names, dict):
        try:
            ids = sorted(int(k) for k in names)
        except (TypeError, ValueError):
            raise FormatError(f, "names", "class ids must be whole numbers") from None
        if ids != list(range(len(ids))):
            raise FormatError(f, "names", f"class ids must be 0..{len(ids) - 1} without gaps, got {ids[:10]}")
        by_id = {int(k): v for k, v in names.items()}
        names = [by_id[i] for i in ids]
    if not isinstance(names, list) or not names:
        raise FormatError(f, "names", "missing: a list of class names, or a dict {0: name, ...}")
    for i, n in enumerate(names):
        if not isinstance(n, str | int | float) or not str(n).strip():
            raise FormatError(f, f"names[{i}]", f"expected a class name, got {shorten(n)}")
    if "nc" in data and data["nc"] != len(names):
        raise FormatError(f, "nc", f"nc is {shorten(data['nc'])} but there are {len(names)} names")
    return [str(n).strip() for n in names]


# --- label files ---------------------------------------------------------------------------------
def read_label_file(ds: Dataset, img: int, f: Path, names: list[str]) -> None:
    for n, line in enumerate(read_text(f).splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        where = f"line {n}"
        try:
            values = [float(v) for v in parts]
        except ValueError:
            raise FormatError(f, where, f"expected numbers 'class cx cy w h', got {line.strip()[:60]!r}") from None
        cls = values[0]
        if not (cls == cls and abs(cls) != float("inf") and cls == int(cls)):
            raise FormatError(f, where, f"class id {shorten(parts[0])} is not a whole number")
        if not 0 <= cls < len(names):
            raise FormatError(f, where, f"class id {int(cls)} outside 0..{len(names) - 1} ({len(names)} names)")
        label = names[int(cls)]
        if len(values) == 5:
            cx, cy, w, h = values[1:]
            ds.add_box(img, label, cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, where)
        elif len(values) >= 7 and len(values) % 2 == 1:
            xs, ys = values[1::2], values[2::2]
            ds.add_box(img, label, min(xs), min(ys), max(xs), max(ys), where)
            ds.note("segmentation polygons converted to their bounding box", f"{f}: {where}")
        elif len(values) == 6:
            raise FormatError(f, where, "6 values: this looks like a prediction file with confidences, "
                                        "not labels ('class cx cy w h')")
        else:
            raise FormatError(f, where, f"expected 'class cx cy w h' (5 values), got {len(values)}")


def _label_candidates(image: Path) -> list[Path]:
    """Where Ultralytics and darknet look for an image's labels: .../labels/... instead of .../images/..., or
    beside it."""
    parts = list(image.parts)
    out = []
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            out.append(Path(*parts[:i], "labels", *parts[i + 1:]).with_suffix(".txt"))
            break
    out.append(image.with_suffix(".txt"))
    return out


def _images_under(folder: Path, ds: Dataset | None = None) -> list[Path]:
    """Image files under a folder; a symlink that leads out of it is left out (and counted)."""
    guard, base, out = PathGuard(), folder.resolve(), []
    for p in sorted(folder.rglob("*")):
        if p.suffix.lower() not in IMAGE_SUFFIXES or not p.is_file():
            continue
        if base not in Path(guard.real(p)).parents:
            if ds is not None:
                ds.note("image symlinks leading outside the dataset folder, ignored", str(p))
            continue
        out.append(p)
    return out


def _add_image(ds: Dataset, image: Path, root: Path, label: Path | None, names: list[str]) -> None:
    rel = image.relative_to(root).as_posix() if image.is_relative_to(root) else image.name
    src = str(label) if label else str(image)
    img = ds.add_image(ImageEntry(rel, src, "" if label else "(no label file: no objects)", (), relative=True,
                                  path=image))
    if label is not None:
        read_label_file(ds, img, label, names)


# --- Ultralytics ---------------------------------------------------------------------------------
def read_ultralytics(f: Path, images_dir: Path | None) -> Dataset:
    try:
        data = load_yaml(read_text(f))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        why = f" ({e.problem})" if isinstance(e, YAMLBombError) else ""
        raise FormatError(f, f"line {mark.line + 1}" if mark else "", f"not valid YAML{why}") from e
    if not isinstance(data, dict):
        raise FormatError(f, "", "expected a mapping with names and train/val/test")
    names = names_from_yaml(data, f)
    guard = PathGuard()
    base = f.parent
    ds = Dataset(f)
    for name in names:  # the yaml's class order is the label order (ids stay the same on the next export)
        ds.label_index(name)
    root = base
    if isinstance(data.get("path"), str) and data["path"].strip() not in ("", "."):
        try:
            candidate = guard.join(base, data["path"].strip(), f, "path")
            root = candidate if candidate.is_dir() else base
        except FormatError:
            pass
        if root == base:
            ds.note("data.yaml 'path' outside its folder or missing: used the yaml's folder instead",
                    f"{f}: path: {shorten(data['path'])}")
    if images_dir is not None:
        root = images_dir
    seen: set[Path] = set()
    for split in ("train", "val", "test"):
        entries = data.get(split)
        if entries is None:
            continue
        for k, entry in enumerate(entries if isinstance(entries, list) else [entries]):
            where = f"{split}[{k}]" if isinstance(entries, list) else split
            if not isinstance(entry, str) or not entry.strip():
                raise FormatError(f, where, f"expected a folder or a .txt list of images, got {shorten(entry)}")
            rel = entry.strip()
            if rel.startswith("../") and not (root / rel).exists():
                rel = rel[3:]  # Roboflow's data.yaml names '../train/images' from inside the dataset folder
            target = guard.join(root, rel, f, where)
            for image in _split_images(target, root, guard, f, where, ds):
                if image in seen:
                    continue
                seen.add(image)
                label = next((c for c in _label_candidates(image) if c.is_file()), None)
                _add_image(ds, image, root, label, names)
    if not seen and not ds.images:
        raise FormatError(f, "train/val/test", "names no image (no folder or list with images found)")
    return ds


def _split_images(target: Path, root: Path, guard: PathGuard, f: Path, where: str, ds: Dataset) -> list[Path]:
    if target.is_dir():
        return _images_under(target, ds)
    if target.is_file() and target.suffix == ".txt":
        out = []
        for n, line in enumerate(read_text(target).splitlines(), start=1):
            name = line.strip()
            if name:
                rel = name[2:] if name.startswith("./") else name
                out.append(guard.join(root, rel, target, f"line {n}"))
        return out
    raise FormatError(f, where, f"{target} is neither a folder nor a .txt list of images")


# --- darknet -------------------------------------------------------------------------------------
def read_darknet(folder: Path, images_dir: Path | None) -> Dataset:
    names_file = next((folder / n for n in NAME_FILES if (folder / n).is_file()), None)
    above = False
    if names_file is None:
        found = [p for n in NAME_FILES for p in folder.rglob(n)]
        if not found:  # a labels/ folder given on its own: its classes.txt is often one folder up
            found = [folder.parent / n for n in NAME_FILES if (folder.parent / n).is_file()][:1]
            above = bool(found)
        if len(found) != 1:
            raise FormatError(folder, "", "no data.yaml, classes.txt or obj.names here or one folder up: YOLO class "
                                          "names are needed to know what class 0, 1, ... mean")
        names_file = found[0]
    names = names_from_file(names_file)
    ds = Dataset(folder)
    for name in names:  # the file's class order is the label order (ids stay the same on the next export)
        ds.label_index(name)
    if above:
        ds.note("class names read from the folder above the labels", str(names_file))
    image_root = images_dir or folder
    if images_dir is None and folder.name == "labels" and (folder.parent / "images").is_dir() \
            and not _images_under(folder):
        image_root = folder.parent / "images"  # labels/ given: its images are in the sibling images/
    images = _images_under(image_root, ds)
    by_stem: dict[tuple[str, str], Path] = {}
    for image in images:
        by_stem.setdefault((str(image.parent), image.stem), image)
    labels = sorted(p for p in folder.rglob("*.txt") if p.name not in LIST_FILES or (str(p.parent), p.stem) in by_stem)
    paired: set[Path] = set()
    for label in labels:
        image = by_stem.get((str(label.parent), label.stem))
        if image is None:
            swapped = _swap(label, "labels", "images")
            image = next((by_stem[(str(s.parent), s.stem)] for s in swapped if (str(s.parent), s.stem) in by_stem),
                         None)
        if image is None and images_dir is not None:
            rel = label.relative_to(folder).with_suffix("")
            image = by_stem.get((str((images_dir / rel).parent), rel.name))
        if image is None and not _looks_like_labels(label):  # README.txt, notes.txt: not a label file
            ds.note("text files that are neither label files nor named like an image, skipped", str(label))
            continue
        if image is None:  # the importer reports it missing (or finds it under --images by name)
            rel = label.relative_to(folder).with_suffix("").as_posix()
            img = ds.add_image(ImageEntry(PurePosixPath(rel).name, str(label), "(label file without an image)",
                                          (label.parent,), relative=True))
            read_label_file(ds, img, label, names)
            continue
        paired.add(image)
        _add_image(ds, image, image_root, label, names)
    for image in images:
        if image not in paired:
            _add_image(ds, image, image_root, None, names)
    if not ds.images:
        raise FormatError(folder, "", "no images and no label files found")
    return ds


def _looks_like_labels(f: Path) -> bool:
    """Every non-empty line is numbers, at least `class cx cy w h`: a label file, even with its image missing."""
    try:
        lines = read_text(f).splitlines()
    except FormatError:
        return False
    for line in lines:
        parts = line.split()
        if not parts:
            continue
        try:
            [float(v) for v in parts]
        except ValueError:
            return False
        if len(parts) < 5:
            return False
    return True


def _swap(p: Path, old: str, new: str) -> list[Path]:
    parts = list(p.parts)
    out = []
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == old:
            out.append(Path(*parts[:i], new, *parts[i + 1:]))
            break
    return out


# --- writing -------------------------------------------------------------------------------------
def write_yolo(data: ExportData, out: Path) -> None:
    splits: dict[str, int] = {}
    for i, im in enumerate(data.images):
        stem = PurePosixPath(im.name).stem
        splits[im.split] = splits.get(im.split, 0) + 1
        lab_dir, img_dir = out / "labels" / im.split, out / "images" / im.split
        lab_dir.mkdir(parents=True, exist_ok=True)
        lines = []
        for k in data.boxes_of(i):
            x1, y1, x2, y2 = data.boxes[k].tolist()
            cx, cy = (x1 + x2) / 2 / im.width, (y1 + y2) / 2 / im.height
            w, h = (x2 - x1) / im.width, (y2 - y1) / im.height
            lines.append(f"{int(data.box_label[k])} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}\n")
        (lab_dir / f"{stem}.txt").write_text("".join(lines), encoding="utf-8")
        if data.copy_images:
            copy_image(im.path, img_dir / im.name)
    names = {k: lab.name for k, lab in enumerate(data.labels)}
    doc: dict[str, Any] = {}
    train = "images/train" if splits.get("train") else next((f"images/{s}" for s in splits), "images/train")
    doc["train"] = train
    doc["val"] = "images/val" if splits.get("val") else train
    if splits.get("test"):
        doc["test"] = "images/test"
    doc["nc"] = len(names)
    doc["names"] = names
    header = (f"# Labeler export of project {data.project}. Splits follow the workspace's stable split buckets;\n"
              "# an empty split points at train. No 'path' key: Ultralytics then uses this file's folder.\n")
    (out / "data.yaml").write_text(header + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True),
                                   encoding="utf-8")
    (out / "classes.txt").write_text("".join(lab.name + "\n" for lab in data.labels), encoding="utf-8")
