"""Write BENCHMARKS.md from the per-topic figure files in docs/benchmarks/ (each names its command).

    .venv/bin/python bench/assemble_benchmarks.py
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ORDER = ["labeling-window", "start", "prelabels", "training", "decoding", "continuous", "distributed", "formats",
         "lint", "store", "team"]

HEADER = """# Benchmarks

Every figure below is printed by a script in `bench/`; each section names the exact command and the
machine it ran on. The development machine is a 2-core x86_64 VM with 24 GiB and no GPU; several
engineers' jobs (training runs among them) shared it while most figures were taken, as each section
says, so latency figures are pessimistic. No GPU was lent to this project's sessions so far: there are
no GPU figures. Nothing here is asserted in a test (tests never assert on wall time).

This file is assembled from `docs/benchmarks/*.md` by `bench/assemble_benchmarks.py`.
"""


def demote(text: str) -> str:
    """Each topic's headings go one level down under this file's title."""
    return re.sub(r"^(#+) ", lambda m: "#" + m.group(1) + " ", text, flags=re.MULTILINE)


def main() -> None:
    folder = ROOT / "docs" / "benchmarks"
    names = [n for n in ORDER if (folder / f"{n}.md").exists()]
    names += sorted(p.stem for p in folder.glob("*.md") if p.stem not in names)
    parts = [HEADER]
    for name in names:
        text = (folder / f"{name}.md").read_text(encoding="utf-8").strip()
        text = text.replace("](../", "](docs/").replace("](screenshots/", "](docs/screenshots/")
        parts.append(demote(text))
    (ROOT / "BENCHMARKS.md").write_text("\n\n".join(parts) + "\n", encoding="utf-8")
    print(f"wrote BENCHMARKS.md from {len(names)} sections: {', '.join(names)}")


if __name__ == "__main__":
    main()
