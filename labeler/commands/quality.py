"""Gold images and annotator quality: `labeler gold add|remove` and `labeler quality`."""

from __future__ import annotations

import json
from pathlib import Path

from labeler.cli import CommandError, arg, arguments, command
from projects.quality import annotator_summary
from projects.workspace import Workspace


def _resolve_images(ws: Workspace, project: str, refs: list[str]) -> list[int]:
    """Image ids of `project` from ids, stored paths or file names; names what it cannot find."""
    ids = ws.image_ids(project)
    rows = ws.image_rows(ids)
    by_path = {r["path"]: r["id"] for r in rows}
    by_name: dict[str, list[int]] = {}
    for r in rows:
        by_name.setdefault(Path(r["path"]).name, []).append(r["id"])
    known = set(ids)
    out = []
    for ref in refs:
        if ref.isdigit() and int(ref) in known:
            out.append(int(ref))
        elif ref in by_path:
            out.append(by_path[ref])
        elif ws.stored_path(Path(ref)) in by_path:
            out.append(by_path[ws.stored_path(Path(ref))])
        elif len(by_name.get(Path(ref).name, [])) == 1:
            out.append(by_name[Path(ref).name][0])
        elif len(by_name.get(Path(ref).name, [])) > 1:
            raise CommandError(f"{ref}: several images of {project!r} have this name; give the path or the id")
        else:
            raise CommandError(f"{ref}: no such image in project {project!r} (give an image id, path or file name)")
    return out


@command("gold add", help="mark images as gold: their current annotations become the reference annotators are "
                          "scored against")
@arguments(arg("ws"), arg("--project", required=True), arg("images", nargs="+", metavar="IMAGE",
                                                           help="image id, path or file name"),
           arg("--requeue", action="store_true",
               help="then clear the image's annotations and mark it unlabeled, so the next annotator labels it blind"))
def gold_add(args) -> int:
    with Workspace.open(args.ws) as ws:
        ids = _resolve_images(ws, args.project, args.images)
        empty = [i for i in ids if not ws.annotations(i)]
        if empty:
            raise CommandError(f"image(s) {', '.join(map(str, empty))} have no annotations to serve as the "
                               "reference; label them first")
        with ws.transaction():
            boxes = [ws.mark_gold(i, requeue=args.requeue) for i in ids]
    print(f"marked {len(ids)} image(s) of {args.project!r} as gold ({sum(boxes)} reference boxes)"
          + ("; they are back in the queue, unlabeled" if args.requeue else ""))
    return 0


@command("gold remove", help="stop using images as gold (their stored scores stay)")
@arguments(arg("ws"), arg("--project", required=True), arg("images", nargs="+", metavar="IMAGE"))
def gold_remove(args) -> int:
    with Workspace.open(args.ws) as ws:
        ids = _resolve_images(ws, args.project, args.images)
        with ws.transaction():
            for i in ids:
                ws.unmark_gold(i)
    print(f"{len(ids)} image(s) of {args.project!r} are no longer gold")
    return 0


def _pct(v: float | None) -> str:
    return "   –  " if v is None else f"{100 * v:5.1f}%"


@command("quality", help="each annotator's precision, recall and mean IoU on gold images, over time")
@arguments(arg("ws"), arg("--project", help="one project only"), arg("--json", action="store_true", help="print JSON"))
def quality(args) -> int:
    with Workspace.open(args.ws) as ws:
        projects = [args.project] if args.project else ws.project_names()
        gold = {p: len(ws.gold_image_ids(p)) for p in projects}
        summary = annotator_summary(ws.quality_scores(args.project))
    if args.json:
        print(json.dumps({"gold_images": gold, "annotators": summary}, indent=2))
        return 0
    print("gold images: " + (", ".join(f"{p}: {n}" for p, n in gold.items()) or "(no projects)"))
    if not summary:
        print("no gold image has been submitted yet (mark some with `labeler gold add`)")
        return 0
    print(f"{'annotator':<20} {'gold':>4} {'precision':>9} {'recall':>7} {'mean IoU':>8}   "
          "trend (recall, oldest first)")
    for a in summary:
        trend = " ".join("–" if h["recall"] is None else f"{100 * h['recall']:.0f}" for h in a["history"][-8:])
        miou = "   –" if a["mean_iou"] is None else f"{a['mean_iou']:.3f}"
        print(f"{a['author']:<20} {a['gold_images']:>4} {_pct(a['precision']):>9} {_pct(a['recall']):>7} "
              f"{miou:>8}   {trend}")
    return 0
