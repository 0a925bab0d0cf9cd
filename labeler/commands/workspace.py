"""Workspace commands: init, project add, images add, stats."""

from __future__ import annotations

import json
import sys

from labeler.cli import CommandError, arg, arguments, command
from projects.store.target import as_target, display
from projects.taxonomy import CustomerTaxonomy, SuperTaxonomy
from projects.workspace import Workspace


@command("init", help="create a workspace folder holding labeler.sqlite, or a team workspace in PostgreSQL")
@arguments(arg("ws", help="workspace folder, or postgresql://[user@]host[:port]/dbname (an empty database; "
                          "docs/team.md)"),
           arg("--super-taxonomy", metavar="FILE", help="super-taxonomy YAML/JSON (default: the driving tree)"),
           arg("--image-root", metavar="DIR", help="a team workspace's image folder on shared storage: image and "
                                                   "model paths are stored relative to it (PostgreSQL only)"))
def init(args) -> int:
    sup = SuperTaxonomy.load(args.super_taxonomy) if args.super_taxonomy else None
    with Workspace.create(as_target(args.ws), sup, image_root=args.image_root) as ws:
        where = f"{display(ws.location)} (image root {ws.folder})" if ws.is_team else str(ws.folder)
        print(f"created workspace {where} with {len(ws.super_taxonomy())} super-taxonomy nodes")
    return 0


@command("project add", help="add a project (one customer dataset) with its customer taxonomy")
@arguments(arg("ws"), arg("name"),
           arg("--taxonomy", metavar="FILE", help="customer taxonomy YAML/JSON; without it the project has no labels"))
def project_add(args) -> int:
    with Workspace.open(args.ws) as ws:
        tax = CustomerTaxonomy.load(args.taxonomy) if args.taxonomy else None
        ws.add_project(args.name, tax)
        print(f"added project {args.name!r} with {len(ws.labels(args.name))} labels")
    return 0


@command("images add", help="add image files or folders to a project (corrupt files are listed and skipped)")
@arguments(arg("ws"), arg("--project", required=True), arg("paths", nargs="+", metavar="PATH"))
def images_add(args) -> int:
    with Workspace.open(args.ws) as ws:
        ws.project_id(args.project)  # fail before reading any image
        result = ws.add_images(args.project, args.paths)
    for reason in result.skipped:
        print(f"skipped: {reason}", file=sys.stderr)
    print(f"added {len(result.added)} images to {args.project!r}, skipped {len(result.skipped)}")
    if not result.added and result.skipped:
        raise CommandError(f"no image could be added ({len(result.skipped)} skipped)")
    return 0


@command("stats", help="what each project holds, labels and misses")
@arguments(arg("ws"), arg("--json", action="store_true", help="print JSON"))
def stats(args) -> int:
    with Workspace.open(args.ws) as ws:
        data = ws.stats()
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    print(f"workspace {data['workspace']} (schema v{data['schema_version']}, {data['models']} models)")
    for p in data["projects"]:
        st = p["status"]
        print(f"- {p['name']}: {p['images']} images ({st['submitted']} submitted, {st['in_progress']} in progress, "
              f"{st['unlabeled']} unlabeled), {p['annotations']} annotations")
        print(f"    labels:  {', '.join(f'{k}->{v}' for k, v in p['label_nodes'].items()) or '(none)'}")
        print(f"    labeled: {', '.join(p['labeled_nodes']) or '(none)'}")
        print(f"    missing: {', '.join(p['missing_nodes']) or '(none)'}")
    return 0
