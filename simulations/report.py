"""Presenting results: rich tables, the JSON object, PNG plots (matplotlib, Agg backend)."""

from __future__ import annotations

import math
from pathlib import Path

from rich.console import Console
from rich.table import Table

from simulations.metrics import Recorder, Summary
from simulations.run import Results
from simulations.scaling import ScalePoint

__all__ = ["as_json", "print_tables", "plot", "liar_shares", "claims"]


def liar_shares(rec: Recorder, parts: int = 4) -> list[float]:
    """Share of auctions won by a lying peer (among those won by someone else's device), per part of the run."""
    wins = rec.liar_wins
    if not wins:
        return []
    size = math.ceil(len(wins) / parts)
    chunks = [wins[i : i + size] for i in range(0, len(wins), size)]
    return [round(sum(liar for _, liar in c) / len(c), 3) for c in chunks]


def _ratio(a: float, b: float) -> float | None:
    if b <= 0 or not math.isfinite(a) or not math.isfinite(b):
        return None
    return round(a / b, 2)


def claims(results: Results) -> dict[str, dict[str, float | None]]:
    """The seed's claims, measured: latency speed-up over local-only and cost efficiency over cloud-only."""
    out: dict[str, dict[str, float | None]] = {}
    for workload, row in results.table.items():
        local, cloud = row.get("local-only"), row.get("cloud-only")
        entry: dict[str, float | None] = {}
        for name in ("meshagent-latency", "meshagent-cost", "meshagent-balanced"):
            s = row.get(name)
            if s is None or local is None or cloud is None:
                continue
            entry[f"{name}.p50_speedup_vs_local"] = _ratio(local.latency_p50_s, s.latency_p50_s)
            entry[f"{name}.p50_speedup_vs_cloud"] = _ratio(cloud.latency_p50_s, s.latency_p50_s)
            entry[f"{name}.cost_efficiency_vs_cloud"] = _ratio(s.cost_efficiency, cloud.cost_efficiency)
            entry[f"{name}.cost_efficiency_vs_local"] = _ratio(s.cost_efficiency, local.cost_efficiency)
        out[workload] = entry
    return out


def as_json(results: Results) -> dict[str, object]:
    obj: dict[str, object] = {}
    for workload, row in results.table.items():  # cost_efficiency is inf only if nothing cost anything
        obj[workload] = {name: s.as_json() for name, s in row.items()}
    obj["scaling"] = [p.as_json() for p in results.scaling]
    obj["reputation"] = {
        label: {**s.as_json(), "liar_win_share_by_quarter": liar_shares(rec), "liar_wins": sum(l for _, l in rec.liar_wins)}
        for label, (s, rec) in results.reputation.items()
    }
    obj["claims"] = claims(results)
    sc = results.scenario
    obj["meta"] = {
        "mode": results.mode,
        "seed": sc.seed,
        "sites": sc.layout.sites,
        "clouds": sc.layout.clouds,
        "devices": sc.layout.sites * 5 + sc.layout.clouds,
        "liar_share": sc.layout.liar_share,
        "tasks_per_workload": sc.tasks,
        "wall_s": round(results.wall_s, 2),
    }
    return obj


def _fmt(x: float, digits: int = 1) -> str:
    if not math.isfinite(x):
        return "inf"
    return f"{x:,.{digits}f}"


def print_tables(results: Results, console: Console | None = None) -> None:
    console = console or Console()
    for workload, row in results.table.items():
        t = Table(title=f"{workload} ({results.mode}, {results.scenario.tasks} tasks)")
        for col in ("policy", "p50 s", "p95 s", "cost $", "tokens/$", "privacy viol.", "battery Wh",
                    "migrations", "handoff msgs", "msgs/decision", "faults", "degraded"):
            t.add_column(col, justify="left" if col == "policy" else "right")
        for name, s in row.items():
            t.add_row(
                name, _fmt(s.latency_p50_s), _fmt(s.latency_p95_s), f"{s.cost:.4f}", _fmt(s.cost_efficiency, 0),
                str(s.privacy_violations), _fmt(s.battery_wh, 2), str(s.migrations), str(s.handoff_messages),
                _fmt(s.messages_per_decision, 2), str(s.faults), str(s.degraded_steps),
            )
        console.print(t)
    rep = Table(title="reputation: survey with 40 % of other people's devices overstating their speed 10x")
    for col in ("run", "p50 s", "p95 s", "liar wins", "liar share of wins, by quarter of the run"):
        rep.add_column(col)
    for label, (s, rec) in results.reputation.items():
        rep.add_row(label, _fmt(s.latency_p50_s), _fmt(s.latency_p95_s), str(sum(l for _, l in rec.liar_wins)),
                    " ".join(f"{x:.2f}" for x in liar_shares(rec)))
    console.print(rep)
    sc = Table(title="scaling: one auction per decision, bounded fan-out")
    for col in ("nodes", "msgs/decision", "max msgs", "invited", "distinct invited", "busiest share", "decisions",
                "sim s", "sim ms/decision", "build s"):
        sc.add_column(col, justify="right")
    for p in results.scaling:
        j = p.as_json()
        sc.add_row(*(str(j[k]) for k in ("nodes", "messages_per_decision", "max_messages", "invited_mean",
                                          "distinct_invited", "busiest_share", "decisions", "sim_seconds",
                                          "sim_ms_per_decision", "build_seconds")))
    console.print(sc)
    console.print(f"simulation wall time: {results.wall_s:.1f} s")


def plot(results: Results, out: Path) -> list[Path]:
    """latency.png, cost.png, scaling.png and reputation.png in ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    paths = []
    workloads = list(results.table)
    names = list(next(iter(results.table.values())))

    def bars(metric: str, ylabel: str, fname: str, log: bool) -> Path:
        fig, axes = plt.subplots(1, len(workloads), figsize=(5 * len(workloads), 4.5), squeeze=False)
        for ax, wl in zip(axes[0], workloads):
            row: dict[str, Summary] = results.table[wl]
            xs = range(len(names))
            leaks = [row[n].privacy_violations > 0 for n in names]
            values = [row[n].latency_p50_s if metric == "latency" else row[n].cost for n in names]
            base = "tab:blue" if metric == "latency" else "tab:green"
            bars_ = ax.bar(xs, values, color=[("lightgray" if leak else base) for leak in leaks],
                           label="p50" if metric == "latency" else "cost")
            for bar, leak in zip(bars_, leaks):
                if leak:
                    bar.set_hatch("//")
                    bar.set_edgecolor("darkred")
            if metric == "latency":
                ax.scatter(xs, [row[n].latency_p95_s for n in names], color="tab:red", marker="_", s=200,
                           label="p95", zorder=3)
            ax.bar([0], [0], color="lightgray", hatch="//", edgecolor="darkred", label="breaks privacy")
            ax.legend(fontsize=7)
            ax.set_xticks(list(xs), names, rotation=45, ha="right", fontsize=8)
            ax.set_title(wl)
            ax.set_ylabel(ylabel)
            if log:
                ax.set_yscale("log")
        fig.tight_layout()
        path = out / fname
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path

    paths.append(bars("latency", "task latency, s (log)", "latency.png", True))
    paths.append(bars("cost", "total cost, USD", "cost.png", False))

    pts: list[ScalePoint] = results.scaling
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    nodes = [p.nodes for p in pts]
    a1.plot(nodes, [p.messages_per_decision for p in pts], "o-", label="mean")
    a1.plot(nodes, [p.max_messages for p in pts], "s--", label="max")
    a1.set_xscale("log")
    a1.set_xlabel("nodes in the mesh")
    a1.set_ylabel("messages per placement decision")
    a1.set_ylim(bottom=0)
    a1.legend()
    a1.set_title("auction messages per decision (bounded fan-out)")
    a2.plot(nodes, [1000 * p.sim_seconds / max(p.decisions, 1) for p in pts], "o-")
    a2.set_xscale("log")
    a2.set_yscale("log")
    a2.set_xlabel("nodes in the mesh")
    a2.set_ylabel("simulator CPU per decision, ms")
    a2.set_title("home CPU: select_bidders scans the peer table")
    fig.tight_layout()
    paths.append(out / "scaling.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, (_, rec) in results.reputation.items():
        shares = liar_shares(rec)
        ax.plot(range(1, len(shares) + 1), shares, "o-", label=label)
    ax.set_xlabel("quarter of the run")
    ax.set_ylabel("share of remote wins by lying peers")
    ax.set_ylim(0, 1.05)
    ax.legend()
    fig.tight_layout()
    paths.append(out / "reputation.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths
