"""`labeler import` and `labeler export`: other tools' formats in and out of a project.

The work lives in `projects.formats` (Qt-free, usable from scripts); these commands parse arguments,
print the report and turn the formats' errors into one clean line and exit status 2.
"""

from __future__ import annotations

import sys
from pathlib import Path

from labeler.cli import CommandError, arg, arguments, command
from projects.formats import (
    ImportOptions,
    TransferError,
    export_project,
    format_names,
    import_annotations,
    load_mapping,
)
from projects.formats.importer import BAD_BOX_POLICIES
from projects.workspace import Workspace

FORMATS = format_names()


@command("import", help="import another tool's annotations (and their images) into a project, all or nothing")
@arguments(
    arg("ws", help="workspace folder"),
    arg("--project", required=True, help="the project to import into (the archive format creates it if new)"),
    arg("--format", required=True, choices=FORMATS, dest="fmt"),
    arg("path", help="the annotation file or folder as the other tool wrote it"),
    arg("--images", metavar="DIR", help="folder to look for images in first"),
    arg("--map", metavar="FILE", help="YAML/JSON mapping {label in the file: project label, or null to drop}"),
    arg("--add-labels", action="store_true", help="create missing labels, each mapped to the node of the same name"),
    arg("--skip-missing", action="store_true", help="skip (and list) images that cannot be found or read"),
    arg("--bad-boxes", choices=BAD_BOX_POLICIES, default="clamp",
        help="boxes partly outside the image: clamp (default), skip, or error; zero-area and NaN boxes are "
             "always skipped and listed"),
    arg("--trust-sizes", action="store_true",
        help="take image sizes from the annotation file instead of decoding each image (faster; files are still "
             "hashed; a wrong stated size goes unnoticed)"),
    arg("--status", choices=("submitted", "in_progress", "unlabeled"), default="submitted",
        help="status of the imported images (default: submitted, as another tool's finished labels)"),
    arg("--dry-run", action="store_true", help="check everything and report, write nothing"),
    arg("--verbose", "-v", action="store_true", help="list up to 20 places for each kind of issue"),
)
def import_(args) -> int:
    opts = ImportOptions(images_dir=Path(args.images) if args.images else None,
                         mapping=_mapping(args.map), add_labels=args.add_labels, skip_missing=args.skip_missing,
                         bad_boxes=args.bad_boxes, trust_sizes=args.trust_sizes, status=args.status,
                         dry_run=args.dry_run)
    with Workspace.open(args.ws) as ws:
        try:
            report = import_annotations(ws, args.project, args.fmt, args.path, opts)
        except TransferError as e:
            raise CommandError(f"{e}\nnothing was imported") from e
    lines = report.lines(limit=20 if args.verbose else 3)
    print(lines[0])
    for line in lines[1:]:
        print(line, file=sys.stderr)
    return 0


def _mapping(path: str | None) -> dict[str, str | None] | None:
    if path is None:
        return None
    try:
        return load_mapping(path)
    except TransferError as e:
        raise CommandError(str(e)) from e


@command("export", help="export a project in another tool's format (or as a portable archive)")
@arguments(
    arg("ws", help="workspace folder"),
    arg("--project", required=True),
    arg("--format", required=True, choices=FORMATS, dest="fmt"),
    arg("out", help="output folder (one file for the archive format)"),
    arg("--only-submitted", action="store_true", help="only images whose status is submitted"),
    arg("--no-images", action="store_true", help="write the annotation files only, without copying images"),
    arg("--overwrite", action="store_true", help="replace OUT if it exists"),
)
def export(args) -> int:
    with Workspace.open(args.ws) as ws:
        try:
            report = export_project(ws, args.project, args.fmt, args.out, only_submitted=args.only_submitted,
                                    copy_images=not args.no_images, overwrite=args.overwrite)
        except TransferError as e:
            raise CommandError(str(e)) from e
    for line in report.lines():
        print(line)
    return 0
