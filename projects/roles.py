"""Roles of a team workspace: PostgreSQL logins with table privileges, so that the server itself refuses what an
annotator may not do, whatever program they connect with.

- **annotator**: reads everything; labels and submits: adds and edits annotations, sets an image's status and who
  submitted it, claims and gives back leases, and writes what the window writes as a side effect of labeling
  (cached predictions, pre-label decisions, lint findings, gold scores). It may not change taxonomies (nodes,
  labels), projects (add, delete, settings such as the gold share), images (add, remove), models (register,
  remove), the trainer's tables or the schema.
- **admin**: every privilege on every table of the workspace, and may create tables in its schema.

A refused statement reaches the caller as one `PermissionDeniedError` line (`projects/store/postgres.py`). Grants
name the tables that exist: after a schema migration adds a table, run `labeler team grant` again for each login.
Migrations themselves alter tables, which PostgreSQL allows their owner only: the login that ran `labeler init`.

SQLite cannot do any of this: whoever can write the file can change everything in it (docs/team.md).
"""

from __future__ import annotations

from projects.errors import WorkspaceError
from projects.store.leases import check_user
from projects.workspace import Workspace

ROLES = ("annotator", "admin")
ANNOTATOR_WRITES = {  # table -> the privileges an annotator has on it beyond SELECT
    "annotations": "INSERT, UPDATE",
    "images": "UPDATE (status, status_updated_at, submitted_by)",
    "leases": "INSERT, UPDATE",
    "quality_scores": "INSERT",
    "lint_findings": "INSERT, UPDATE, DELETE",
    "lint_images": "INSERT, DELETE",
    "proposal_decisions": "INSERT, DELETE",
    "predictions": "INSERT, DELETE",
    "predicted_images": "INSERT, UPDATE",
}


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def grant(ws: Workspace, user: str, role: str) -> bool:
    """Make the login `user` an annotator or an admin of this team workspace (creating the login, without a
    password, when it does not exist); returns True when it was created. Run it again to change a role."""
    if not ws.is_team:
        raise WorkspaceError(f"{ws.folder}: a folder workspace cannot enforce roles: whoever can write its "
                             "labeler.sqlite can change everything in it (file permissions are all or nothing); "
                             "put the workspace on PostgreSQL for roles (docs/team.md)")
    if role not in ROLES:
        raise WorkspaceError(f"unknown role {role!r} (one of {', '.join(ROLES)})")
    who = _ident(check_user(user))
    db = ws.db
    with db.atomic():
        created = db.execute("SELECT 1 FROM pg_roles WHERE rolname = ?", [user]).fetchone() is None
        if created:
            db.execute(f"CREATE ROLE {who} LOGIN")
        database, schema = db.execute("SELECT current_database(), current_schema()").fetchone()
        schema = _ident(schema)
        for statement in (f"GRANT CONNECT ON DATABASE {_ident(database)} TO {who}",
                          f"GRANT USAGE ON SCHEMA {schema} TO {who}",
                          f"REVOKE ALL ON ALL TABLES IN SCHEMA {schema} FROM {who}",
                          f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA {schema} FROM {who}",
                          f"REVOKE CREATE ON SCHEMA {schema} FROM {who}"):
            db.execute(statement)
        if role == "admin":
            for statement in (f"GRANT ALL ON ALL TABLES IN SCHEMA {schema} TO {who}",
                              f"GRANT ALL ON ALL SEQUENCES IN SCHEMA {schema} TO {who}",
                              f"GRANT CREATE ON SCHEMA {schema} TO {who}"):
                db.execute(statement)
        else:
            db.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {who}")
            db.execute(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA {schema} TO {who}")
            for table, privileges in ANNOTATOR_WRITES.items():
                db.execute(f"GRANT {privileges} ON {_ident(table)} TO {who}")
    return created
