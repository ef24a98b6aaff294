"""What a leaderboard is asked for: where the runs come from, which of them, the bounds of the pick, how rows rank,
what "cheapest" means, and where the report goes. The command line (harness/leaderboard.py) builds one from its
options; everything below it reads this, never the command line's own namespace."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.board.ranking import LeaderboardError
from harness.board.sources import Source

# What "cheapest" can mean: a cost figure of every run's record.
COST_KEYS = ("usd_per_1k_generations", "usd_total", "usd_train", "usd_eval")
DEFAULT_COST = "usd_per_1k_generations"
# The markdown report's name when no --out is given; its plot and page are then pareto.png and report.html.
DEFAULT_OUT_STEM = "leaderboard"
# Rows per board in the tables (terminal, markdown, page) unless --all-rows: a year of sweeps ranks thousands.
TOP_ROWS = 20


def default_out(source: Source) -> Path:
    """The report when --out is not given: leaderboard.md beside the ledger, else in the results folder of offline
    runs (or ./results for an online W&B project)."""
    if source.kind == "ledger":
        folder = source.ledger_path.parent
    elif source.kind == "wandb-offline":
        folder = Path(source.location).resolve().parent
    else:
        folder = Path("results")
    return folder / f"{DEFAULT_OUT_STEM}.md"


@dataclass(frozen=True)
class BoardOptions:
    source: Source
    # The markdown report; the Pareto plot and the HTML page are written beside it (see figure_paths).
    out: Path
    floors: tuple[str, ...] = ()  # --min METRIC=VALUE, on higher-is-better figures
    ceilings: tuple[str, ...] = ()  # --max METRIC=VALUE, on lower-is-better figures
    sort: str | None = None  # the ranking metric; None: the first bound, else a default per board
    cost: str = DEFAULT_COST  # what "cheapest" means
    data: str | None = None  # only this dataset's board
    group: str | None = None  # only runs of this sweep (its W&B group; the ledger's sweep id)
    allow_different_samples: bool = False  # rank on metrics scored on different samples in different runs
    all_rows: bool = False  # every ranked row in the tables, not the first TOP_ROWS

    def __post_init__(self) -> None:
        if self.cost not in COST_KEYS:
            raise LeaderboardError(f"--cost {self.cost}: not a cost figure; choose one of {', '.join(COST_KEYS)}")

    @property
    def figure_paths(self) -> tuple[Path, Path]:
        """The Pareto plot and the HTML page that go with the report: pareto.png and report.html beside
        leaderboard.md; beside another name, its stem first (leaderboard-shop.md: leaderboard-shop-pareto.png, ...),
        so two reports written into one folder (e.g. one --data each) keep a picture and a page each."""
        folder, stem = self.out.parent, self.out.stem
        if stem == DEFAULT_OUT_STEM:
            return folder / "pareto.png", folder / "report.html"
        return folder / f"{stem}-pareto.png", folder / f"{stem}-report.html"
