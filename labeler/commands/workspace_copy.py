"""`labeler workspace copy SRC DST`: a workspace copied between a folder (SQLite) and PostgreSQL, verified."""

from __future__ import annotations

import json
import sys

from labeler.cli import arg, arguments, command
from projects.store.target import as_target
from projects.workspace_copy import copy_workspace


@command("workspace copy", help="copy a workspace between a folder and PostgreSQL (either way), every table and id "
                                "kept, verified by row counts and image content hashes; an interrupted copy "
                                "leaves DST unchanged")
@arguments(arg("src", metavar="SRC", help="the workspace folder or postgresql:// URL to copy (read in one snapshot; "
                                          "annotators may keep working)"),
           arg("dst", metavar="DST", help="a new or empty folder, or an empty PostgreSQL database's URL"),
           arg("--image-root", metavar="DIR", help="a PostgreSQL destination's image root on shared storage (image "
                                                   "paths are stored relative to it)"),
           arg("--copy-images", metavar="DIR", help="copy every image file into DIR first (never overwriting) and "
                                                    "store the copies' paths"),
           arg("--no-image-check", action="store_true", help="copy the rows even if image files are missing or "
                                                             "changed (the row counts are still verified)"),
           arg("--json", action="store_true", help="print the report as JSON"))
def workspace_copy(args) -> int:
    def progress(table: str, done: int, total: int) -> None:
        if done == total and not args.json:
            print(f"  {table}: {done:,} rows", file=sys.stderr, flush=True)

    report = copy_workspace(as_target(args.src), as_target(args.dst), image_root=args.image_root,
                            copy_images=args.copy_images, check_images=not args.no_image_check, progress=progress)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
        return 0
    rows = sum(report.tables.values())
    copied = f", {report.images_copied} copied and {report.images_reused} already there" if args.copy_images else ""
    print(f"copied {report.source} to {report.destination}: {rows:,} rows in {len(report.tables)} tables, "
          f"{report.images_verified} image files verified by content hash{copied} (image root {report.image_root}), "
          f"in {report.seconds:.1f} s")
    return 0
