"""`labeler report`: one static HTML page with PNG plots, for people who would rather look than read.

What it shows (each plot with the table of its figures under it):

1. **Model versions**: each registered version's training loss and validation mAP50 (from its model.json
   metrics), and every checkpoint the follow trainer evaluated (`training_checkpoints`: its loss and the
   gate's two figures, registered or kept training);
2. **Per-node AP** of the model in use (the latest registered one, or `--model`), on the held-out submitted
   images (val + test: a model remembers its training images);
3. **Recall at the display threshold** (the window's default 0.4) per node and per project: how many of the
   real objects the annotator sees pre-labelled;
4. **Drift by cohort**: the same figures cohort by cohort, oldest first, with bootstrap intervals and the
   flagged drops (inference/drift.py);
5. **Labelling per day by provenance**: images submitted per day and their boxes by provenance (pre-labels
   accepted vs adjusted vs drawn by hand vs refined vs imported).

The page is plain HTML and PNG files in one folder (no script, no network): it opens from a file share or
an e-mail attachment. Plots are drawn with matplotlib's Agg canvas directly (no pyplot, so no GUI backend
and no global state). The folder is written whole: built beside the target and swapped in, so a reader never
sees half a report; an existing folder is replaced only when a report wrote it (a `.labeler-report` marker).
Qt-free; the model is needed only for sections 2-4.
"""

from __future__ import annotations

import html
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from inference.drift import DISPLAY_THRESHOLD, DriftReport, NothingToScore, drift_report
from projects.activity import labelled_per_day
from projects.errors import LabelerError
from projects.schema import PROVENANCES
from projects.workspace import Workspace

MARKER = ".labeler-report"
INDEX = "index.html"
PROVENANCE_COLORS = {"prelabel_accepted": "#2ca02c", "prelabel_adjusted": "#98df8a", "refined": "#17becf",
                     "manual": "#ff7f0e", "imported": "#9e9e9e"}
DPI = 100


class ReportError(LabelerError, RuntimeError):
    """The report cannot be written where asked; the message names the folder and says why."""


@dataclass
class Report:
    folder: Path
    files: list[str]
    drift: DriftReport | None
    notes: list[str] = field(default_factory=list)  # sections left empty, and why


# --- the figures -----------------------------------------------------------------------------------
def model_versions(ws: Workspace) -> list[dict[str, Any]]:
    """Each registered version, oldest first: version, created_at, training loss, steps, validation figures,
    and the follow trainer's gate figures when it registered it."""
    gates = {c["registered_model_id"]: c for c in _checkpoints(ws) if c.get("registered_model_id")}
    out = []
    for row in ws.models():
        try:
            metrics = json.loads(row.get("metrics") or "{}")
        except json.JSONDecodeError:
            metrics = {}
        train = metrics.get("train") if isinstance(metrics.get("train"), dict) else {}
        val = metrics.get("val") if isinstance(metrics.get("val"), dict) else {}
        gate = gates.get(row["id"])
        out.append({"version": row["version"], "created_at": row["created_at"],
                    "loss": _num(train.get("final_loss", gate and gate.get("loss"))),
                    "steps": train.get("steps", gate and gate.get("steps")),
                    "val_mAP50": _num(val.get("mAP50")), "val_recall": _num(val.get("recall")),
                    "val_score_threshold": val.get("score_threshold"),
                    "gate": None if gate is None else {"metric": gate.get("metric"), "candidate": _num(gate.get(
                        "candidate")), "incumbent": _num(gate.get("incumbent"))}})
    return out


def _checkpoints(ws: Workspace) -> list[dict[str, Any]]:
    """The follow trainer's checkpoint log (empty for a workspace without one)."""
    if "training_checkpoints" not in ws.db.table_names():
        return []
    from projects.trainer_status import checkpoints

    return checkpoints(ws)


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) else None


# --- plots -----------------------------------------------------------------------------------------
def _figure(width: float = 8.0, height: float = 3.6, rows: int = 1, cols: int = 1):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    return fig, axes


def _save(fig, folder: Path, name: str) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    fig.savefig(folder / name, format="png")
    return name


def plot_versions(versions: list[dict[str, Any]], checkpoints: list[dict[str, Any]], folder: Path) -> str | None:
    if not versions and not checkpoints:
        return None
    fig, ax = _figure(9.0, 3.6, 1, 2)
    loss_ax, map_ax = ax[0]
    names = [v["version"] for v in versions]
    x = list(range(len(versions)))
    short = [_short(n) for n in names]
    loss = [v["loss"] for v in versions]
    val = [v["val_mAP50"] for v in versions]
    if any(v is not None for v in loss):
        loss_ax.plot([i for i, v in zip(x, loss) if v is not None], [v for v in loss if v is not None], "o-",
                     color="#1f77b4", label="registered version")
    if any(v is not None for v in val):
        map_ax.plot([i for i, v in zip(x, val) if v is not None], [v for v in val if v is not None], "o-",
                    color="#1f77b4", label="validation mAP50")
    gate = [(i, v["gate"]["candidate"]) for i, v in zip(x, versions) if v["gate"] and v["gate"]["candidate"]
            is not None]
    if gate:
        map_ax.plot(*zip(*gate), "s", color="#d62728", label="gate figure (frozen test split)")
    for a, title in ((loss_ax, "training loss per model version"), (map_ax, "mAP50 per model version")):
        a.set_title(title, fontsize=10)
        a.set_xticks(x, short, rotation=30, ha="right", fontsize=7)
        a.grid(alpha=0.3)
    map_ax.set_ylim(0, 1.02)
    if checkpoints:  # the follow trainer's evaluated checkpoints, on a second x axis: images seen
        cx = [c.get("images_seen") or 0 for c in checkpoints]
        twin = loss_ax.twiny()
        twin.plot(cx, [c.get("loss") if _num(c.get("loss")) is not None else math.nan for c in checkpoints], ".",
                  color="#7f7f7f", label="follow checkpoints (images seen, top axis)")
        twin.set_xlabel("images seen by the follow trainer", fontsize=8)
        twin.legend(fontsize=7, loc="upper right")
    if any(v is not None for v in loss):
        loss_ax.legend(fontsize=7, loc="lower left")
    if any(v is not None for v in val) or gate:
        map_ax.legend(fontsize=7, loc="lower right")
    return _save(fig, folder, "versions.png")


def _short(version: str, n: int = 18) -> str:
    return version if len(version) <= n else f"{version[:8]}…{version[-8:]}"


def plot_nodes(report: DriftReport, folder: Path) -> tuple[str | None, str | None]:
    """Per-node AP50 bars, and recall at the display threshold per node and per project."""
    nodes = {n: f for n, f in report.overall.nodes.items() if f.gt}
    if not nodes:
        return None, None
    names = list(nodes)
    fig, ax = _figure(8.0, 0.8 + 0.32 * len(names))
    a = ax[0][0]
    ys = list(range(len(names)))[::-1]
    a.barh(ys, [_nan0(nodes[n].mAP50) for n in names], color="#1f77b4", label="AP50")
    a.barh(ys, [_nan0(nodes[n].mAP) for n in names], height=0.4, color="#aec7e8", label="AP .5:.95")
    a.set_yticks(ys, [f"{n} ({nodes[n].gt} boxes)" for n in names], fontsize=8)
    a.set_xlim(0, 1)
    a.set_title(f"AP per node: model {_short(report.model, 32)} on {report.overall.figures.images} submitted "
                f"images ({'/'.join(report.splits)})", fontsize=10)
    a.legend(fontsize=7, loc="lower right")
    a.grid(axis="x", alpha=0.3)
    ap_png = _save(fig, folder, "nodes_ap.png")
    rows = [(f"node {n}", nodes[n]) for n in names] + \
           [(f"project {p}", f) for p, f in report.overall.projects.items() if f.gt]
    fig, ax = _figure(8.0, 0.8 + 0.32 * len(rows))
    a = ax[0][0]
    ys = list(range(len(rows)))[::-1]
    a.barh(ys, [_nan0(f.recall) for _, f in rows],
           color=["#2ca02c" if name.startswith("node") else "#9467bd" for name, _ in rows])
    for y, (_, f) in zip(ys, rows):
        a.text(min(_nan0(f.recall) + 0.01, 0.93), y, _pct(f.recall), va="center", fontsize=7)
    a.set_yticks(ys, [name for name, _ in rows], fontsize=8)
    a.set_xlim(0, 1)
    a.set_title(f"recall at the display threshold {report.score_threshold}: real objects shown as pre-labels",
                fontsize=10)
    a.grid(axis="x", alpha=0.3)
    return ap_png, _save(fig, folder, "recall.png")


def _nan0(v: float | None) -> float:
    return 0.0 if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _pct(v: float | None) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.0%}"


def plot_drift(report: DriftReport, folder: Path) -> str | None:
    if not report.cohorts:
        return None
    fig, ax = _figure(9.0, 3.8)
    a = ax[0][0]
    x = list(range(len(report.cohorts)))
    metric = report.metric
    values = [c.figures.value(metric) for c in report.cohorts]
    lows = [c.figures.low for c in report.cohorts]
    highs = [c.figures.high for c in report.cohorts]
    err = [[max(0.0, v - lo) if lo is not None else 0.0 for v, lo in zip(values, lows)],
           [max(0.0, hi - v) if hi is not None else 0.0 for v, hi in zip(values, highs)]]
    a.errorbar(x, [_nan0(v) for v in values], yerr=err, fmt="o-", color="#1f77b4", capsize=4,
               label=f"{metric} ({report.confidence:.0%} bootstrap interval)")
    other = "recall" if metric == "mAP50" else "mAP50"
    a.plot(x, [_nan0(c.figures.value(other)) for c in report.cohorts], "s--", color="#2ca02c",
           label=other + (f" at {report.score_threshold}" if other == "recall" else ""))
    flagged = [(i, _nan0(v)) for i, (c, v) in enumerate(zip(report.cohorts, values)) if c.flags]
    if flagged:
        a.plot(*zip(*flagged), "X", color="#d62728", markersize=14, label="flagged drop")
    for i, c in enumerate(report.cohorts):
        if c.flags:
            end = "right" if i == len(x) - 1 and i else "left" if i == 0 else "center"
            a.annotate("drop: " + ", ".join(c.flags[:3]) + ("…" if len(c.flags) > 3 else ""),
                       (i, _nan0(values[i])), textcoords="offset points", xytext=(0, -24), ha=end,
                       fontsize=7, color="#d62728")
    a.set_xticks(x, [f"{c.key}\n{c.figures.images} img" if len(c.key) < 14 else
                     f"#{i + 1}  {c.first[:16].replace('T', ' ')}\n{c.figures.images} img"
                     for i, c in enumerate(report.cohorts)], fontsize=7)
    a.set_ylim(0, 1.05)
    a.set_title(f"drift by cohort ({report.by}), oldest to newest: model {_short(report.model, 32)}", fontsize=10)
    a.grid(alpha=0.3)
    a.legend(fontsize=7, loc="lower left")
    return _save(fig, folder, "drift.png")


def plot_provenance(days: list[dict[str, Any]], folder: Path) -> str | None:
    if not days:
        return None
    fig, ax = _figure(9.0, 5.0, 2, 1)
    top, bottom = ax[0][0], ax[1][0]
    x = list(range(len(days)))
    labels = [d["day"] for d in days]
    top.bar(x, [d["images"] for d in days], color="#1f77b4")
    top.set_title("images submitted per day", fontsize=10)
    base = [0] * len(days)
    kinds = [p for p in PROVENANCES if any(d["boxes"].get(p) for d in days)]
    kinds += sorted({p for d in days for p in d["boxes"]} - set(kinds))
    for p in kinds:
        counts = [d["boxes"].get(p, 0) for d in days]
        bottom.bar(x, counts, bottom=base, color=PROVENANCE_COLORS.get(p, "#bcbd22"), label=p.replace("_", " "))
        base = [b + c for b, c in zip(base, counts)]
    bottom.set_title("their boxes by provenance: pre-labels accepted / adjusted, refined, drawn by hand, imported",
                     fontsize=10)
    for a in (top, bottom):
        step = max(1, len(days) // 12)
        a.set_xticks(x[::step], labels[::step], rotation=30, ha="right", fontsize=7)
        a.grid(axis="y", alpha=0.3)
    if kinds:
        bottom.set_ylim(0, max(base) * 1.3 or 1)  # room for the legend above the bars
        bottom.legend(fontsize=7, ncols=min(5, len(kinds)), loc="upper left")
    return _save(fig, folder, "provenance.png")


# --- the page --------------------------------------------------------------------------------------
CSS = """body{font-family:system-ui,sans-serif;max-width:980px;margin:24px auto;padding:0 16px;color:#222}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85em;margin:.6em 0}td,th{border:1px solid #ddd;padding:3px 8px;
text-align:right}th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
img{max-width:100%;border:1px solid #eee}.flag{color:#c62828;font-weight:bold}.note{color:#666}"""


def _e(v: Any) -> str:
    return html.escape(str(v), quote=True)


def _f(v: Any, signed: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:+.3f}" if signed else (f"{v:.3f}" if isinstance(v, float) else _e(v))


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """`rows` hold HTML already escaped."""
    return ("<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>" +
            "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows) + "</table>")


def _img(name: str | None, alt: str, why: str) -> str:
    return f'<p><img src="{_e(name)}" alt="{_e(alt)}"></p>' if name else f'<p class="note">{_e(why)}</p>'


def _page(ws: Workspace, model: str | None, versions: list[dict[str, Any]], checkpoints: list[dict[str, Any]],
          days: list[dict[str, Any]], drift: DriftReport | None, pngs: dict[str, str | None], why: str) -> str:
    title = f"Labeler report: {ws.folder.name}"
    parts = [f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{_e(title)}</title>"
             f"<style>{CSS}</style></head><body><h1>{_e(title)}</h1>",
             f"<p>Workspace <code>{_e(ws.folder)}</code>, made {_e(datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC'))}"
             f"; model in use: <b>{_e(model or 'none')}</b>.</p>"]
    parts.append("<h2 id=\"versions\">Model versions: training loss and validation mAP</h2>")
    parts.append(_img(pngs.get("versions"), "training loss and validation mAP50 per model version",
                      "No model registered yet: train one with `labeler train`."))
    if versions:
        parts.append(_table(["version", "registered", "steps", "training loss", "val mAP50", "val recall",
                             "gate: new / current"],
                            [[_e(v["version"]), _e(v["created_at"][:16].replace("T", " ")), _f(v["steps"]),
                              _f(v["loss"]), _f(v["val_mAP50"]), _f(v["val_recall"]),
                              "–" if not v["gate"] else f"{_f(v['gate']['candidate'])} / {_f(v['gate']['incumbent'])}"
                              f" {_e(v['gate']['metric'] or '')}"] for v in versions]))
    if checkpoints:
        kept = sum(1 for c in checkpoints if c.get("registered_model_id"))
        parts.append(f"<p>The follow trainer evaluated {len(checkpoints)} checkpoints and registered {kept} "
                     f"(a checkpoint is registered only when it beats the current model on the frozen test split).</p>")
    parts.append("<h2 id=\"nodes\">AP per node</h2>")
    parts.append(_img(pngs.get("nodes_ap"), "AP50 per node", why))
    parts.append("<h2 id=\"recall\">Recall at the display threshold</h2>")
    parts.append(_img(pngs.get("recall"), "recall at the display threshold per node and project", why))
    if drift is not None:
        rows = [[_e(n), str(f.gt), _f(f.mAP50), _f(f.mAP), _f(f.recall)] for n, f in drift.overall.nodes.items()]
        rows += [[f"project {_e(p)}", str(f.gt), _f(f.mAP50), _f(f.mAP), _f(f.recall)]
                 for p, f in drift.overall.projects.items()]
        parts.append(_table(["node / project", "boxes", "AP50", "AP .5:.95", f"recall@{drift.score_threshold}"],
                            rows))
    parts.append("<h2 id=\"drift\">Drift by cohort</h2>")
    parts.append(_img(pngs.get("drift"), "model figures per cohort of submitted images, oldest to newest", why))
    if drift is not None:
        parts.append(f"<p>{_e(drift.metric)} per cohort of submitted images ({_e('/'.join(drift.splits))} split, "
                     f"cohorts by {_e(drift.by)}); a cohort is flagged where it drops by at least {drift.threshold} "
                     f"against the oldest cohort, the bootstrap interval of the drop lies below zero (at "
                     f"{drift.confidence:.0%} for all the rows of a cohort together) and drawing both cohorts from "
                     f"their pooled images rarely gives such a drop (p); rows of at least {drift.min_flag_images} "
                     f"images.</p>")
        rows = []
        for i, c in enumerate(drift.cohorts):
            f = c.figures
            interval = ("baseline" if i == 0 else "–" if f.change_low is None
                        else f"[{_f(f.change_low, True)}, {_f(f.change_high, True)}]")
            flags = f'<span class="flag">drop: {_e(", ".join(c.flags))}</span>' if c.flags else ""
            rows.append([_e(c.label), str(f.images), str(f.gt), _f(f.mAP50), _f(f.recall),
                         "–" if i == 0 else _f(f.change, True), interval,
                         "–" if f.p_value is None else f"{f.p_value:.3g}", flags])
        parts.append(_table(["cohort", "images", "boxes", "mAP50", f"recall@{drift.score_threshold}",
                             f"{drift.metric} change", "interval", "p", "flag"], rows))
        if drift.skipped:
            parts.append(f"<p class=\"note\">{len(drift.skipped)} images could not be read and were not scored: "
                         f"{_e('; '.join(drift.skipped[:5]))}</p>")
    parts.append("<h2 id=\"provenance\">Labelling per day, by provenance</h2>")
    parts.append(_img(pngs.get("provenance"), "images submitted per day and their boxes by provenance",
                      "No image submitted yet."))
    if days:
        kinds = [p for p in PROVENANCES if any(d["boxes"].get(p) for d in days)]
        total = {p: sum(d["boxes"].get(p, 0) for d in days) for p in kinds}
        boxes = sum(total.values())
        parts.append(_table(["day", "images", *[p.replace("_", " ") for p in kinds]],
                            [[_e(d["day"]), str(d["images"]), *[str(d["boxes"].get(p, 0)) for p in kinds]]
                             for d in days] +
                            [["all", str(sum(d["images"] for d in days)),
                              *[f"{total[p]} ({total[p] / boxes:.0%})" if boxes else "0" for p in kinds]]]))
    parts.append("</body></html>")
    return "\n".join(parts)


# --- writing ---------------------------------------------------------------------------------------
def check_out_folder(out: Path, ws: Workspace) -> None:
    """A report replaces only a folder a report wrote (or an empty or missing one), never the workspace."""
    out = out.absolute()
    if out.exists() and not out.is_dir():
        raise ReportError(f"{out}: is a file, not a folder")
    if out.resolve() == ws.folder.resolve() or ws.folder.resolve().is_relative_to(out.resolve()):
        raise ReportError(f"{out}: holds the workspace; write the report to a folder of its own")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise ReportError(f"{out}: exists and was not written by `labeler report` (no {MARKER}); "
                          f"pick an empty or new folder")


def write_report(ws: Workspace, out: str | Path, predictor=None, projects: Sequence[str] | None = None,
                 drift_options: dict[str, Any] | None = None,
                 progress: Callable[[int, int], None] | None = None) -> Report:
    """Gather the figures, draw the plots and write `out/index.html` (see the module docstring).

    `predictor`: the model in use (None: the model sections say that none was given); `drift_options` go to
    `drift_report` (by, cohorts, splits, metric, threshold, ...)."""
    out = Path(out).absolute()
    check_out_folder(out, ws)
    versions, checkpoints = model_versions(ws), _checkpoints(ws)
    days = labelled_per_day(ws, projects)
    notes: list[str] = []
    drift = None
    why = "No model to evaluate: register one (`labeler train`) or pass --model DIR."
    if predictor is not None:
        try:
            drift = drift_report(ws, predictor, projects=projects, progress=progress,
                                 **{"score_threshold": DISPLAY_THRESHOLD, **(drift_options or {})})
        except NothingToScore as e:  # nothing held out yet: the rest of the report is still worth having
            why = str(e)
            notes.append(why)
    elif versions:
        why = "The model was not evaluated (--no-eval)."
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    except OSError as e:
        raise ReportError(f"{out}: cannot create the report folder ({e.strerror or e})") from e
    try:
        pngs: dict[str, str | None] = {"versions": plot_versions(versions, checkpoints, tmp),
                                       "provenance": plot_provenance(days, tmp)}
        if drift is not None:
            pngs["nodes_ap"], pngs["recall"] = plot_nodes(drift, tmp)
            pngs["drift"] = plot_drift(drift, tmp)
        model = drift.model if drift is not None else (versions[-1]["version"] if versions else None)
        (tmp / INDEX).write_text(_page(ws, model, versions, checkpoints, days, drift, pngs, why), encoding="utf-8")
        data = {"model": model, "versions": versions, "days": days,
                "drift": drift.to_dict() if drift is not None else None, "notes": notes}
        (tmp / "report.json").write_text(json.dumps(data, indent=1), encoding="utf-8")
        (tmp / MARKER).write_text("written by `labeler report`; the next report replaces this folder\n",
                                  encoding="utf-8")
        os.chmod(tmp, 0o755)
        _swap(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    files = sorted(p.name for p in out.iterdir() if p.name != MARKER)
    return Report(out, files, drift, notes)


def _swap(tmp: Path, out: Path) -> None:
    """Put the finished folder in place of the old report (renames only)."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    try:
        os.replace(tmp, out)
    except OSError as e:
        if old is not None:
            os.replace(old, out)
        raise ReportError(f"{out}: cannot write the report ({e.strerror or e})") from e
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
