"""The pool in a browser: server-rendered pages (Jinja2) beside the JSON API, no JavaScript.

``/`` the adapters as a table (filter by kind, method and text, sort by any column, pages of
``per`` rows) with the pool's totals; ``/adapters/ID`` one adapter: its model card (the text
``pool export`` writes), metrics, files with sha256 and download links, lineage and how to load
it; ``/lineage`` the parent -> child graph drawn by Graphviz as SVG (with the same edges as a list
for screen readers). Everything comes from the catalog view: a page never reads the weights.
"""

from __future__ import annotations

import math
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

from fastapi import FastAPI, HTTPException
from fastapi.responses import HTMLResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from ..peft_files import ADAPTER_CONFIG, ADAPTER_WEIGHTS, ADAPTERPOOL_META, TASK_EMBEDDING
from ..pool.catalog import AdapterRecord
from ..pool.checks import AdapterRejected, check_id
from ..pool.maintenance import model_card
from ..task_kinds import TASK_KINDS
from .catalog_view import Snapshot

TEMPLATES = Path(__file__).with_name("templates")
PER_PAGE = (25, 50, 100, 200)
# (key, header) of the table; every column sorts (the key names the sort).
COLUMNS = (
    ("id", "Adapter"), ("task", "Task"), ("kind", "Kind"), ("labels", "Labels"),
    ("method", "PEFT method"), ("base", "Base model"), ("validation", "Validation score"),
    ("size", "Size"), ("created", "Created"), ("parent", "Parent"),
)
GRAPH_MAX_NODES = 2000  # beyond this the lineage page lists the edges without drawing them


def _environment() -> Environment:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["size"] = human_size
    env.filters["score"] = lambda v: "-" if v is None else (
        f"{v:.3f}" if isinstance(v, float) else str(v))
    env.filters["duration"] = human_duration
    return env


def human_size(nbytes: int | float | None) -> str:
    if nbytes is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(nbytes) < 1024 or unit == "GiB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return str(nbytes)


def human_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if abs(seconds) < 120:
        return f"{seconds:.1f} s"
    if abs(seconds) < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def primary_validation(record: AdapterRecord) -> tuple[str, float | None]:
    """The kind's first threshold metric (accuracy, rouge_l, ...) and its validation value."""
    kind = TASK_KINDS.get(record.task_kind)
    metric = kind.threshold_metrics[0] if kind else "accuracy"
    value = ((record.metrics or {}).get("validation") or {}).get(metric)
    return metric, value if isinstance(value, (int, float)) else None


def sort_value(record: AdapterRecord, column: str):
    return {
        "id": record.id, "task": record.task_name.lower(), "kind": record.task_kind,
        "labels": len(record.label_names), "method": record.peft_type,
        "base": record.base_model, "validation": primary_validation(record)[1],
        "size": record.size_bytes, "created": record.created_at,
        "parent": record.parent_id or "",
    }[column]


def sorted_records(records: list[AdapterRecord], column: str,
                   descending: bool) -> list[AdapterRecord]:
    """Sorted by ``column`` (ties by id); records without a value (no validation score) last
    in either order."""
    present = [r for r in records if sort_value(r, column) is not None]
    missing = sorted((r for r in records if sort_value(r, column) is None), key=lambda r: r.id)
    present.sort(key=lambda r: (sort_value(r, column), r.id), reverse=descending)
    return present + missing


@dataclass
class Reuse:
    """Compute saved by transfers: each adapter warm-started from a parent (a passing transfer:
    only those are contributed) against a standard LoRA of the same task and method in the pool,
    where one is recorded with its time (and energy)."""

    transfers: int = 0
    compared: int = 0
    seconds_saved: float = 0.0
    kwh_saved: float = 0.0
    kwh_compared: int = 0


def reuse_saved(records: list[AdapterRecord]) -> Reuse:
    standard: dict[tuple[str, str], list[AdapterRecord]] = {}
    for r in records:
        if not r.parent_id and r.train_seconds is not None:
            standard.setdefault((r.task_name, r.peft_type), []).append(r)
    reuse = Reuse()
    for r in records:
        if not r.parent_id:
            continue
        reuse.transfers += 1
        baselines = standard.get((r.task_name, r.peft_type))
        if not baselines or r.train_seconds is None:
            continue
        reuse.compared += 1
        reuse.seconds_saved += (sum(b.train_seconds for b in baselines) / len(baselines)
                                - r.train_seconds)
        kwh = [b.energy_kwh for b in baselines if b.energy_kwh is not None]
        if kwh and r.energy_kwh is not None:
            reuse.kwh_compared += 1
            reuse.kwh_saved += sum(kwh) / len(kwh) - r.energy_kwh
    return reuse


def lineage_svg(snapshot: Snapshot, *, focus: str | None = None) -> str | None:
    """The parent -> child graph (only adapters that have a parent or a child), laid out by
    Graphviz's ``dot``; None when the pool has no lineage or ``dot`` is not installed.

    ``focus``: only that adapter's ancestors and descendants, the adapter itself highlighted."""
    import graphviz

    if focus is not None:
        nodes = {focus, *snapshot.ancestors(focus), *(i for _, i in snapshot.descendants(focus))}
    else:
        nodes = set()
        for r in snapshot.records:
            if r.parent_id:
                nodes |= {r.id, r.parent_id}
    if not nodes or len(nodes) > GRAPH_MAX_NODES:
        return None
    title = f"Lineage of {focus}" if focus else "Lineage of the pool"
    graph = graphviz.Digraph("lineage", format="svg", graph_attr={
        "rankdir": "LR", "tooltip": title, "label": "", "bgcolor": "transparent"},
        node_attr={"shape": "box", "style": "rounded,filled", "fillcolor": "#eef3fb",
                   "color": "#2b5797", "fontname": "DejaVu Sans", "fontsize": "11"},
        edge_attr={"color": "#555555"})
    for node in sorted(nodes):
        record = snapshot.by_id.get(node)
        label = (f"{node}\n{record.task_name} ({record.peft_type})" if record
                 else f"{node}\n(removed)")
        attrs = {"URL": f"/adapters/{node}", "tooltip": label, "target": "_top"}
        if node == focus:
            attrs.update(fillcolor="#ffe8a8", penwidth="2")
        graph.node(node, label, **attrs)
    for node in sorted(nodes):
        record = snapshot.by_id.get(node)
        if record and record.parent_id in nodes:
            graph.edge(record.parent_id, node)
    try:
        svg = graph.pipe(format="svg", encoding="utf-8")
    except (graphviz.ExecutableNotFound, graphviz.CalledProcessError, subprocess.SubprocessError):
        return None
    # inline, accessible: the XML prologue goes, the <svg> gets role, title and description
    svg = svg[svg.index("<svg"):]
    head_end = svg.index(">") + 1
    title_id = f"lineage-title-{focus or 'pool'}"
    head = svg[:head_end - 1] + (f' role="img" aria-labelledby="{title_id}" focusable="false"'
                                 ' class="lineage-graph">')
    body = svg[head_end:]
    from html import escape

    return (head + f'<title id="{title_id}">{escape(title)}: {len(nodes)} adapters, arrows from '
            "parent to child</title>" + body)


def _page_url(params: dict, **changes) -> str:
    merged = {k: v for k, v in {**params, **changes}.items() if v not in (None, "")}
    return "/?" + urlencode(merged) if merged else "/"


def add_pages(app: FastAPI) -> None:
    env = _environment()
    view = app.state.view
    pool = app.state.pool
    drawn: dict[tuple[str, str | None], str | None] = {}  # (catalog etag, focus) -> svg

    def graph(snapshot: Snapshot, focus: str | None = None) -> str | None:
        key = (snapshot.etag, focus)
        if key not in drawn:
            if len(drawn) > 256:
                drawn.clear()
            drawn[key] = lineage_svg(snapshot, focus=focus)
        return drawn[key]

    def render(name: str, status: int = 200, **context) -> HTMLResponse:
        html = env.get_template(name).render(base_model=pool.base_model, **context)
        return HTMLResponse(html, status, headers={"Cache-Control": "no-cache"})

    def totals(snapshot: Snapshot) -> dict:
        records = snapshot.records
        return {
            "adapters": len(records), "tasks": len({r.task_name for r in records}),
            "kinds": sorted({r.task_kind for r in records}),
            "methods": sorted({r.peft_type for r in records}),
            "bytes": sum(r.size_bytes for r in records),
            "train_seconds": sum(r.train_seconds or 0 for r in records),
            "reuse": reuse_saved(records),
        }

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index(q: str = "", kind: str = "", method: str = "", sort: str = "created",
              order: str = "desc", page: int = 1, per: int = PER_PAGE[0]) -> HTMLResponse:
        snapshot = view.current()
        if sort not in dict(COLUMNS):
            sort = "created"
        order = "asc" if order == "asc" else "desc"
        per = per if per in PER_PAGE else PER_PAGE[0]
        records = snapshot.records
        if kind:
            records = [r for r in records if r.task_kind == kind]
        if method:
            records = [r for r in records if r.peft_type == method]
        if q.strip():
            needle = q.strip().lower()
            records = [r for r in records if needle in " ".join(
                [r.id, r.task_name, r.description or "", r.parent_id or "", *r.label_names]
            ).lower()]
        records = sorted_records(records, sort, order == "desc")
        pages = max(1, math.ceil(len(records) / per))
        page = min(max(page, 1), pages)
        shown = records[(page - 1) * per: page * per]
        params = {"q": q, "kind": kind, "method": method, "sort": sort, "order": order,
                  "per": per if per != PER_PAGE[0] else None}
        headers = []
        for key, label in COLUMNS:
            current = key == sort
            next_order = ("asc" if order == "desc" else "desc") if current else (
                "desc" if key in ("validation", "size", "created", "labels") else "asc")
            headers.append({"key": key, "label": label, "current": current,
                            "aria_sort": ("ascending" if order == "asc" else "descending")
                            if current else None,
                            "url": _page_url(params, sort=key, order=next_order, page=None)})
        rows = [{"record": r, "metric": primary_validation(r)} for r in shown]
        return render(
            "index.html", snapshot=snapshot, totals=totals(snapshot), rows=rows,
            headers=headers, q=q, kind=kind, method=method, sort=sort, order=order, per=per,
            per_choices=PER_PAGE, page=page, pages=pages, matched=len(records),
            first=(page - 1) * per + 1 if records else 0, last=(page - 1) * per + len(shown),
            prev_url=_page_url(params, page=page - 1) if page > 1 else None,
            next_url=_page_url(params, page=page + 1) if page < pages else None,
            kinds=sorted({r.task_kind for r in snapshot.records} | set(TASK_KINDS)),
            methods=sorted({r.peft_type for r in snapshot.records}),
        )

    @app.get("/adapters/{adapter_id}", response_class=HTMLResponse, include_in_schema=False)
    def adapter_page(adapter_id: str) -> HTMLResponse:
        snapshot = view.current()
        try:
            check_id(adapter_id)
        except AdapterRejected:
            record = None
        else:
            record = snapshot.by_id.get(adapter_id)
        if record is None:
            return render("not_found.html", 404, adapter_id=adapter_id)
        summary = snapshot.summaries.get(record.id)
        files = [{"name": ADAPTER_WEIGHTS, "sha256": record.sha256,
                  "what": "adapter weights (safetensors)"},
                 {"name": ADAPTER_CONFIG, "sha256": None, "what": "PEFT config"},
                 {"name": ADAPTERPOOL_META, "sha256": None,
                  "what": "adapterpool metadata (task, metrics, cost)"}]
        if summary:
            files.append({"name": TASK_EMBEDDING, "sha256": summary["sha256"],
                          "what": f"task summary ({summary['source']}, {summary['dims']} dims)"})
        kind = TASK_KINDS.get(record.task_kind, TASK_KINDS["single"])
        head = f", num_labels={len(record.label_names)}" if kind.labelled else ""
        snippet = "\n".join([
            "from peft import PeftModel",
            f"from transformers import {kind.auto_class}",
            f'base = {kind.auto_class}.from_pretrained("{record.base_model}"{head})',
            "# the folder `adapterpool pool export POOL_URL "
            f"{record.id} ./{record.id}` writes",
            f'model = PeftModel.from_pretrained(base, "./{record.id}")',
        ])
        metrics = record.metrics or {}
        splits = [s for s in ("validation", "test") if isinstance(metrics.get(s), dict)]
        names = sorted({m for s in splits for m in metrics[s]})
        svg = graph(snapshot, record.id)
        return render(
            "adapter.html", record=record, files=files, snippet=snippet,
            card=model_card(record, record.peft_config), splits=splits, metric_names=names,
            metrics=metrics, ancestors=snapshot.ancestors(record.id),
            descendants=snapshot.descendants(record.id), known=snapshot.by_id,
            graph=Markup(svg) if svg else None,
        )

    @app.get("/lineage", response_class=HTMLResponse, include_in_schema=False)
    def lineage_page() -> HTMLResponse:
        snapshot = view.current()
        edges = sorted((r.parent_id, r.id) for r in snapshot.records if r.parent_id)
        svg = graph(snapshot)
        return render("lineage.html", edges=edges, known=snapshot.by_id,
                      graph=Markup(svg) if svg else None, totals=totals(snapshot),
                      dot_missing=shutil.which("dot") is None)

    @app.get("/lineage.svg", include_in_schema=False)
    def lineage_file() -> Response:
        svg = graph(view.current())
        if svg is None:
            raise HTTPException(404, "no lineage to draw (or Graphviz's dot is not installed)")
        return Response(svg, media_type="image/svg+xml")
