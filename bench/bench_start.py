"""Start and quit of the labeling window, side by side with a bare PySide6 start, in one run.

    .venv/bin/python bench/bench_start.py [--runs 4] [--json FILE]

Each run launches, in turn:

* **bare**: `python -c "import PySide6.QtWidgets"`, process start to exit: the floor of any Qt app here;
* **cached**: `labeler open WS --project B` on a demo workspace whose images all have stored predictions;
* **fresh**: the same on a fresh copy of a workspace that was never predicted (the first pre-label
  needs torch and the model).

For each window it reads the start-up report the app writes when `LABELER_STARTUP_REPORT` is set
(`labeler/app/startup.py`): the wall-clock time the first image was painted and the first pre-label
was painted, and whether torch was imported by then. After `--idle` seconds it reads the process's
resident memory, focuses the window and presses Ctrl+Q with xdotool (a real key press through the X
server), and times until the window closed and until the process ended.

Needs an X server: uses $DISPLAY, else starts `Xvfb` (apt-get install xvfb xdotool). Workspaces are
built once in --dir with `labeler demo` (and `labeler predict` for the cached one) and reused.
Nothing is asserted; the script prints figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
LABELER = str(BIN / "labeler")


def sh(*cmd: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def prepare(folder: Path) -> tuple[Path, Path]:
    cached, fresh = folder / "cached", folder / "fresh"
    if not (cached / "labeler.sqlite").exists():
        shutil.rmtree(cached, ignore_errors=True)
        print(f"building {cached} (labeler demo + labeler predict) …", flush=True)
        sh(LABELER, "demo", str(cached), "--no-gui")
        for project in ("A", "B", "C"):
            sh(LABELER, "predict", str(cached), "--project", project)
    if not (fresh / "labeler.sqlite").exists():
        shutil.rmtree(fresh, ignore_errors=True)
        print(f"building {fresh} (labeler demo, never predicted) …", flush=True)
        sh(LABELER, "demo", str(fresh), "--no-gui")
    return cached, fresh


def start_x() -> subprocess.Popen | None:
    if os.environ.get("DISPLAY"):
        return None
    if not shutil.which("Xvfb") or not shutil.which("xdotool"):
        sys.exit("needs an X server: set DISPLAY, or apt-get install xvfb xdotool")
    display = ":97"
    proc = subprocess.Popen(["Xvfb", display, "-screen", "0", "1920x1080x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.environ["DISPLAY"] = display
    time.sleep(1.0)
    return proc


def bare() -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import PySide6.QtWidgets"], check=True)
    return time.perf_counter() - t


def events(report: Path) -> dict[str, dict]:
    out = {}
    if report.exists():
        for line in report.read_text(encoding="utf-8").splitlines():
            e = json.loads(line)
            out.setdefault(e["event"], e)
    return out


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def window_of(pid: int) -> str | None:
    r = subprocess.run(["xdotool", "search", "--onlyvisible", "--pid", str(pid), "--name", "Labeler"],
                       capture_output=True, text=True)
    ids = r.stdout.split()
    return ids[-1] if ids else None


def one_window(ws: Path, idle_s: float, timeout_s: float, copy: bool = False) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bench-start-"))
    if copy:  # a never-predicted workspace stays so only until a window has predicted in it: use a copy
        ws = shutil.copytree(ws, tmp / "ws", ignore=shutil.ignore_patterns("*.sqlite-wal", "*.sqlite-shm"))
    report = tmp / "report.jsonl"
    env = {**os.environ, "LABELER_STARTUP_REPORT": str(report), "LABELER_SETTINGS": str(tmp / "settings.ini")}
    env.pop("QT_QPA_PLATFORM", None)
    t0 = time.time()
    proc = subprocess.Popen([LABELER, "open", str(ws), "--project", "B"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    out: dict = {}
    try:
        while time.time() - t0 < timeout_s and proc.poll() is None:
            ev = events(report)
            if "painted" in ev and "prelabel" in ev:
                break
            time.sleep(0.01)
        ev = events(report)
        if "painted" not in ev:
            raise RuntimeError(f"no first paint within {timeout_s} s: {proc.stderr.read() if proc.poll() else ''}")
        out["painted_s"] = ev["painted"]["t"] - t0
        out["torch_at_paint"] = ev["painted"]["torch"]
        out["index_opened"] = ev["painted"]["index"]
        if "prelabel" in ev:
            out["prelabel_s"] = ev["prelabel"]["t"] - t0
            out["prelabel_after_paint_s"] = ev["prelabel"]["t"] - ev["painted"]["t"]
            out["torch_at_prelabel"] = ev["prelabel"]["torch"]
        time.sleep(idle_s)
        out["rss_idle_mb"] = rss_mb(proc.pid)
        wid = window_of(proc.pid)
        if wid is None:
            raise RuntimeError("window not found with xdotool")
        subprocess.run(["xdotool", "windowfocus", "--sync", wid], check=False, capture_output=True)
        time.sleep(0.2)
        tq = time.time()
        subprocess.run(["xdotool", "key", "ctrl+q"], check=True)
        proc.wait(timeout=60)
        t_end = time.time()
        ev = events(report)
        out["exit_s"] = t_end - tq
        if "closed" in ev:
            out["window_gone_s"] = ev["closed"]["t"] - tq
        out["returncode"] = proc.returncode
        return out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def summary(values: list[float], unit: str = "s", digits: int = 2) -> str:
    if not values:
        return "–"
    fmt = f"{{:.{digits}f}}"
    return (f"median {fmt.format(statistics.median(values))} {unit} "
            f"(min {fmt.format(min(values))}, max {fmt.format(max(values))})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("--idle", type=float, default=5.0, help="seconds the window stays idle before Ctrl+Q")
    ap.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "labeler-bench-start")
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    cached, fresh = prepare(args.dir)
    xvfb = start_x()
    load_before = os.getloadavg()
    rows: dict[str, list[dict]] = {"bare": [], "cached": [], "fresh": []}
    try:
        for run in range(args.runs):
            rows["bare"].append({"start_s": bare()})
            rows["cached"].append(one_window(cached, args.idle, args.timeout))
            rows["fresh"].append(one_window(fresh, args.idle, args.timeout, copy=True))
            print(f"run {run + 1}: bare {rows['bare'][-1]['start_s']:.2f} s · cached "
                  + json.dumps(rows["cached"][-1]) + " · fresh " + json.dumps(rows["fresh"][-1]), flush=True)
    finally:
        if xvfb is not None:
            xvfb.terminate()
    load_after = os.getloadavg()
    b = [r["start_s"] for r in rows["bare"]]
    print(f"\nmachine: {os.cpu_count()} cores, load average {load_before[0]:.2f} before, "
          f"{load_after[0]:.2f} after; {args.runs} runs; X server {os.environ.get('DISPLAY')}")
    print(f"bare `python -c 'import PySide6.QtWidgets'`: {summary(b)}")
    for name in ("cached", "fresh"):
        r = rows[name]
        print(f"\n{name} workspace:")
        print(f"  launch → first image painted:      {summary([x['painted_s'] for x in r])}")
        print(f"    … above the bare start (same run): {summary([x['painted_s'] - y for x, y in zip(r, b)])}")
        print(f"  launch → first pre-label painted:  {summary([x['prelabel_s'] for x in r if 'prelabel_s' in x])}")
        print(f"    … after the first image:           "
              f"{summary([x['prelabel_after_paint_s'] for x in r if 'prelabel_after_paint_s' in x])}")
        print(f"  torch imported at first paint:      {sorted({x['torch_at_paint'] for x in r})}")
        print(f"  torch imported at first pre-label:  {sorted({x.get('torch_at_prelabel') for x in r}, key=str)}")
        print(f"  resident memory after {args.idle:.0f} s idle:   "
              f"{summary([x['rss_idle_mb'] for x in r if x.get('rss_idle_mb')], 'MB', 0)}")
        print(f"  Ctrl+Q → window gone:               "
              f"{summary([x['window_gone_s'] for x in r if 'window_gone_s' in x])}")
        print(f"  Ctrl+Q → process ended:             {summary([x['exit_s'] for x in r])}")
        print(f"  exit status: {sorted({x['returncode'] for x in r})}; opened on image index "
              f"{sorted({x['index_opened'] for x in r})}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "load": [load_before, load_after]}, indent=1))


if __name__ == "__main__":
    main()
