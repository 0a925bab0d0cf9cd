"""Registering a trained checkpoint as a model version of a workspace.

The workspace's `models` table is what the pre-label worker watches to hot-swap models; a version is
registered once, with its checkpoint's config and metrics, after the checkpoint is verified to fit
the workspace's super-taxonomy (so a model from another workspace is never offered).
"""

from __future__ import annotations

from pathlib import Path

from inference.checkpoint import check_taxonomy, read_meta
from projects.workspace import Workspace

CONFIG_KEYS = ("model", "image_size", "layout", "approach", "normalisation", "groups", "data")


def register_checkpoint(ws: Workspace, folder: str | Path) -> int:
    """Register the checkpoint in `folder` with the workspace; returns the new model id.

    Raises CheckpointError for a missing/corrupt description or a taxonomy mismatch, and
    WorkspaceError when the version is already registered.
    """
    folder = Path(folder).resolve()
    meta = read_meta(folder)
    check_taxonomy(meta, ws.super_taxonomy(), folder / "model.json")
    config = {k: meta[k] for k in CONFIG_KEYS if k in meta}
    return ws.register_model(meta["version"], str(folder), config=config, metrics=meta.get("metrics") or {})


def model_id_for(ws: Workspace, folder: str | Path) -> int | None:
    """The id under which this checkpoint's version is registered, or None."""
    version = read_meta(folder)["version"]
    for row in ws.models():
        if row["version"] == version:
            return int(row["id"])
    return None
