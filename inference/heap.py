"""Keep Python's full garbage collections short once the model code is loaded.

A collection of the oldest generation walks every object the collector tracks. Once torch, effdet, timm and
Qt are imported that is a few hundred thousand objects: about 150 ms on a 2-core machine, with the GIL
held, so the window's event loop stalls whichever thread triggered it (bench/bench_continuous.py `app`
attributed its longest stalls to model loads; gc callbacks showed them to be these collections).
`gc.freeze()` moves every object alive now into a permanent generation that collections skip. Called once,
after the first model has loaded, it freezes the imported code and the first model (long-lived anyway);
later collections walk only what came after, so they stay short. A model swapped out later is not frozen
and is freed as before.
"""

from __future__ import annotations

import gc
import threading

_lock = threading.Lock()
_frozen = False


def freeze_once() -> bool:
    """Freeze the heap the first time this is called in the process; True if it did now."""
    global _frozen
    with _lock:
        if _frozen:
            return False
        gc.freeze()
        _frozen = True
        return True
