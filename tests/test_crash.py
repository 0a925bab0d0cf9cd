"""A writer killed with SIGKILL loses nothing it committed, and the workspace still opens."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

from projects.taxonomy import CustomerTaxonomy, Label
from projects.workspace import Workspace

WRITER = textwrap.dedent("""
    import sys
    from projects.workspace import Workspace
    ws = Workspace.open(sys.argv[1])
    image_id, label_id = int(sys.argv[2]), int(sys.argv[3])
    i = 0
    while True:
        aid = ws.add_annotation(image_id, label_id, (i, i, i + 10, i + 10), author="writer")
        if i % 3 == 0:
            ws.update_annotation(aid, box=(i, i, i + 20, i + 20))
        print(aid, flush=True)   # printed only after the edit's transaction committed
        i += 1
""")


def test_sigkill_during_edits_loses_nothing_committed(tmp_path):
    from projects.imaging import write_image
    from projects.synthetic import make_scene

    with Workspace.create(tmp_path / "ws") as ws:
        ws.add_project("P", CustomerTaxonomy([Label("Human", "person")]))
        write_image(tmp_path / "a.png", make_scene(0).image)
        (img,) = ws.add_images("P", [tmp_path / "a.png"]).added
        label = ws.labels("P")[0]["id"]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path / "ws"), str(img), str(label)],
                            stdout=subprocess.PIPE, text=True, cwd=root)
    committed = [int(proc.stdout.readline()) for _ in range(200)]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    with Workspace.open(tmp_path / "ws") as ws:
        assert ws.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = {a["id"]: a for a in ws.annotations(img)}
        assert set(committed) <= set(rows)  # every edit reported as done is on disk
        for aid in committed:
            a = rows[aid]
            i = int(a["x1"])
            assert a["x2"] - a["x1"] == (20 if i % 3 == 0 else 10)  # the update landed with its insert
