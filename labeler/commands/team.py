"""Team work: `labeler claim`, `labeler lease list|renew|release`, `labeler project set --gold-share` and
`labeler team grant` (docs/team.md)."""

from __future__ import annotations

import json

from labeler.cli import CommandError, arg, arguments, command
from projects.store.leases import DEFAULT_LEASE_S
from projects.workspace import Workspace

LEASE_MINUTES = arg("--lease-minutes", type=float, default=DEFAULT_LEASE_S / 60, metavar="M",
                    help=f"how long a lease lasts unless renewed (default {DEFAULT_LEASE_S / 60:.0f})")


def _lease_s(args) -> float:
    return float(args.lease_minutes) * 60.0


def _print_leases(leases, as_json: bool, what: str) -> None:
    if as_json:
        print(json.dumps([lease.to_dict() for lease in leases], indent=2))
        return
    print(what)
    for lease in leases:
        d = lease.to_dict()
        gold = "  (gold)" if d["gold"] else ""
        print(f"  image {d['image_id']:>8}  {d['holder']:<20} until {d['expires_at']}{gold}")


@command("claim", help="lease the next images of a project to an annotator (unlabeled first, then in progress that "
                       "nobody holds); nobody else gets them while the lease is live")
@arguments(arg("ws", help="workspace folder or postgresql:// URL"), arg("--project", required=True),
           arg("--user", required=True, help="the annotator (their login on a team workspace)"),
           arg("--n", type=int, default=1, help="how many images (default 1)"), LEASE_MINUTES,
           arg("--json", action="store_true", help="print JSON"))
def claim(args) -> int:
    with Workspace.open(args.ws) as ws:
        leases = ws.claim(args.project, args.user, args.n, _lease_s(args))
    if not leases and not args.json:
        print(f"no image of {args.project!r} is left to claim (every one is submitted or held by someone)")
        return 0
    _print_leases(leases, args.json, f"leased {len(leases)} image(s) of {args.project!r} to {args.user}:")
    return 0


@command("lease list", help="the live leases of a project: who holds which image until when")
@arguments(arg("ws"), arg("--project", required=True), arg("--user", help="one annotator only"),
           arg("--json", action="store_true", help="print JSON"))
def lease_list(args) -> int:
    with Workspace.open(args.ws) as ws:
        leases = ws.leases(args.project, args.user)
    _print_leases(leases, args.json, f"{len(leases)} live lease(s) on {args.project!r}:")
    return 0


@command("lease renew", help="push back the expiry of an annotator's leases")
@arguments(arg("ws"), arg("--user", required=True), arg("images", nargs="+", type=int, metavar="IMAGE_ID"),
           LEASE_MINUTES)
def lease_renew(args) -> int:
    with Workspace.open(args.ws) as ws:
        renewed = ws.renew_leases(args.images, args.user, _lease_s(args))
    lost = sorted(set(args.images) - set(renewed))
    print(f"renewed {len(renewed)} lease(s) of {args.user}")
    if lost:
        raise CommandError(f"image(s) {', '.join(map(str, lost))}: not held by {args.user} (released, or taken by "
                           "another annotator after the lease ran out)")
    return 0


@command("lease release", help="give back an annotator's leases (the images are free for others at once)")
@arguments(arg("ws"), arg("--user", required=True), arg("images", nargs="*", type=int, metavar="IMAGE_ID"),
           arg("--project", help="with --all: the project"),
           arg("--all", action="store_true", help="every image the annotator holds in --project"))
def lease_release(args) -> int:
    with Workspace.open(args.ws) as ws:
        ids = list(args.images)
        if args.all:
            if not args.project:
                raise CommandError("--all needs --project")
            ids += [lease.image_id for lease in ws.leases(args.project, args.user)]
        if not ids:
            raise CommandError("name the images to release, or --all --project P")
        released = ws.release_leases(ids, args.user)
    print(f"released {len(released)} lease(s) of {args.user}")
    return 0


@command("project set", help="a project's settings: the share of claimed images that are gold images")
@arguments(arg("ws"), arg("name", help="the project"),
           arg("--gold-share", type=float, required=True, metavar="S",
               help="0 to 1: the chance a claimed image is a gold image the annotator was not scored on yet"))
def project_set(args) -> int:
    with Workspace.open(args.ws) as ws:
        ws.set_gold_share(args.name, args.gold_share)
        gold = len(ws.gold_image_ids(args.name))
    print(f"project {args.name!r}: gold share {args.gold_share:g} ({gold} gold image(s); mark more with "
          "`labeler gold add`)")
    return 0


@command("team grant", help="make a database login an annotator or an admin of a team workspace (PostgreSQL roles "
                            "and table privileges)")
@arguments(arg("ws", help="postgresql:// URL, opened as the workspace's owner (or a superuser)"),
           arg("--user", required=True, help="the login (created without a password when it does not exist)"),
           arg("--role", required=True, choices=("annotator", "admin")))
def team_grant(args) -> int:
    from projects.roles import grant

    with Workspace.open(args.ws) as ws:
        created = grant(ws, args.user, args.role)
    print(f"{'created' if created else 'updated'} login {args.user!r}: {args.role} of this workspace"
          + ("; give it a password (psql: \\password " + args.user + ") or another way in (docs/team.md)"
             if created else ""))
    return 0
