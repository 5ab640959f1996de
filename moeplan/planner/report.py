"""`moeplan report`: tuning tables as pictures, one PNG per table plus a markdown index.

Reads the CSV a tuning run writes beside each table (see `moeplan.tables.measurements.read_tuning_csv`:
winner and default-heuristic times and the roofline floor per batch size M) and draws, per
table, the time per batch size (tuned winner, the engine's default heuristic, the floor, and
another folder's winner with `--vs`) on log-log axes, and the roofline fraction (floor / time)
below it. matplotlib with the Agg backend (no display needed), imported only when drawing.

Letters: M tokens in the batch of one MoE layer call (the tables' batch-size keys).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from moeplan.base.errors import MoeplanError
from moeplan.base.safeio import printable, shown
from moeplan.tables.measurements import CsvPoint, read_tuning_csv

FIG_INCHES = (8.0, 7.0)
DPI = 100  # so every PNG is 800 x 700 pixels
PNG_SIZE = (int(FIG_INCHES[0] * DPI), int(FIG_INCHES[1] * DPI))


class ChartError(MoeplanError):
    """A folder without tables, or matplotlib missing."""


@dataclass(frozen=True)
class TableRun:
    name: str  # the table's file name
    points: dict[int, CsvPoint]
    vs: Optional[dict[int, CsvPoint]] = None  # the same table in the --vs folder

    @property
    def card(self) -> str:
        part = next((p for p in self.name.split(",") if p.startswith("device_name=")), "device_name=?")
        return part.split("=", 1)[1].replace("_", " ").removesuffix(".json")

    @property
    def shape(self) -> str:
        """'E=8,N=7168 bf16' from the file name."""
        parts = self.name.removesuffix(".json").split(",")
        rest = [p for p in parts if not p.startswith(("E=", "N=", "device_name="))]
        dtype = ",".join(rest).replace("dtype=", "") or "bf16"
        return f"{parts[0]}, {parts[1]}, {dtype}"


def _read(csv_path: Path) -> Optional[dict[int, CsvPoint]]:
    """None when there is no CSV; PlanError (one line naming the file and line) when it is bad."""
    return read_tuning_csv(csv_path)


def find_runs(folder: Path, vs: Optional[Path] = None) -> tuple[list[TableRun], list[str]]:
    """Tables in `folder` with a readable CSV beside them; and the names of those without."""
    if not folder.is_dir():
        raise ChartError(f"report folder {shown(str(folder))} does not exist or is not a folder; give a folder of tuning "
                         f"tables (*.json with their *.csv), e.g. tuned")
    if vs is not None and not vs.is_dir():
        raise ChartError(f"--vs {shown(str(vs))} does not exist or is not a folder; give another folder of tuning tables")
    runs, skipped = [], []
    for table in sorted(folder.glob("E=*.json")):
        points = _read(table.with_suffix(".csv"))
        if not points or not any(p.winner_us for p in points.values()):
            skipped.append(table.name)
            continue
        other = _read((vs / table.name).with_suffix(".csv")) if vs is not None else None
        runs.append(TableRun(table.name, points, other))
    if not runs:
        without = printable(", ".join(skipped))
        raise ChartError(f"no tuning table with its CSV in {shown(str(folder))} (looked for E=*.json with a .csv "
                         f"beside it{'; without CSV: ' + without[:300] if skipped else ''})")
    return runs, skipped


ABOVE_FLOOR_NOTE = ("above 100%: faster than the floor, which is a model (uniform routing, the measured copy "
                    "bandwidth, dense matmul peak), not a law")


def chart_title(run: TableRun, here: str, vs_label: Optional[str], width: int = 80) -> str:
    """The chart's title, wrapped so no line is wider than the figure holds at its font size."""
    import textwrap

    what = f"winner in {here} vs the default heuristic" + (f" vs winner in {vs_label}" if vs_label else "")
    lines = [run.name, f"{run.card} ({run.shape})", what]
    return "\n".join(textwrap.fill(x, width, break_long_words=False, break_on_hyphens=False) for x in lines)


def draw(run: TableRun, png: Path, vs_label: str = "other", here: str = "this folder") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    Ms = sorted(M for M, p in run.points.items() if p.winner_us)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=FIG_INCHES, dpi=DPI, sharex=True,
                                      gridspec_kw={"height_ratios": [3, 2]})
    win = [run.points[M].winner_us for M in Ms]
    top.plot(Ms, win, "o-", color="tab:blue", label=f"winner in {here}")
    dM = [M for M in Ms if run.points[M].default_us]
    if dM:
        top.plot(dM, [run.points[M].default_us for M in dM], "s--", color="tab:orange", label="default heuristic")
    fM = [M for M in Ms if run.points[M].floor_us]
    if fM:
        top.plot(fM, [run.points[M].floor_us for M in fM], ":", color="gray", label="roofline floor")
    if run.vs:
        vM = [M for M in sorted(run.vs) if run.vs[M].winner_us]
        top.plot(vM, [run.vs[M].winner_us for M in vM], "^-", color="tab:green", label=f"winner in {vs_label} (--vs)")
    top.set_xscale("log", base=2)
    top.set_yscale("log")
    top.set_ylabel("time per MoE layer call (µs)")
    top.grid(True, which="both", alpha=0.3)
    top.legend(loc="upper left", fontsize=9)
    top.set_title(chart_title(run, here, vs_label if run.vs else None), fontsize=8)
    for label, times, style in ((f"winner in {here}", {M: run.points[M].winner_us for M in Ms}, "o-"),
                                ("default heuristic", {M: run.points[M].default_us for M in dM}, "s--")):
        xs = [M for M in times if run.points[M].floor_us]
        if xs:
            bottom.plot(xs, [100 * run.points[M].floor_us / times[M] for M in xs], style, label=label,
                        color="tab:blue" if style == "o-" else "tab:orange")
    bottom.set_xscale("log", base=2)
    fractions = [100 * run.points[M].floor_us / run.points[M].winner_us for M in fM]
    bottom.set_ylim(0, max([105.0] + [f + 5 for f in fractions]))
    bottom.set_ylabel("roofline fraction (floor / time, %)")
    bottom.set_xlabel("batch size M (tokens)")
    bottom.grid(True, which="both", alpha=0.3)
    bottom.legend(loc="lower right", fontsize=9)
    if max(fractions, default=0) > 100:
        bottom.text(0.01, 0.03, ABOVE_FLOOR_NOTE, transform=bottom.transAxes, fontsize=7, color="dimgray")
    ticks = sorted(set(Ms) | {M for M in (run.vs or {}) if run.vs[M].winner_us})  # both folders' batch sizes
    bottom.set_xticks(ticks)
    bottom.set_xticklabels([str(M) for M in ticks], rotation=45, fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=DPI)
    plt.close(fig)


def _fmt(v: Optional[float], spec: str = ".1f") -> str:
    return "-" if v is None else format(v, spec)


def index_markdown(runs: list[TableRun], pngs: list[str], skipped: list[str], folder: Path,
                   vs: Optional[Path]) -> str:
    out = [f"# Tuning tables in `{folder}`", "",
           "Times are the median of the `confirm` phase (else `screen`) in the CSV beside each table, in µs per "
           "MoE layer call; floor = max(bytes / bandwidth, flops / peak) as the tuner computed it; "
           "of roofline = floor / winner time (" + ABOVE_FLOOR_NOTE + ")."
           + (f" `vs` = the winner of the same table in `{vs}`." if vs else ""),
           ""]
    for run, png in zip(runs, pngs):
        out += [f"## {run.name}", "", f"![{run.shape}]({png})", "",
                "| M | winner us | default us | speed-up | floor us | of roofline |" + (" vs us |" if vs else ""),
                "|---:|---:|---:|---:|---:|---:|" + ("---:|" if vs else "")]
        for M in sorted(run.points):
            p = run.points[M]
            sp = p.default_us / p.winner_us if p.default_us and p.winner_us else None
            roof = 100 * p.floor_us / p.winner_us if p.floor_us and p.winner_us else None
            row = (f"| {M} | {_fmt(p.winner_us)} | {_fmt(p.default_us)} | {_fmt(sp, '.2f')}x | {_fmt(p.floor_us)} | "
                   f"{_fmt(roof, '.0f')}% |")
            if vs:
                other = run.vs.get(M) if run.vs else None
                row += f" {_fmt(other.winner_us if other else None)} |"
            out.append(row)
        out.append("")
    if skipped:
        out += ["Tables without a CSV beside them (nothing measured to draw): " + ", ".join(f"`{s}`" for s in skipped),
                ""]
    return "\n".join(out)


def write_report(folder: Path, out: Path, vs: Optional[Path] = None) -> Path:
    """Write one PNG per table and `index.md` into `out`; returns the index's path.

    Every input is read and checked first; `out` is created only then, and a failure while
    drawing removes what this call made (its new pictures and index, its new folders)."""
    from moeplan.base.ledger import Ledger
    from moeplan.base.safeio import check_path

    for option, p in (("report FOLDER", folder), ("--vs", vs), ("--out", out)):
        if p is not None:
            check_path(option, str(p), "a folder", ChartError)
    if out.exists() and not out.is_dir():
        raise ChartError(f"--out {shown(str(out))} is a file, not a folder; pass a folder for the pictures "
                         "(it is created if missing)")
    runs, skipped = find_runs(folder, vs)
    made = Ledger()
    try:
        made.make_out(out, "--out", ChartError)
        pngs = []
        for run in runs:
            png = run.name.removesuffix(".json").replace("[", "").replace("]", "").replace(",", "_") + ".png"
            draw(run, made.new_file(out / png), vs.name if vs else "other", folder.name or str(folder))
            pngs.append(png)
        index = made.new_file(out / "index.md")
        index.write_text(index_markdown(runs, pngs, skipped, folder, vs), encoding="utf-8")
    except OSError as e:
        made.undo()
        raise ChartError(f"--out {shown(str(out))}: cannot write the report ({e.strerror or e})") from None
    except BaseException:
        made.undo()
        raise
    return index


def make_report(folder: str, out: Optional[str] = None, vs: Optional[str] = None) -> Path:
    """`moeplan report` as one call, from option strings: checks them (the input layer's path
    rules), then `write_report` into `out` (default `./<FOLDER's name>-report`)."""
    from moeplan.base.safeio import check_path

    check_path("report FOLDER", folder, "a folder of tuning tables", ChartError)
    for option, p in (("--vs", vs), ("--out", out)):
        if p is not None:
            check_path(option, p, "a folder", ChartError)
    src = Path(folder)
    return write_report(src, Path(out) if out else Path(f"{src.resolve().name}-report"), Path(vs) if vs else None)
