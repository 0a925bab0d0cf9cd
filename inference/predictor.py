"""The predictor: RGB images of any size in, detections in super-taxonomy nodes out.

Used by the pre-label worker, refine, lint, `labeler eval` and the benchmarks. It letterboxes each
image into the model's fixed input, runs the model, applies hierarchical decoding to the class logits
(inference/decoding.py: a node never outscores its ancestors; untrained nodes emit nothing), decodes every
head group with effdet's own post-processing (top-k, per-class NMS), merges groups (NMS again where
two groups predict the same node), undoes the letterbox, and keeps detections down to `min_score`
(low-score detections matter to refine and lint). Qt-free; one Predictor per thread.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from effdet.anchors import Anchors
from effdet.bench import _batch_detection, _post_process
from torchvision.ops import batched_nms

from inference.architectures import Detector
from inference.checkpoint import Checkpoint, load_checkpoint
from inference.decoding import GroupDecoding, parent_map, trained_nodes
from inference.letterbox import boxes_from_letterbox, letterbox
from projects.taxonomy import SuperTaxonomy
from projects.values import Detection

__all__ = ["Detection", "Predictor"]


class Predictor:
    def __init__(self, checkpoint: Checkpoint, device: str | torch.device | None = None,
                 min_score: float = 0.05, max_detections: int = 100, max_candidates: int = 1000,
                 hierarchical: bool = True):
        self.checkpoint = checkpoint
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model: Detector = checkpoint.model.to(self.device).eval()
        meta = checkpoint.meta
        self.version: str = checkpoint.version
        self.node_names: list[str] = checkpoint.node_names
        self.image_size: int = int(meta["image_size"])
        self.min_score = float(min_score)
        self.max_detections = int(max_detections)
        # anchors x classes kept for NMS: effdet's 5000 made decoding ~20% of a CPU forward pass; the
        # top 1000 by score leave the kept detections (<= 100, score >= min_score) the same in practice
        self.max_candidates = int(max_candidates)
        norm = meta.get("normalisation") or {"mean": [127.5] * 3, "std": [127.5] * 3}
        self.mean = tuple(float(v) for v in norm["mean"])
        self._mean = torch.tensor(self.mean, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor([float(v) for v in norm["std"]], device=self.device).view(1, 3, 1, 1)
        self.anchors = Anchors.from_config(self.model.config).to(self.device)
        self.groups = self.model.groups
        parents, trained = parent_map(meta), trained_nodes(meta)
        # hierarchical=False keeps the raw columns (bench/bench_decoding.py compares both in one run)
        self.decodings = [GroupDecoding(g.nodes, parents if hierarchical else {},
                                        trained if hierarchical else None) for g in self.groups]
        counts: dict[str, int] = {}
        for g in self.groups:
            for n in g.nodes:
                counts[n] = counts.get(n, 0) + 1
        self._shared_nodes = any(c > 1 for c in counts.values())

    @classmethod
    def from_checkpoint(cls, folder: str | Path, device: str | torch.device | None = None,
                        threads: int | None = None, super_taxonomy: SuperTaxonomy | None = None,
                        min_score: float = 0.05) -> Predictor:
        """Load a checkpoint folder; `threads` caps torch's intra-op threads for this process (leave a
        core to the UI), `super_taxonomy` makes loading refuse a model of another workspace."""
        if threads is not None:
            torch.set_num_threads(max(1, int(threads)))
        return cls(load_checkpoint(folder, super_taxonomy), device=device, min_score=min_score)

    # --- input ---------------------------------------------------------------------------------
    def prepare(self, images: Sequence[np.ndarray]) -> tuple[torch.Tensor, list[float]]:
        """Letterboxed, normalised batch (B, 3, S, S) and each image's scale."""
        boxed, scales = [], []
        for img in images:
            arr, s = letterbox(np.asarray(img), self.image_size, self.mean)
            boxed.append(arr)
            scales.append(s)
        x = torch.from_numpy(np.stack(boxed)).to(self.device).permute(0, 3, 1, 2).float()
        return (x - self._mean) / self._std, scales

    # --- the model alone -----------------------------------------------------------------------
    @torch.inference_mode()
    def forward(self, batch: torch.Tensor):
        """The bare model forward pass on a prepared batch (for overhead benchmarks)."""
        return self.model(batch.to(self.device))

    def time_forward(self, batch_size: int = 1, repeats: int = 5, warmup: int = 1) -> float:
        """Seconds per bare forward pass of a zero batch, median of `repeats` (no decode, no I/O)."""
        x = torch.zeros(batch_size, 3, self.image_size, self.image_size, device=self.device)
        for _ in range(warmup):
            self.forward(x)
        times = []
        for _ in range(repeats):
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            self.forward(x)
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
        return float(np.median(times))

    # --- prediction ----------------------------------------------------------------------------
    @torch.inference_mode()
    def predict(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        """Detections per image, best first, scores >= min_score, boxes in each image's pixels."""
        if not images:
            return []
        for i, img in enumerate(images):
            a = np.asarray(img)
            if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
                raise ValueError(f"image {i}: expected RGB uint8 (H, W, 3), got {a.dtype} {a.shape}")
        x, scales = self.prepare(images)
        outputs = self.model(x)
        per_group = [self._decode(dec.logits(c), b, len(g.nodes)) for (c, b), g, dec
                     in zip(outputs, self.groups, self.decodings)]
        results = []
        for b, img in enumerate(images):
            h, w = img.shape[:2]
            boxes, scores, nodes = [], [], []
            for g, dec, dets in zip(self.groups, self.decodings, per_group):
                d = dets[b]
                d = d[(d[:, 4] >= self.min_score) & dec.enabled.to(d.device)[d[:, 5].long().clamp(min=1) - 1]]
                boxes.append(d[:, :4])
                scores.append(d[:, 4])
                nodes.append(torch.tensor([self.node_names.index(g.nodes[int(c) - 1]) for c in d[:, 5]],
                                          dtype=torch.long, device=d.device))
            bx, sc, nd = torch.cat(boxes), torch.cat(scores), torch.cat(nodes)
            if self._shared_nodes and len(sc):
                keep = batched_nms(bx, sc, nd, 0.5)
            else:
                keep = torch.argsort(sc, descending=True)
            keep = keep[: self.max_detections]
            bx = boxes_from_letterbox(bx[keep].cpu().numpy(), scales[b], w, h)
            results.append([Detection(self.node_names[int(n)], tuple(float(v) for v in box), float(s))
                            for box, s, n in zip(bx, sc[keep].cpu().numpy(), nd[keep].cpu().numpy())])
        return results

    def tighten(self, images: Sequence[np.ndarray], detections: Sequence[Sequence[Detection]]
                ) -> list[list[Detection]]:
        """Tighter boxes for `predict`'s detections of these images: each confident box averaged with its twin in
        the mirrored image (one more forward pass; inference/tighten.py says why this pass and not another)."""
        from inference.tighten import tighten

        return tighten(images, detections, self.predict)

    def _decode(self, cls_out: list[torch.Tensor], box_out: list[torch.Tensor], num_classes: int) -> torch.Tensor:
        """effdet post-processing: [B, max_det, 6] = x1, y1, x2, y2, score, class (1-based), in input pixels."""
        cfg = self.model.config
        total = self.anchors.boxes.shape[0] * num_classes
        c, b, idx, cls = _post_process(cls_out, box_out, num_levels=cfg.num_levels, num_classes=num_classes,
                                       max_detection_points=min(self.max_candidates,
                                                                int(cfg.max_detection_points), total))
        return _batch_detection(c.shape[0], c, b, self.anchors.boxes, idx, cls,
                                max_det_per_image=self.max_detections)
