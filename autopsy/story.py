"""Stories: Markdown with YAML front matter, resolved against a run, rendered two ways.

A story (``incidents/<slug>/story.md``) has front matter (title, dates, AIID incident id,
sources, licences, harms) and the fixed sections of :data:`SECTIONS`, in order. Its body may
use Jinja2 placeholders that resolve from the run's metrics JSON:

- ``{{ metrics.pairs.wf_wm }}`` — a number, or an estimate record
  (value/low/high/n/test) rendered as "0.58 (95% CI 0.55–0.61; n = 1,000; Wilson 95%)";
- ``{{ metrics.pairs.wf_wm.value | pct }}`` — one field, formatted;
- ``{{ table("pairwise") }}`` — a table from the run's ``tables`` as a Markdown table;
- ``![alt text](figure.png)`` — on a line of its own: a figure from ``outputs/<slug>/``.

A placeholder that does not resolve, or a figure file that does not exist, is a
:class:`StoryError` naming it — never a blank. :func:`resolve` turns a story and a run into
:class:`Block` s; :func:`render_html` writes the self-contained report, and the Streamlit
app renders the same blocks (one format, two renderers).

Values from a run are data, never Markdown: every string a placeholder inserts (a group label,
a test name, a warning) is escaped, with line breaks flattened, so a label cannot add a heading,
a link, an image or HTML. Figures come only from the story's own text and only from files
inside the run's outputs folder (no URL, absolute path or ``..``).
"""

from __future__ import annotations

import base64
import html
import json
import math
import mimetypes
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

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
INLINE_IMAGE = re.compile(r"!\[[^\]]*\]\(")
FIGURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif")
TEMPLATES = Path(__file__).parent / "templates"
# Stands for a figure while the story's text goes through Jinja; values cannot contain it
# because escape_markdown turns every control character into a space.
_FIGURE_MARK = "\x00figure:{}\x00"
_FIGURE_MARK_LINE = re.compile(r"^\x00figure:(\d+)\x00$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
# CommonMark lets any ASCII punctuation be backslash-escaped; these are the characters that can
# start structure inline or at a line start (emphasis, code, links and images, HTML and entities,
# headings, lists, quotes, tables, strikethrough, Streamlit's $maths$ and :colour[...]).
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+\-!|~$&])")


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


class Markdown(str):
    """Markdown the lab wrote itself (a table, a formatted estimate): inserted without escaping."""


def escape_markdown(value) -> str:
    """``value`` as literal text in Markdown: line breaks and control characters become spaces
    and every character that could start Markdown structure is backslash-escaped."""
    text = _CONTROL.sub(" ", str(value))
    text = _MARKDOWN_SPECIAL.sub(r"\\\1", text)
    return re.sub(r"^(\s*\d{1,9})\.(?=\s|$)", r"\1\\.", text)  # "1. x" would start a numbered list


def _finalize(value):
    """How Jinja prints every ``{{ ... }}``: numbers as they are, the lab's Markdown as it is,
    every other value escaped."""
    if isinstance(value, Markdown):
        return value
    if isinstance(value, _EstimateView):
        return Markdown(format_estimate(_checked_estimate(value._data, value._path), markdown=True))
    if isinstance(value, _Node):
        return str(value)  # raises: a group of values is not a value
    if isinstance(value, (bool, int, float)):
        return str(value)
    return escape_markdown(value)


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
    if value is None:
        return "n/a"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int) or float(value).is_integer() and abs(value) >= 100:
        return f"{int(value):,}"
    if math.isnan(value):
        return "n/a"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:,.2f}"


def _checked_estimate(est: dict, where: str) -> dict:
    """The record if its numbers are numbers; a StoryError naming ``where`` otherwise."""
    def number(v, *, optional=False):
        return (optional and v is None) or (isinstance(v, (int, float)) and not isinstance(v, bool))

    # value, low and high are null where the estimate is undefined (NaN; Estimate.to_dict)
    bad = [k for k in ("n",) if not number(est.get(k))]
    bad += [k for k in ("value", "low", "high", "level", "p_value") if not number(est.get(k), optional=True)]
    if bad:
        raise StoryError(f"'{where}' is not a valid estimate record: {', '.join(bad)} must be number(s); "
                         "the run record may be damaged, rerun the incident")
    return est


def format_estimate(est: dict, *, markdown: bool = False) -> str:
    """'0.58 (95% CI 0.55–0.61; n = 1,000; Wilson 95%)', with a warning if the record has one.

    ``markdown=True`` escapes the record's text (test name, warning) for a Markdown page.
    """
    text_of = escape_markdown if markdown else str
    level = int(round(100 * (est.get("level") or 0.95)))
    text = (
        f"{format_number(est['value'])} ({level}% CI {format_number(est['low'])}–{format_number(est['high'])}; "
        f"n = {format_number(int(est['n']))}; {text_of(est['test'])}"
    )
    if est.get("p_value") is not None:
        text += f"; p = {est['p_value']:.2g}"
    text += ")"
    if est.get("warning"):
        text += f" ⚠ {text_of(est['warning'])}"
    return text


def _pct(value) -> str:
    return f"{100 * float(value):.1f}%"


def markdown_table(records: list[dict], columns: list[str] | None = None, *, name: str = "table") -> Markdown:
    """A Markdown table; estimate cells read "0.58 (0.55–0.61; n = 1,000)" and each column's
    interval and test are named once, under the table. Every text from the records is escaped."""
    if not records:
        raise StoryError(f"table placeholder '{name}' points at an empty table")
    if not all(isinstance(r, dict) for r in records):
        raise StoryError(f"table '{name}' in the run record is not a list of rows; rerun the incident")
    columns = columns or list(records[0])
    tests: dict[str, list[str]] = {}

    def cell(column, v):
        if isinstance(v, dict) and ESTIMATE_KEYS <= set(v):
            v = _checked_estimate(v, f"{name}.{column}")
            test = f"{int(round(100 * (v.get('level') or 0.95)))}% CI, {escape_markdown(v['test'])}"
            if test not in tests.setdefault(column, []):
                tests[column].append(test)
            text = (f"{format_number(v['value'])} ({format_number(v['low'])}–{format_number(v['high'])}; "
                    f"n = {format_number(int(v['n']))}")
            if v.get("p_value") is not None:
                text += f"; p = {v['p_value']:.2g}"
            return text + ")" + (f" ⚠ {escape_markdown(v['warning'])}" if v.get("warning") else "")
        if v is None:
            return "—"
        return format_number(v) if isinstance(v, (int, float)) else escape_markdown(v)

    lines = ["| " + " | ".join(escape_markdown(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(c, r.get(c)) for c in columns) + " |" for r in records]
    if tests:
        named = [f"{escape_markdown(c)}: {t[0]}"
                 + (f" (and {len(t) - 1} variant(s) by row, in the metrics file)" if len(t) > 1 else "")
                 for c, t in tests.items()]
        lines += ["", "*Intervals — " + "; ".join(named) + ".*"]
    return Markdown("\n".join(lines))


def resolve(story: Story, run: dict, outputs_dir: str | Path) -> ResolvedStory:
    """Fill the story's placeholders from ``run`` (the metrics JSON) and find its figures.

    Figures are read from the story's text before any value is inserted, so only the story
    can name one, and each must be a file inside ``outputs_dir``.
    """
    outputs_dir = Path(outputs_dir)
    tables = run.get("tables") or {}

    def table(name: str, columns: list[str] | None = None) -> Markdown:
        if name not in tables:
            raise StoryError(f"table placeholder '{name}' is not in the run's tables (available: {sorted(tables)})")
        return markdown_table(tables[name], columns, name=name)

    figures, lines = [], []
    for number, line in enumerate(story.body.splitlines(), start=1):
        figure = FIGURE_LINE.match(line)
        if figure:
            figures.append(_figure_source(story, figure["alt"], figure["src"]))
            lines.append(_FIGURE_MARK.format(len(figures) - 1))
        elif INLINE_IMAGE.search(line):
            raise StoryError(f"{story.path}: body line {number} has an image inside text; put each figure "
                             "on a line of its own as ![alt text](file.png), a file in the run's outputs")
        else:
            lines.append(line)

    env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True,
                             finalize=_finalize)
    env.filters["pct"] = _pct
    env.filters["num"] = format_number
    try:
        text = env.from_string("\n".join(lines)).render(
            metrics=_Node(run.get("metrics") or {}, "metrics"), run=run, table=table, meta=story.meta
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
        mark = _FIGURE_MARK_LINE.match(line)
        if mark:
            alt, src = figures[int(mark[1])]
            flush()
            blocks.append(Block("figure", alt, path=_figure_path(story, src, outputs_dir), section=section))
        elif "\x00figure:" in line:
            raise StoryError(f"{story.path}: a figure line was joined to other text by a template tag; "
                             "keep each figure on a line of its own")
        else:
            buffer.append(line)
    flush()
    return ResolvedStory(story=story, run=run, blocks=blocks)


def _figure_source(story: Story, alt: str, src: str) -> tuple[str, str]:
    """Check a figure reference in the story's text: alt text, a plain relative file name."""
    where = f"{story.path}: figure '{src}'"
    if "{" in alt or "{" in src:
        raise StoryError(f"{where}: a figure line cannot hold placeholders; name the file literally")
    if not alt.strip():
        raise StoryError(f"{where} needs alt text")
    pure = PurePosixPath(src)
    if (re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", src) or "\\" in src or pure.is_absolute()
            or ".." in pure.parts or src.startswith("~")):
        raise StoryError(f"{where} must be a file in the run's outputs folder, named relative to it "
                         "(no URL, absolute path or '..')")
    if pure.suffix.lower() not in FIGURE_SUFFIXES:
        raise StoryError(f"{where}: a figure must be a {', '.join(FIGURE_SUFFIXES)} image")
    return alt, src


def _figure_path(story: Story, src: str, outputs_dir: Path) -> Path:
    """The figure's file, which must exist inside ``outputs_dir`` (a link out of it is refused)."""
    path = outputs_dir / src
    if not path.is_file():
        raise StoryError(f"{story.path}: figure '{src}' was not found at {path}; run the incident first")
    if not path.resolve().is_relative_to(outputs_dir.resolve()):
        raise StoryError(f"{story.path}: figure '{src}' at {path} links to a file outside the run's outputs "
                         f"folder {outputs_dir}; figures are embedded only from that folder")
    return path


def load_run(metrics_path: str | Path) -> dict:
    """The run record (``metrics/<slug>.json``); a missing, unreadable or damaged file is a
    :class:`StoryError` naming it."""
    path = Path(metrics_path)
    if not path.is_file():
        raise StoryError(f"no run found: {path} does not exist; run the incident first (autopsy run <slug>)")
    try:
        run = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise StoryError(f"the run record {path} cannot be read ({err}); it may be damaged or from an "
                         "interrupted run: run the incident again (autopsy run <slug>)") from None
    if not isinstance(run, dict):
        raise StoryError(f"the run record {path} is not a JSON object (it holds a {type(run).__name__}); "
                         "run the incident again (autopsy run <slug>)")
    return run


def _data_uri(path: Path) -> str:
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"


def markdown_to_html(text: str) -> str:
    from markdown_it import MarkdownIt

    # Raw HTML is escaped and images are off: every picture in a report is a figure block,
    # embedded from the run's outputs by render_html, never a reference the page would load.
    return MarkdownIt("commonmark", {"html": False}).enable("table").disable("image").render(text)


def _web_link(url) -> str:
    """``url`` if it is an http(s) address, else '' (a run record cannot add javascript: links)."""
    return url if isinstance(url, str) and re.match(r"^https?://", url) else ""


def _footprint(run: dict) -> list[dict]:
    """This run's energy and emissions beside published training footprints (empty for older records)."""
    if not isinstance(run.get("carbon"), dict) or "measured" not in run["carbon"]:
        return []
    from autopsy.carbon import comparison_rows

    return [{k: format_number(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else ("–" if v is None else v)
             for k, v in row.items()} for row in comparison_rows(run["carbon"])]


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
    env.filters["web_link"] = _web_link
    try:
        page = env.get_template("report.html").render(
            meta=resolved.story.meta, run=resolved.run, body="\n".join(parts), markup=jinja2.filters.Markup,
            footprint=_footprint(resolved.run),
        )
    except jinja2.UndefinedError as err:
        raise StoryError(f"the report cannot be filled from the story's front matter and the run record: "
                         f"{err.message}; check the story, or run the incident again") from None
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    tmp = destination.with_suffix(destination.suffix + ".part")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(destination)
    return destination
