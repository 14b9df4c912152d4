"""Reports: a self-contained HTML file (plotly) and a PNG per figure (matplotlib), from a ledger or a stress run.

Why both renderers: the HTML is for looking (zoom, hover), the PNGs are for a README or a pull request,
where no script runs; plotly's own static export needs a browser (kaleido drives Chromium), which a server
or a CI runner rarely has. So each figure is described once, as data (``Figure`` of ``Panel`` of
``Trace``), and drawn twice from that one description: the two can never show different numbers.

The HTML embeds plotly.js and every figure's JSON (``<script type="application/json" class="plotly-figure">``),
so it opens offline, and a test can read the figures back and check that each is valid and has data.

What a ledger report shows (``ledger_report``): the run's summary (``bot.backtest.summarize``, Sharpe with a
block-bootstrap interval), equity and drawdown, weights over time, the target's risk contributions and the
holdings' RC dispersion against the 5% band, turnover and costs by kind, forecast against realised
portfolio volatility, and the run's events on the time axis. A stress report (``stress_report``) shows the
table per scenario and book and the figures that compare them; ``sweep_report`` the same for a grid.
A figure with nothing to show is left out and listed with the reason, never drawn empty.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np

HOUR = timedelta(hours=1)
RC_FLOOR = 1e-4
"""RC dispersions are drawn on a log axis from here: below it the balance is exact to the eye (the optimizer's
own is ~1e-16), and an axis down to 1e-16 would squeeze the 5% band the figure is about."""
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")  # fmt: skip


# -- figures as data ------------------------------------------------------------------------------------


@dataclass
class Trace:
    """One series. ``kind``: line, step, area (stacked, filled), bar (stacked when the panel says so),
    markers, errorbar (markers with ``error_low``/``error_high`` as absolute bounds)."""

    name: str
    x: Sequence[Any]
    y: Sequence[float]
    kind: Literal["line", "step", "area", "bar", "markers", "errorbar"] = "line"
    color: str | None = None
    error_low: Sequence[float] | None = None
    error_high: Sequence[float] | None = None
    text: Sequence[str] | None = None
    width: float = 1.5


@dataclass
class Panel:
    traces: list[Trace]
    ylabel: str = ""
    percent: bool = False
    log_y: bool = False
    stacked: bool = False
    hlines: list[tuple[float, str]] = field(default_factory=list)
    band: tuple[float, float, str] | None = None  # a shaded horizontal band (the 5% RC band)
    categories: Sequence[str] | None = None  # x tick labels at 0, 1, 2, … (categorical panels)
    ycategories: Sequence[str] | None = None  # y tick labels at 0, 1, 2, … (the events' lanes)
    height: float = 1.0


@dataclass
class Figure:
    key: str  # file name of the PNG, id of the HTML element
    title: str
    panels: list[Panel]
    caption: str = ""
    xlabel: str = ""

    def has_data(self) -> bool:
        """Every panel has a trace with at least one finite point."""
        return all(any(_finite_count(t.y) > 0 for t in p.traces) for p in self.panels) and bool(self.panels)


def _finite_count(y: Sequence[float]) -> int:
    a = np.asarray(list(y), dtype=float)
    return int(np.isfinite(a).sum())


def _color(i: int, t: Trace) -> str:
    return t.color or PALETTE[i % len(PALETTE)]


# -- plotly -----------------------------------------------------------------------------------------------


def to_plotly(fig: Figure) -> Any:
    """The figure as a ``plotly.graph_objects.Figure`` (panels stacked, sharing the x axis)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    heights = [p.height for p in fig.panels]
    total = sum(heights)
    pf = make_subplots(rows=len(fig.panels), cols=1, shared_xaxes=True, vertical_spacing=0.06,
                       row_heights=[h / total for h in heights])  # fmt: skip
    for r, p in enumerate(fig.panels, start=1):
        for i, t in enumerate(p.traces):
            c = _color(i, t)
            x, y = list(t.x), [None if not np.isfinite(v) else float(v) for v in np.asarray(list(t.y), float)]
            common: dict[str, Any] = {"name": t.name, "legendgroup": t.name, "showlegend": True}
            if t.kind == "bar":
                pf.add_trace(go.Bar(x=x, y=y, marker_color=c, **common), row=r, col=1)
            elif t.kind == "area":
                pf.add_trace(go.Scatter(x=x, y=y, mode="lines", stackgroup=f"s{r}", line={"width": 0.5, "color": c},
                                        **common), row=r, col=1)  # fmt: skip
            elif t.kind in ("markers", "errorbar"):
                err = None
                if t.kind == "errorbar" and t.error_low is not None and t.error_high is not None:
                    lo = np.asarray(list(t.error_low), float)
                    hi = np.asarray(list(t.error_high), float)
                    yy = np.asarray(list(t.y), float)
                    err = {"type": "data", "symmetric": False, "array": np.nan_to_num(hi - yy).tolist(),
                           "arrayminus": np.nan_to_num(yy - lo).tolist(), "color": c}  # fmt: skip
                pf.add_trace(go.Scatter(x=x, y=y, mode="markers", error_y=err, text=list(t.text) if t.text else None,
                                        marker={"color": c, "size": 9 if t.kind == "errorbar" else 5,
                                                "symbol": "diamond" if t.kind == "errorbar" else "circle",
                                                "opacity": 1.0 if t.kind == "errorbar" else 0.55},
                                        **common), row=r, col=1)  # fmt: skip
            else:
                shape = "hv" if t.kind == "step" else "linear"
                pf.add_trace(go.Scatter(x=x, y=y, mode="lines", line={"color": c, "width": t.width, "shape": shape},
                                        **common), row=r, col=1)  # fmt: skip
        for y0, label in p.hlines:
            pf.add_hline(y=y0, line_dash="dash", line_color="#444", annotation_text=label, row=r, col=1)
        if p.band is not None:
            pf.add_hrect(y0=p.band[0], y1=p.band[1], fillcolor="#2ca02c", opacity=0.12, line_width=0,
                         annotation_text=p.band[2], row=r, col=1)  # fmt: skip
        pf.update_yaxes(title_text=p.ylabel, tickformat=".3~%" if p.percent else None,
                        type="log" if p.log_y else None, row=r, col=1)  # fmt: skip
        if p.categories is not None:
            pf.update_xaxes(tickvals=list(range(len(p.categories))), ticktext=list(p.categories), row=r, col=1)
        if p.ycategories is not None:
            pf.update_yaxes(tickvals=list(range(len(p.ycategories))), ticktext=list(p.ycategories), row=r, col=1,
                            range=[-0.5, len(p.ycategories) - 0.5])  # fmt: skip
        if p.stacked:
            pf.update_layout(barmode="stack")
    pf.update_xaxes(title_text=fig.xlabel, row=len(fig.panels), col=1)
    pf.update_layout(title=fig.title, template="plotly_white", height=int(330 * total + 120),
                     legend={"orientation": "v"}, margin={"l": 70, "r": 30, "t": 60, "b": 50})  # fmt: skip
    return pf


# -- matplotlib ---------------------------------------------------------------------------------------------


def to_png(fig: Figure, path: Path, dpi: int = 110) -> Path:
    """The same figure drawn by matplotlib (Agg: no display needed) into ``path``."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    from matplotlib.ticker import PercentFormatter

    heights = [p.height for p in fig.panels]
    mf, axes = plt.subplots(len(fig.panels), 1, sharex=True, figsize=(11, 2.9 * sum(heights) + 0.9),
                            gridspec_kw={"height_ratios": heights}, squeeze=False)  # fmt: skip
    for ax, p in zip(axes[:, 0], fig.panels):
        bottoms: dict[Any, float] = {}
        area_x: list[Any] | None = None
        area_ys: list[np.ndarray] = []
        area_labels: list[str] = []
        area_colors: list[str] = []
        n_bars = sum(1 for t in p.traces if t.kind == "bar")
        bar_i = 0
        for i, t in enumerate(p.traces):
            c = _color(i, t)
            x = list(t.x)
            y = np.asarray(list(t.y), float)
            if t.kind == "area":
                area_x = x
                area_ys.append(np.nan_to_num(y))
                area_labels.append(t.name)
                area_colors.append(c)
            elif t.kind == "bar":
                width = _bar_width(x)
                if p.stacked:
                    base = np.array([bottoms.get(k, 0.0) for k in x])
                    ax.bar(x, np.nan_to_num(y), width=width, bottom=base, color=c, label=t.name)
                    for k, v in zip(x, np.nan_to_num(y)):
                        bottoms[k] = bottoms.get(k, 0.0) + v
                else:
                    if isinstance(x[0], int | float | np.number):
                        off = (bar_i - (n_bars - 1) / 2) * width / max(n_bars, 1)
                        ax.bar(np.asarray(x, float) + off, np.nan_to_num(y), width=width / max(n_bars, 1),
                               color=c, label=t.name)  # fmt: skip
                    else:
                        ax.bar(x, np.nan_to_num(y), width=width, color=c, label=t.name, alpha=0.8)
                    bar_i += 1
            elif t.kind in ("markers", "errorbar"):
                if t.kind == "errorbar" and t.error_low is not None and t.error_high is not None:
                    lo = np.asarray(list(t.error_low), float)
                    hi = np.asarray(list(t.error_high), float)
                    yerr = np.vstack([np.nan_to_num(y - lo), np.nan_to_num(hi - y)])
                    ax.errorbar(x, y, yerr=yerr, fmt="D", color=c, label=t.name, capsize=4, markersize=6)
                else:
                    ax.scatter(x, y, s=12, color=c, alpha=0.55, label=t.name)
            else:
                style = "steps-post" if t.kind == "step" else "default"
                ax.plot(x, y, color=c, lw=t.width, label=t.name, drawstyle=style)
        if area_ys and area_x is not None:
            ax.stackplot(area_x, *area_ys, labels=area_labels, colors=area_colors, alpha=0.85)
        for y0, label in p.hlines:
            ax.axhline(y0, ls="--", color="#444", lw=1)
            ax.annotate(label, xy=(1.0, y0), xycoords=("axes fraction", "data"), ha="right", va="bottom",
                        fontsize=8, color="#444")  # fmt: skip
        if p.band is not None:
            ax.axhspan(p.band[0], p.band[1], color="#2ca02c", alpha=0.12, label=p.band[2])
        if p.log_y:
            ax.set_yscale("log")
        if p.percent:
            ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=None))  # as many decimals as the range needs
        if p.categories is not None:
            ax.set_xticks(range(len(p.categories)))
            ax.set_xticklabels(list(p.categories), rotation=20, ha="right")
        if p.ycategories is not None:
            ax.set_yticks(range(len(p.ycategories)))
            ax.set_yticklabels(list(p.ycategories))
            ax.set_ylim(-0.5, len(p.ycategories) - 0.5)
        if any(len(t.x) and isinstance(list(t.x)[0], datetime) for t in p.traces):
            loc = mdates.AutoDateLocator()
            ax.xaxis.set_major_locator(loc)
            ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(loc))
        ax.set_ylabel(p.ylabel)
        ax.grid(alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        if handles:
            ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.005, 0.5), frameon=False)
    axes[-1, 0].set_xlabel(fig.xlabel)
    mf.suptitle(fig.title, fontsize=12)
    mf.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    mf.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(mf)
    return path


def _bar_width(x: Sequence[Any]) -> Any:
    if len(x) < 2:
        return 0.8 if not isinstance(x[0], datetime) else timedelta(hours=20)
    if isinstance(x[0], datetime):
        step = min(b - a for a, b in zip(x[:-1], x[1:]))
        return step * 0.8
    return 0.8 * float(np.min(np.diff(np.asarray(x, float)))) if len(x) > 1 else 0.8


# -- the HTML page ------------------------------------------------------------------------------------------


def _table_html(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str, str]]) -> str:
    """``columns``: (key, header, format spec, or "" for str)."""
    head = "".join(f"<th>{html.escape(h)}</th>" for _, h, _ in columns)
    body = []
    for r in rows:
        cells = []
        for key, _, spec in columns:
            v = r.get(key)
            if spec and isinstance(v, int | float) and not isinstance(v, bool):
                s = format(v, spec) if math.isfinite(float(v)) else "–"
            else:
                s = "–" if v is None else str(v)
            cells.append(f"<td>{html.escape(s)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def write_report(
    path: Path,
    title: str,
    figures: Sequence[Figure],
    *,
    intro: str = "",
    tables: Sequence[tuple[str, str]] = (),
    png_dir: Path | None = None,
) -> dict[str, Any]:
    """Write the HTML page (plotly.js inlined) and, unless ``png_dir`` is None, a PNG per figure. Returns what
    was written and what was left out (figures without data)."""
    from plotly.offline import get_plotlyjs

    path.parent.mkdir(parents=True, exist_ok=True)
    kept = [f for f in figures if f.has_data()]
    skipped = [f.key for f in figures if not f.has_data()]
    parts = [f"<h1>{html.escape(title)}</h1>"]
    if intro:
        parts.append(f"<p>{intro}</p>")
    for caption, table in tables:
        parts.append(f"<h2>{html.escape(caption)}</h2>{table}")
    pngs: list[Path] = []
    for f in kept:
        spec = to_plotly(f).to_json()
        safe = spec.replace("</", "<\\/")
        parts.append(f'<h2>{html.escape(f.title)}</h2>')
        if f.caption:
            parts.append(f'<p class="caption">{html.escape(f.caption)}</p>')
        parts.append(f'<div class="fig" id="fig-{f.key}"></div>')
        parts.append(f'<script type="application/json" class="plotly-figure" data-target="fig-{f.key}">{safe}</script>')
        if png_dir is not None:
            pngs.append(to_png(f, png_dir / f"{f.key}.png"))
    if skipped:
        parts.append("<p class='caption'>left out, nothing to show: " + html.escape(", ".join(skipped)) + "</p>")
    loader = (
        "document.querySelectorAll('script.plotly-figure').forEach(function(s){var f=JSON.parse(s.textContent);"
        "Plotly.newPlot(document.getElementById(s.dataset.target),f.data,f.layout,{responsive:true});});"
    )
    style = ("body{font-family:system-ui,sans-serif;margin:24px;max-width:1300px}table{border-collapse:collapse;"
             "font-size:12px;margin-bottom:18px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}"
             "th{background:#f3f3f3}td:first-child,td:nth-child(2){text-align:left}.caption{color:#555;font-size:13px}"
             ".fig{margin-bottom:24px}")  # fmt: skip
    doc = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
           f"<style>{style}</style><script type='text/javascript'>{get_plotlyjs()}</script></head><body>"
           + "\n".join(parts) + f"<script type='text/javascript'>{loader}</script></body></html>")  # fmt: skip
    path.write_text(doc, encoding="utf-8")
    return {"html": path, "pngs": pngs, "figures": [f.key for f in kept], "left_out": skipped}


def read_figures(path: Path) -> list[dict[str, Any]]:
    """The figures' JSON embedded in a report written by ``write_report`` (for tests and tools)."""
    import re

    text = Path(path).read_text(encoding="utf-8")
    blobs = re.findall(r'<script type="application/json" class="plotly-figure" data-target="[^"]+">(.*?)</script>',
                       text, flags=re.S)  # fmt: skip
    return [json.loads(b.replace("<\\/", "</")) for b in blobs]


# -- a ledger's report --------------------------------------------------------------------------------------


def _daily(times: Sequence[datetime], values: Sequence[float]) -> tuple[list[datetime], np.ndarray]:
    by: dict[datetime, float] = {}
    for t, v in zip(times, values):
        d = t.replace(hour=0, minute=0, second=0, microsecond=0)
        by[d] = by.get(d, 0.0) + float(v)
    days = sorted(by)
    # each bar drawn over its own day (centred at noon), not straddling two
    return [d + timedelta(hours=12) for d in days], np.array([by[d] for d in days])


def ledger_figures(ledger_path: str | Path, *, risk_free_annual: float | None = None,
                   report_cfg: Any = None) -> tuple[list[Figure], dict[str, Any]]:  # fmt: skip
    """The figures of one ledger and its summary (with a bootstrap interval of its Sharpe)."""
    from bot.backtest import summarize
    from bot.ledger import Ledger, utc
    from bot.stress import RC_BAND, sharpe_ci

    p = Path(ledger_path)
    if not p.exists():
        raise FileNotFoundError(f"ledger {p} does not exist")
    ledger = Ledger(str(p))
    try:
        s = summarize(ledger, risk_free_annual, report=report_cfg)
        snaps = [x for x in ledger.snapshots() if x.time.minute == 0 and x.time.second == 0]
        cycles = ledger.cycles()
        targets = ledger.all_targets()
        fills = ledger.fills()
        orders = ledger.all_orders()
        transfers = ledger.transfers()
        events = ledger.events()
    finally:
        ledger.close()
    times = [utc(x.time) for x in snaps]
    nav = np.array([x.nav for x in snaps], float)
    assets = list(snaps[-1].prices) if snaps else []
    ppy = 8760.0 if len(times) < 3 else 8760.0 * 3600.0 / float(np.median(np.diff([t.timestamp() for t in times])))
    lo, hi = sharpe_ci(np.asarray(s.equity, float), float(s.hours), s.risk_free_annual, ppy)
    info = {"summary": s, "sharpe_ci": (lo, hi), "assets": assets, "cycles": len(cycles)}
    figs: list[Figure] = []
    # 1. equity and drawdown, with the events on the same axis
    dd = nav / np.maximum.accumulate(nav) - 1.0
    ev_t = [utc(e.time) for e in events]
    stamps = [t.timestamp() for t in times]
    ev_nav = np.interp([t.timestamp() for t in ev_t], stamps, nav) if ev_t and len(times) else []
    eq_traces = [Trace("NAV", times, nav)]
    if len(ev_t):
        eq_traces.append(Trace("risk events", ev_t, ev_nav, kind="markers", color="#d62728",
                               text=[f"{e.kind}: {e.message[:120]}" for e in events]))  # fmt: skip
    figs.append(Figure("equity", "Equity and drawdown", [
        Panel(eq_traces, ylabel="NAV", height=1.4),
        Panel([Trace("drawdown", times, dd, kind="line", color="#d62728")], ylabel="drawdown", percent=True),
    ], caption=f"NAV at each closing snapshot; drawdown from the running peak (max {s.max_drawdown:.2%})."))
    # 2. weights over time
    w_traces = []
    for i, a in enumerate(assets):
        w = np.array([x.positions.get(a, 0.0) * x.prices.get(a, 0.0) / x.nav if x.nav > 0 else 0.0 for x in snaps])
        w_traces.append(Trace(a, times, w, kind="area", color=PALETTE[i % len(PALETTE)]))
    cash = np.array([(x.cash + (x.transit or 0.0)) / x.nav if x.nav > 0 else 0.0 for x in snaps])
    w_traces.append(Trace("cash (venues + in transit)", times, cash, kind="area", color="#cccccc"))
    figs.append(Figure("weights", "Weights over time", [Panel(w_traces, ylabel="share of NAV", percent=True)],
                       caption="Holdings as shares of NAV at each closing snapshot (stacked)."))
    # 3. risk contributions: the stored target's shares, and the holdings' dispersion against the band
    cyc_time = {c.id: utc(c.scheduled_for) for c in cycles}
    by_asset: dict[str, list[tuple[datetime, float]]] = {}
    for tr in targets:
        t = cyc_time.get(tr.cycle_id)
        if t is not None:
            by_asset.setdefault(tr.asset, []).append((t, tr.risk_contribution))
    rc_traces = [Trace(a, [t for t, _ in v], [r for _, r in v], color=PALETTE[assets.index(a) % len(PALETTE)]
                       if a in assets else None) for a, v in by_asset.items()]  # fmt: skip
    ct = [utc(c.scheduled_for) for c in cycles]

    def floor(attr: str) -> list[float]:  # a log axis: exact balance (1e-16) is drawn at the floor
        return [max(float(v), RC_FLOOR) if v is not None else np.nan for v in (getattr(c, attr) for c in cycles)]

    disp = [Trace("holdings, free assets", ct, floor("rc_dispersion_held"), color="#1f77b4"),
            Trace("target traded toward", ct, floor("rc_dispersion_traded"), color="#ff7f0e", width=1.0),
            Trace("holdings, all but capped/floored/held", ct, floor("rc_dispersion_held_all"), color="#7f7f7f",
                  width=1.0)]  # fmt: skip
    figs.append(Figure("risk_contributions", "Risk contributions over time", [
        Panel(rc_traces, ylabel="target RC share of σ_p", percent=True, height=1.2),
        Panel(disp, ylabel="max |RC_i / mean − 1|", log_y=True, band=(RC_FLOOR, RC_BAND, "within 5%"),
              hlines=[(RC_BAND, "5% band")]),
    ], caption="Top: each asset's share of the target's forecast risk (the optimizer's weights under the cycle's "
               "bounds). Bottom: dispersion of risk contributions (max |RC_i/mean − 1|) of the closing holdings "
               "over the free assets (no cap, floor, venue budget or hold binds) and over all but the capped, "
               f"floored and held ones, with the design's 5% band (values under {RC_FLOOR:g} drawn at "
               "it)."))  # fmt: skip
    # 4. turnover and costs by kind, per day
    cyc_of = {o.client_id: o.cycle_id for o in orders}
    ftimes = [cyc_time.get(cyc_of.get(f.client_id), utc(f.time)) for f in fills]
    nav_day: dict[datetime, list[float]] = {}
    for t, v in zip(times, nav):
        nav_day.setdefault(t.replace(hour=0, minute=0, second=0, microsecond=0), []).append(v)
    days, traded = _daily(ftimes, [f.qty * f.price for f in fills])
    noon = timedelta(hours=12)
    turnover = [traded[i] / float(np.mean(nav_day.get(d - noon, [nav.mean()]))) for i, d in enumerate(days)]
    # a transfer at its cycle's time: the daemon stamps the row with the wall clock, a backtest's cycle is simulated
    tr_times = [cyc_time.get(t.cycle_id) or utc(t.created_at) for t in transfers]
    kinds = {
        "fees": (ftimes, [f.fee for f in fills]),
        "slippage": (ftimes, [f.slippage for f in fills]),
        "gas": (ftimes, [f.gas for f in fills]),
        "transfer fees": (tr_times, [t.fee for t in transfers]),
        "transfer gas": (tr_times, [t.gas for t in transfers]),
    }
    cost_traces = []
    for i, (k, (tt, vv)) in enumerate(kinds.items()):
        if tt and float(np.sum(vv)) > 0:
            d, v = _daily(tt, vv)  # type: ignore[arg-type]
            cost_traces.append(Trace(k, d, v, kind="bar", color=PALETTE[i]))
    figs.append(Figure("turnover_costs", "Turnover and costs by kind", [
        Panel([Trace("traded / NAV", days, turnover, kind="bar", color="#1f77b4")], ylabel="turnover per day",
              percent=True),
        Panel(cost_traces, ylabel="costs per day (quote)", stacked=True),
    ], caption=f"Value traded per day as a share of that day's mean NAV; costs per day by kind (total "
               f"{s.costs + s.transfer_fees + s.transfer_gas:,.2f})."))  # fmt: skip
    # 5. forecast against realised portfolio volatility
    fc = [(utc(c.scheduled_for), c.sigma_p_annual) for c in cycles if c.sigma_p_annual is not None]
    rets = np.diff(np.log(nav)) if len(nav) > 1 else np.zeros(0)
    vol_traces = [Trace("forecast σ_p (decided weights)", [t for t, _ in fc], [v for _, v in fc], color="#ff7f0e")]
    for win, col in ((24, "#9467bd"), (168, "#1f77b4")):
        if len(rets) > win:
            rv = np.array([rets[i - win : i].std(ddof=1) * math.sqrt(ppy) for i in range(win, len(rets) + 1)])
            vol_traces.append(Trace(f"realised, last {win} h", times[win:], rv, color=col))
    figs.append(Figure("volatility", "Forecast vs realised portfolio volatility", [
        Panel(vol_traces, ylabel="annualised volatility", percent=True)],
        caption="The cycle's forecast σ_p of the weights it decided, against the realised volatility of the NAV's "
                "hourly log returns over trailing windows (annualised)."))  # fmt: skip
    # 6. events on the time axis: the risk events, transfers and the cycles that traded
    traded_cycles = sorted({cyc_time[o.cycle_id] for o in orders if o.filled_qty > 0 and o.cycle_id in cyc_time})
    lanes: dict[str, list[datetime]] = {"rebalance (orders filled)": traded_cycles,
                                        "transfer": tr_times}  # fmt: skip
    for e in events:
        lanes.setdefault(e.kind, []).append(utc(e.time))
    lanes = {k: v for k, v in lanes.items() if v}
    names = list(lanes)
    ev_traces = [Trace(k, v, [float(i)] * len(v), kind="markers", color=PALETTE[i % len(PALETTE)])
                 for i, (k, v) in enumerate(lanes.items())]  # fmt: skip
    figs.append(Figure("events", "Events on the time axis", [Panel(ev_traces, ylabel="", ycategories=names,
                                                                   height=0.35 + 0.15 * len(names))],
                       caption="One lane per kind: the cycles that traded, the transfers sent, and each kind of risk "
                               "event the ledger holds (the fast backtest counts its events instead of storing "
                               "them)."))
    return figs, info


def summary_rows(s: Any, ci: tuple[float, float]) -> list[dict[str, Any]]:
    """The summary of a run as (metric, value) rows for the report's table."""
    rows = [
        ("hours / cycles", f"{s.hours} / {s.cycles}"),
        ("start NAV → end NAV", f"{s.start_nav:,.2f} → {s.end_nav:,.2f}"),
        ("total return", f"{s.total_return:.3%}"),
        ("annualised return / volatility", f"{s.annual_return:.2%} / {s.annual_vol:.2%}"),
        (f"Sharpe (rf {s.risk_free_annual:.2%}, {s.risk_free_source}) [95% block-bootstrap CI]",
         f"{s.sharpe:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]"),
        ("max drawdown", f"{s.max_drawdown:.2%}"),
        ("costs: fees + slippage + gas; transfers", f"{s.fees:,.2f} + {s.slippage:,.2f} + {s.gas:,.2f}; "
                                                    f"{s.transfer_fees + s.transfer_gas:,.2f}"),
        ("turnover (× NAV per year), steady state", f"{s.steady_turnover_annual:.2f}"),
        ("RC dispersion of holdings, free assets: median / p90",
         f"{s.rc_dispersion_held_median:.3f} / {s.rc_dispersion_held_p90:.3f}"),
        ("RC dispersion of holdings, all but capped/floored/held: median / p90",
         f"{s.rc_dispersion_held_all_median:.3f} / {s.rc_dispersion_held_all_p90:.3f}"),
        ("risk events", ", ".join(f"{k} {v}" for k, v in sorted(s.risk_events.items())) or "none"),
    ]  # fmt: skip
    for name, b in (s.benchmarks or {}).items():
        rows.append((f"benchmark {name} (static, gross): return / vol / Sharpe / max DD",
                     f"{b['annual_return']:.2%} / {b['annual_vol']:.2%} / {b['sharpe']:.2f} / {b['max_drawdown']:.2%}"))
    return [{"metric": m, "value": v} for m, v in rows]


def ledger_report(ledger_path: str | Path, out: Path, *, png: bool = True, risk_free_annual: float | None = None,
                  report_cfg: Any = None, title: str | None = None) -> dict[str, Any]:  # fmt: skip
    """``out`` (HTML) and ``out``'s folder ``png/`` for the ledger at ``ledger_path``."""
    figs, info = ledger_figures(ledger_path, risk_free_annual=risk_free_annual, report_cfg=report_cfg)
    table = _table_html(summary_rows(info["summary"], info["sharpe_ci"]), [("metric", "metric", ""),
                                                                           ("value", "value", "")])  # fmt: skip
    written = write_report(out, title or f"rwabot report: {Path(ledger_path).name}", figs,
                           intro=html.escape(f"ledger {ledger_path}: {info['cycles']} cycles of "
                                             f"{', '.join(info['assets'])}."),
                           tables=[("Summary", table)], png_dir=(out.parent / "png") if png else None)  # fmt: skip
    written["summary"] = info["summary"]
    written["sharpe_ci"] = info["sharpe_ci"]
    return written


# -- a stress run's report ----------------------------------------------------------------------------------

STRESS_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("scenario", "scenario", ""), ("book", "book", ""), ("seeds", "seeds", "d"),
    ("total_return_mean", "return (mean)", ".2%"), ("return_after_mark_mean", "after shock start (mean)", ".2%"),
    ("sharpe_mean", "Sharpe (mean)", ".2f"), ("sharpe_ci_low", "CI low", ".2f"), ("sharpe_ci_high", "CI high", ".2f"),
    ("sharpe_verdict", "Sharpe > 1.5", ""), ("sharpe_above_claim", "seeds > 1.5", ".0%"),
    ("sharpe_steady_mean", "Sharpe after build-up", ".2f"), ("sharpe_steady_ci_low", "CI low", ".2f"),
    ("sharpe_steady_ci_high", "CI high", ".2f"), ("sharpe_steady_verdict", "after build-up > 1.5", ""),
    ("sharpe_zero_mean", "Sharpe vs 0", ".2f"), ("max_drawdown_median", "max DD (median)", ".2%"),
    ("drawdown_after_mark_median", "DD after shock (median)", ".2%"), ("recovered", "recovered", "d"),
    ("time_to_recover_median_h", "time to recover (h, median)", ".0f"),
    ("rc_held_median", "RC held median", ".3f"), ("rc_held_p90", "RC held p90", ".3f"),
    ("rc_held_within_band", "cycles RC ≤ 5%", ".0%"), ("rc_verdict", "RC within 5%", ""),
    ("rc_all_median", "RC all median", ".3f"), ("rc_all_p90", "RC all p90", ".3f"),
    ("free_assets_mean", "free assets", ".1f"), ("costs_bps_mean", "costs (bps)", ".1f"),
)  # fmt: skip


def _strip_figure(key: str, title: str, rows: Sequence[Mapping[str, Any]], table: Sequence[Mapping[str, Any]],
                  value: str, groups: Sequence[str], books: Sequence[str], ylabel: str, *, percent: bool = False,
                  log_y: bool = False, hlines: list[tuple[float, str]] | None = None, mean_key: str | None = None,
                  ci: tuple[str, str] | None = None, caption: str = "", band: tuple[float, float, str] | None = None,
                  group_key: str = "scenario", stat: str = "mean") -> Figure:  # fmt: skip
    """Per group (x) and book (offset): each seed's value as a dot, and the table's mean with its interval."""
    traces: list[Trace] = []
    nb = max(len(books), 1)
    for j, b in enumerate(books):
        off = (j - (nb - 1) / 2) * 0.22
        xs, ys = [], []
        for r in rows:
            if r["book"] == b and r[group_key] in groups:
                xs.append(groups.index(r[group_key]) + off + 0.04 * math.sin(7.3 * float(r["seed"])))
                ys.append(max(float(r[value]), RC_FLOOR) if log_y else float(r[value]))
        traces.append(Trace(f"{b}: seeds", xs, ys, kind="markers", color=PALETTE[j]))
        if mean_key is not None:
            mx, my, lo, hi = [], [], [], []
            for t in table:
                if t["book"] == b and t[group_key] in groups:
                    mx.append(groups.index(t[group_key]) + off)
                    my.append(max(float(t[mean_key]), RC_FLOOR) if log_y else float(t[mean_key]))
                    lo.append(float(t[ci[0]]) if ci else float(t[mean_key]))
                    hi.append(float(t[ci[1]]) if ci else float(t[mean_key]))
            traces.append(Trace(f"{b}: {stat}" + (" [95% CI]" if ci else ""), mx, my, kind="errorbar",
                                color=PALETTE[j], error_low=lo, error_high=hi))  # fmt: skip
    return Figure(key, title, [Panel(traces, ylabel=ylabel, percent=percent, log_y=log_y, hlines=hlines or [],
                                     categories=list(groups), band=band, height=1.3)], caption=caption)  # fmt: skip


def stress_figures(rows: Sequence[Mapping[str, Any]], table: Sequence[Mapping[str, Any]],
                   series: Any = None) -> list[Figure]:  # fmt: skip
    """The stress run's figures: Sharpe, returns, drawdowns, RC dispersion per scenario and book, and the
    equity of one seed under every scenario."""
    from bot.stress import RC_BAND, SHARPE_CLAIM

    scen = list(dict.fromkeys(r["scenario"] for r in rows))
    books = list(dict.fromkeys(r["book"] for r in rows))
    figs = [
        _strip_figure("stress_sharpe", "Sharpe by scenario", rows, table, "sharpe", scen, books,
                      "Sharpe (vs the T-bill token's unshocked return)", hlines=[(SHARPE_CLAIM, "claim: 1.5")],
                      mean_key="sharpe_mean", ci=("sharpe_ci_low", "sharpe_ci_high"),
                      caption="Each dot one seed's run; diamonds the mean over the seeds with its 95% bootstrap "
                              "interval; the dashed line the design's claim."),
        _strip_figure("stress_sharpe_steady", "Sharpe after the build-up by scenario", rows, table, "sharpe_steady",
                      scen, books, "Sharpe from hour 24 on", hlines=[(SHARPE_CLAIM, "claim: 1.5")],
                      mean_key="sharpe_steady_mean", ci=("sharpe_steady_ci_low", "sharpe_steady_ci_high"),
                      caption="The same, measured from the end of the 24-hour build-up from cash: the book held, "
                              "without the one-off cost of buying it."),
        _strip_figure("stress_return", "Total return by scenario", rows, table, "total_return", scen, books,
                      "return over the run", percent=True, mean_key="total_return_mean", hlines=[(0.0, "")]),
        _strip_figure("stress_drawdown", "Drawdown from the shock's start by scenario", rows, table,
                      "drawdown_after_mark", scen, books, "max drawdown after the shock starts", percent=True,
                      mean_key="drawdown_after_mark_median", stat="median",
                      caption="The largest fall from a peak after the first shock's start (the same hour for the "
                              "control); diamonds the median over seeds."),
        _strip_figure("stress_rc", "Risk-contribution dispersion of the holdings by scenario", rows, table,
                      "rc_held_p90", scen, books, "p90 over cycles of max |RC_i/mean − 1|", log_y=True,
                      mean_key="rc_held_p90", band=(RC_FLOOR, RC_BAND, "within 5%"), hlines=[(RC_BAND, "5%")],
                      stat="median",
                      caption="Per run, the 90th percentile over its cycles of the free assets' RC dispersion; "
                              "diamonds the median over seeds. Under the band: 90% of that run's cycles held "
                              "risk contributions equal within 5%."),
    ]  # fmt: skip
    if series is not None and len(series):
        seed = int(series["seed"].min())
        panels = []
        for s in scen:
            traces = []
            for j, b in enumerate(books):
                part = series[(series["scenario"] == s) & (series["book"] == b) & (series["seed"] == seed)]
                if len(part):
                    nav = part["nav"].to_numpy(float)
                    traces.append(Trace(f"{b}", list(part["time"].dt.to_pydatetime()), nav / nav[0],
                                        color=PALETTE[j]))  # fmt: skip
            if traces:
                panels.append(Panel(traces, ylabel=s, height=0.6))
        if panels:
            figs.append(Figure("stress_equity", f"Equity under each scenario (seed {seed}, NAV / start)", panels,
                               caption="The same path for every book; one panel per scenario."))
    return figs


def stress_report(rows: Sequence[Mapping[str, Any]], out: Path, *, series: Any = None, png: bool = True,
                  title: str = "rwabot stress report", intro: str = "") -> dict[str, Any]:  # fmt: skip
    """The stress run's page: its table per scenario and book and its figures."""
    from bot.stress import stress_table

    table = stress_table(rows)
    figs = stress_figures(rows, table, series)
    written = write_report(out, title, figs, intro=intro, tables=[("Per scenario and book, over the seeds",
                                                                   _table_html(table, STRESS_COLUMNS))],
                           png_dir=(out.parent / "png") if png else None)  # fmt: skip
    written["table"] = table
    return written


def sweep_report(rows: Sequence[Mapping[str, Any]], out: Path, *, png: bool = True, title: str = "rwabot sweep",
                 intro: str = "") -> dict[str, Any]:  # fmt: skip
    """A grid's page: its table per scenario × book × grid point, and Sharpe and RC dispersion per grid point."""
    from bot.stress import stress_table
    from bot.sweep import param_columns

    pcols = param_columns(rows)
    labelled = []
    for r in rows:
        point = ", ".join(f"{c[6:]}={r[c]}" for c in pcols) or "(config)"
        labelled.append({**r, "point": point})
    table = stress_table(labelled, by=("scenario", "book", "point"))
    cols = (("point", "grid point", ""), *STRESS_COLUMNS)
    figs = []
    points = list(dict.fromkeys(r["point"] for r in labelled))
    books = list(dict.fromkeys(r["book"] for r in labelled))
    for s in dict.fromkeys(r["scenario"] for r in labelled):
        sub = [r for r in labelled if r["scenario"] == s]
        tsub = [t for t in table if t["scenario"] == s]
        figs.append(_strip_figure(f"sweep_sharpe_{s}", f"Sharpe per grid point: {s}", sub, tsub, "sharpe", points,
                                  books, "Sharpe", hlines=[(1.5, "claim: 1.5")], mean_key="sharpe_mean",
                                  ci=("sharpe_ci_low", "sharpe_ci_high"), group_key="point"))  # fmt: skip
        figs.append(_strip_figure(f"sweep_rc_{s}", f"RC dispersion p90 per grid point: {s}", sub, tsub,
                                  "rc_held_p90", points, books, "p90 of max |RC_i/mean − 1|", log_y=True,
                                  mean_key="rc_held_p90", hlines=[(0.05, "5%")], group_key="point",
                                  stat="median"))  # fmt: skip
    written = write_report(out, title, figs, intro=intro,
                           tables=[("Per scenario, book and grid point", _table_html(table, cols))],
                           png_dir=(out.parent / "png") if png else None)  # fmt: skip
    written["table"] = table
    return written
