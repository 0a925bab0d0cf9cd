"""Stable train/val/test membership from an image's content hash.

The bucket is a number 0..99 from SHA-256 of "<salt>:<sha256 of the image bytes>", so an image
keeps its split as the data grows, across machines and Python runs (never Python's `hash()`).
Changing SPLIT_VERSION reshuffles on purpose.
"""

from __future__ import annotations

import hashlib

SPLIT_VERSION = "labeler-split-v1"
SPLITS = (("train", 80), ("val", 90), ("test", 100))  # bucket < bound


def split_bucket(content_sha256: str, salt: str = SPLIT_VERSION) -> int:
    digest = hashlib.sha256(f"{salt}:{content_sha256}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 100


def split_of(bucket: int) -> str:
    for name, bound in SPLITS:
        if bucket < bound:
            return name
    raise ValueError(f"bucket {bucket} outside 0..99")
