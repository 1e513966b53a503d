"""Stories: Markdown with YAML front matter, resolved against a run, rendered two ways.

A story (``incidents/<slug>/story.md``) has front matter (title, dates, AIID incident id,
sources, licences, harms) and the fixed sections of :data:`SECTIONS`, in order. Its body may
use Jinja2 placeholders that resolve from the run's metrics JSON:

- ``{{ metrics.pairs.wf_wm }}`` — a number, or an estimate record
  (value/low/high/n/test) rendered as "0.58 (95% CI 0.55–0.61; n = 1,000; Wilson 95%)";
- ``{{ metrics.pairs.wf_wm.value | pct }}`` — one field, formatted;
- ``{{ table("pairwise") }}`` — a table from the run's ``tables`` as a Markdown table;
- ``![alt text](figure.png)`` — a figure from ``outputs/<slug>/``.

A placeholder that does not resolve, or a figure file that does not exist, is a
:class:`StoryError` naming it — never a blank. :func:`resolve` turns a story and a run into
:class:`Block` s; :func:`render_html` writes the self-contained report, and the Streamlit
app renders the same blocks (one format, two renderers).
"""

from __future__ import annotations

import base64
import html
import json
import math
import mimetypes
import re
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import yaml

SECTIONS = (
    "What happened",
    "The public method",
    "How we reproduced it",
    "What the simulation shows",
    "What the autopsy found",
    "Limits",
    "Sources",
)
REQUIRED_FRONT_MATTER = ("title", "slug", "date", "sources", "licences", "harms")
ESTIMATE_KEYS = {"value", "low", "high", "n", "test"}
FIGURE_LINE = re.compile(r"^!\[(?P<alt>[^\]]*)\]\((?P<src>[^)\s]+)\)\s*$")
TEMPLATES = Path(__file__).parent / "templates"


class StoryError(ValueError):
    """A story that cannot be parsed or resolved; the message names the placeholder or file."""


@dataclass(frozen=True)
class Story:
    path: Path
    meta: dict
    body: str  # Markdown with placeholders, front matter removed

    @property
    def title(self) -> str:
        return self.meta["title"]


@dataclass(frozen=True)
class Block:
    """One piece of a resolved story: Markdown text, or a figure with its alt text."""

    kind: str  # "markdown" | "figure"
    text: str = ""
    path: Path | None = None
    section: str = ""


@dataclass(frozen=True)
class ResolvedStory:
    story: Story
    run: dict
    blocks: list[Block] = field(default_factory=list)


def parse(path: str | Path) -> Story:
    """Read a story file and check its front matter and sections."""
    path = Path(path)
    if not path.is_file():
        raise StoryError(f"story file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    match = re.match(r"^---\n(.*?)\n---\n(.*)$", text, flags=re.DOTALL)
    if not match:
        raise StoryError(f"{path}: a story starts with YAML front matter between two '---' lines")
    try:
        meta = yaml.safe_load(match.group(1)) or {}
    except yaml.YAMLError as err:
        raise StoryError(f"{path}: front matter is not valid YAML: {err}") from None
    missing = [k for k in REQUIRED_FRONT_MATTER if k not in meta]
    if missing:
        raise StoryError(f"{path}: front matter lacks {missing} (required: {list(REQUIRED_FRONT_MATTER)})")
    body = match.group(2)
    headings = [h.strip() for h in re.findall(r"^## (.+)$", body, flags=re.MULTILINE)]
    if headings != list(SECTIONS):
        raise StoryError(
            f"{path}: sections must be exactly, in order: {list(SECTIONS)}; found {headings}"
        )
    return Story(path=path, meta=meta, body=body)


class _Node:
    """A group of values in the metrics tree; attribute access walks it and names the path."""

    def __init__(self, data: dict, path: str):
        self._data, self._path = data, path

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return self[name]

    def __getitem__(self, name):
        if name not in self._data:
            raise StoryError(
                f"placeholder '{self._path}.{name}' is not in the run's metrics "
                f"(available under {self._path}: {sorted(self._data)[:20]})"
            )
        return _wrap(self._data[name], f"{self._path}.{name}")

    def __str__(self):
        raise StoryError(f"placeholder '{self._path}' is a group of values, not a value; name one of {sorted(self._data)}")


class _EstimateView(_Node):
    def __str__(self):
        return format_estimate(self._data)


def _wrap(value, path: str):
    if isinstance(value, dict):
        return (_EstimateView if ESTIMATE_KEYS <= set(value) else _Node)(value, path)
    if value is None:
        raise StoryError(f"placeholder '{path}' has no value in this run")
    return value


def format_number(value) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int) or float(value).is_integer() and abs(value) >= 100:
        return f"{int(value):,}"
    if math.isnan(value):
        return "n/a"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:,.2f}"


def format_estimate(est: dict) -> str:
    """'0.58 (95% CI 0.55–0.61; n = 1,000; Wilson 95%)', with a warning if the record has one."""
    level = int(round(100 * est.get("level", 0.95)))
    text = (
        f"{format_number(est['value'])} ({level}% CI {format_number(est['low'])}–{format_number(est['high'])}; "
        f"n = {format_number(int(est['n']))}; {est['test']}"
    )
    if est.get("p_value") is not None:
        text += f"; p = {est['p_value']:.2g}"
    text += ")"
    if est.get("warning"):
        text += f" ⚠ {est['warning']}"
    return text


def _pct(value) -> str:
    return f"{100 * float(value):.1f}%"


def markdown_table(records: list[dict], columns: list[str] | None = None) -> str:
    """A Markdown table; estimate cells read "0.58 (0.55–0.61; n = 1,000)" and each column's
    interval and test are named once, under the table."""
    if not records:
        raise StoryError("a table placeholder points at an empty table")
    columns = columns or list(records[0])
    tests: dict[str, list[str]] = {}

    def cell(column, v):
        if isinstance(v, dict) and ESTIMATE_KEYS <= set(v):
            test = f"{int(round(100 * v.get('level', 0.95)))}% CI, {v['test']}"
            if test not in tests.setdefault(column, []):
                tests[column].append(test)
            text = f"{format_number(v['value'])} ({format_number(v['low'])}–{format_number(v['high'])}; n = {format_number(int(v['n']))}"
            if v.get("p_value") is not None:
                text += f"; p = {v['p_value']:.2g}"
            return text + ")" + (f" ⚠ {v['warning']}" if v.get("warning") else "")
        return format_number(v) if v is not None else "—"

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(c, r.get(c)).replace("|", "\\|") for c in columns) + " |" for r in records]
    if tests:
        named = [f"{c}: {t[0]}" + (f" (and {len(t) - 1} variant(s) by row, in the metrics file)" if len(t) > 1 else "")
                 for c, t in tests.items()]
        lines += ["", "*Intervals — " + "; ".join(named) + ".*"]
    return "\n".join(lines)


def resolve(story: Story, run: dict, outputs_dir: str | Path) -> ResolvedStory:
    """Fill the story's placeholders from ``run`` (the metrics JSON) and find its figures."""
    outputs_dir = Path(outputs_dir)
    tables = run.get("tables", {})

    def table(name: str, columns: list[str] | None = None) -> str:
        if name not in tables:
            raise StoryError(f"table placeholder '{name}' is not in the run's tables (available: {sorted(tables)})")
        return markdown_table(tables[name], columns)

    env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)
    env.filters["pct"] = _pct
    env.filters["num"] = format_number
    try:
        text = env.from_string(story.body).render(
            metrics=_Node(run.get("metrics", {}), "metrics"), run=run, table=table, meta=story.meta
        )
    except jinja2.UndefinedError as err:
        raise StoryError(f"{story.path}: unresolved placeholder: {err.message}") from None
    except jinja2.TemplateSyntaxError as err:
        raise StoryError(f"{story.path}, line {err.lineno}: bad placeholder syntax: {err.message}") from None
    except StoryError as err:
        raise StoryError(f"{story.path}: {err}") from None

    blocks: list[Block] = []
    section, buffer = "", []

    def flush():
        if "".join(buffer).strip():
            blocks.append(Block("markdown", "\n".join(buffer).strip() + "\n", section=section))
        buffer.clear()

    for line in text.splitlines():
        if line.startswith("## "):
            flush()
            section = line[3:].strip()
        figure = FIGURE_LINE.match(line)
        if figure:
            path = outputs_dir / figure["src"]
            if not path.is_file():
                raise StoryError(f"{story.path}: figure '{figure['src']}' was not found at {path}; run the incident first")
            if not figure["alt"].strip():
                raise StoryError(f"{story.path}: figure '{figure['src']}' needs alt text")
            flush()
            blocks.append(Block("figure", figure["alt"], path=path, section=section))
        else:
            buffer.append(line)
    flush()
    return ResolvedStory(story=story, run=run, blocks=blocks)


def load_run(metrics_path: str | Path) -> dict:
    path = Path(metrics_path)
    if not path.is_file():
        raise StoryError(f"no run found: {path} does not exist; run the incident first (autopsy run <slug>)")
    return json.loads(path.read_text())


def _data_uri(path: Path) -> str:
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"


def markdown_to_html(text: str) -> str:
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False}).enable("table").render(text)


def render_html(resolved: ResolvedStory, destination: str | Path) -> Path:
    """Write one self-contained HTML file (figures embedded, print-friendly CSS)."""
    parts = []
    for block in resolved.blocks:
        if block.kind == "figure":
            alt = html.escape(block.text)
            parts.append(
                f'<figure><img src="{_data_uri(block.path)}" alt="{alt}"><figcaption>{alt}</figcaption></figure>'
            )
        else:
            parts.append(markdown_to_html(block.text))
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
    )
    page = env.get_template("report.html").render(
        meta=resolved.story.meta, run=resolved.run, body="\n".join(parts), markup=jinja2.filters.Markup,
    )
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    tmp = destination.with_suffix(destination.suffix + ".part")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(destination)
    return destination
