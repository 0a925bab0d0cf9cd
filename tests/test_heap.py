"""Once the prediction worker has loaded its first model, full garbage collections skip the imported code.

A full collection walks every tracked object with the GIL held; with torch and Qt imported that stalled the
window's event loop for ~150 ms (bench/bench_continuous.py `app`, docs/benchmarks/continuous.md). After the
first model is ready the heap alive then is frozen, so collections walk only newer objects.
"""

from __future__ import annotations

import gc

from inference.worker import PredictionService
from projects.imaging import write_image
from projects.synthetic import make_scene


class _Predictor:
    def predict(self, images):
        return [[] for _ in images]


def test_the_heap_alive_when_the_first_model_is_ready_is_skipped_by_collections(ws):
    ws.add_project("P")
    write_image(ws.folder / "a.png", make_scene(0, size=(64, 48)).image)
    image_id = ws.add_images("P", [ws.folder / "a.png"]).added[0]
    ws.register_model("v1", ws.folder / "v1")
    before = [object()]  # a container: tracked by the collector
    assert gc.is_tracked(before)
    status: list[str] = []
    svc = PredictionService(ws.folder, on_status=status.append, loader=lambda path, threads: _Predictor(), threads=1)
    svc.start()
    try:
        svc.request(image_id)
        assert svc.wait_idle(30)
    finally:
        svc.stop()
    assert any("model v1 ready" in s for s in status)
    assert gc.get_freeze_count() > 0
    assert all(o is not before for o in gc.get_objects(generation=2))  # frozen: no longer walked by collections
