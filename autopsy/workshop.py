"""Workshops: a per-section assessment of each incident, predict-then-reveal scenarios, one SQLite file.

**Assessment.** Each incident may ship ``incidents/<slug>/assessment.yaml``: questions grouped in the
six :data:`SECTIONS`, each with choices worth points and the evidence in the run it is about (a
metrics path such as ``metrics.position.no_scaling`` or a figure such as ``figure:pairs.png``), so the
app can show the evidence beside the question. :func:`load_assessment` validates a file and names
the file and question at fault. A participant's score per section is the share of the available
points they earned on the questions they answered.

**Scenarios.** ``incidents/<slug>/scenarios.py`` exposes ``scenarios(outputs=None) -> list[Scenario]``: a
picture, a question with a few choices, and ``reveal()``, which runs the incident's own model to
give the :class:`Outcome`. Participants predict first; the outcome is shown after.

**The workshop file.** :class:`Workshop` keeps participants (a nickname, nothing else), answers,
predictions and the facilitator's session in one SQLite database (Python's ``sqlite3``), in WAL
mode with short transactions, so a few Streamlit sessions can write at once and everything
survives a restart. Exports are plain CSV (UTF-8 with a byte-order mark, which spreadsheets read
as UTF-8) and JSON.

Comparisons across participants are means with a percentile bootstrap interval over participants
(:func:`autopsy.stats.bootstrap`); predictions are tallied as a proportion with a Wilson interval.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib
import io
import json
import math
import re
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import yaml

__all__ = ["SECTIONS", "Assessment", "AssessmentError", "Choice", "Evidence", "Outcome", "Question", "Scenario",
           "Workshop", "WorkshopError", "assessment_path", "comparison", "comparison_figure", "load_assessment",
           "resolve_evidence", "scenarios_for"]

#: Section id -> title, in the order the app shows them.
SECTIONS: dict[str, str] = {
    "data_consent": "Data and consent",
    "bias_fairness": "Bias and fairness",
    "explainability": "Explainability",
    "robustness": "Robustness",
    "privacy": "Privacy",
    "environment": "Environment",
}
EVIDENCE_ROOTS = ("metrics", "tables", "params", "carbon", "figures", "provenance")
_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_NICKNAME = re.compile(r"^[\w][\w .'-]{0,29}$")
SCHEMA_VERSION = 1


class AssessmentError(ValueError):
    """A question bank that does not validate; the message names the file and the question."""


class WorkshopError(ValueError):
    """A workshop action that cannot be done (bad nickname, unknown question, prediction after reveal)."""


# -- the question bank ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Choice:
    id: str
    text: str
    points: float


@dataclass(frozen=True)
class Question:
    id: str
    section: str
    text: str
    choices: tuple[Choice, ...]
    evidence: tuple[str, ...]
    explanation: str = ""

    @property
    def max_points(self) -> float:
        return max(c.points for c in self.choices)

    def choice(self, choice_id: str) -> Choice:
        for c in self.choices:
            if c.id == choice_id:
                return c
        raise WorkshopError(f"question {self.id!r} has no choice {choice_id!r}; choices: "
                            f"{', '.join(c.id for c in self.choices)}")


@dataclass(frozen=True)
class Assessment:
    """One incident's validated question bank."""

    incident: str
    title: str
    path: Path
    questions: tuple[Question, ...]

    @property
    def sections(self) -> list[str]:
        """Section ids in :data:`SECTIONS` order."""
        present = {q.section for q in self.questions}
        return [s for s in SECTIONS if s in present]

    def in_section(self, section: str) -> list[Question]:
        return [q for q in self.questions if q.section == section]

    def question(self, question_id: str) -> Question:
        for q in self.questions:
            if q.id == question_id:
                return q
        raise WorkshopError(f"the {self.incident} assessment has no question {question_id!r}")

    def max_points(self, section: str) -> float:
        return float(sum(q.max_points for q in self.in_section(section)))


def assessment_path(incident) -> Path:
    """``assessment.yaml`` beside the incident's story (inside its package)."""
    return Path(incident.story).parent / "assessment.yaml"


def load_assessment(path: str | Path) -> Assessment:
    """Read and validate a question bank; :class:`AssessmentError` names the file and question at fault.

    Layout::

        incident: twitter_crop
        title: Twitter image cropping
        sections:
          bias_fairness:
            - id: tw-bias-position
              text: The published protocol always put the first group on the left. What does the lab find?
              choices:
                - {id: a, text: Position does not matter, points: 0}
                - {id: b, text: Swapping sides is needed to tell position from face, points: 2}
              evidence: [metrics.position.no_scaling, "figure:pairs.png"]
              explanation: Shown after answering.

    Every one of the six :data:`SECTIONS` must be present; question ids are unique in the file.
    """
    path = Path(path)
    where = str(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AssessmentError(f"{where}: no such file; write the incident's question bank there") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise AssessmentError(f"{where}: not readable YAML ({err})") from None
    if not isinstance(data, dict):
        raise AssessmentError(f"{where}: the file must be a mapping with incident, title and sections")
    for key in ("incident", "title", "sections"):
        if key not in data:
            raise AssessmentError(f"{where}: missing top-level key {key!r}")
    unknown = set(data) - {"incident", "title", "sections", "version"}
    if unknown:
        raise AssessmentError(f"{where}: unknown top-level key(s) {', '.join(sorted(unknown))}")
    sections = data["sections"]
    if not isinstance(sections, dict):
        raise AssessmentError(f"{where}: 'sections' must map a section id to its list of questions")
    bad = [s for s in sections if s not in SECTIONS]
    if bad:
        raise AssessmentError(f"{where}: unknown section(s) {', '.join(map(str, bad))}; use {', '.join(SECTIONS)}")
    missing = [s for s in SECTIONS if s not in sections]
    if missing:
        raise AssessmentError(f"{where}: section(s) {', '.join(missing)} missing; every incident covers all six")
    questions, seen = [], set()
    for section, items in sections.items():
        if not isinstance(items, list) or not items:
            raise AssessmentError(f"{where}: section {section!r} must list at least one question")
        for i, item in enumerate(items, 1):
            q = _question(item, section, f"{where}: section {section!r}, question {i}")
            if q.id in seen:
                raise AssessmentError(f"{where}: question id {q.id!r} is used twice; ids must be unique")
            seen.add(q.id)
            questions.append(q)
    return Assessment(incident=str(data["incident"]), title=str(data["title"]), path=path, questions=tuple(questions))


def _question(item, section: str, where: str) -> Question:
    if not isinstance(item, dict):
        raise AssessmentError(f"{where}: a question must be a mapping (id, text, choices, evidence)")
    qid = item.get("id")
    if not isinstance(qid, str) or not _ID.match(qid):
        raise AssessmentError(f"{where}: id {qid!r} must be lower-case letters, digits, - or _ (at most 64)")
    where = f"{where.rsplit(', question', 1)[0]}, question {qid!r}"
    unknown = set(item) - {"id", "text", "choices", "evidence", "explanation"}
    if unknown:
        raise AssessmentError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    text = item.get("text")
    if not isinstance(text, str) or not text.strip():
        raise AssessmentError(f"{where}: 'text' must be the question, a non-empty string")
    raw = item.get("choices")
    if not isinstance(raw, list) or len(raw) < 2:
        raise AssessmentError(f"{where}: give at least two choices, each {{id, text, points}}")
    choices = []
    for c in raw:
        if not isinstance(c, dict) or set(c) != {"id", "text", "points"}:
            raise AssessmentError(f"{where}: choice {c!r} must have exactly id, text and points")
        points = c["points"]
        if isinstance(points, bool) or not isinstance(points, (int, float)) or not math.isfinite(points) or points < 0:
            raise AssessmentError(f"{where}: choice {c['id']!r} has points {points!r}; use a number >= 0")
        if not isinstance(c["text"], str) or not c["text"].strip():
            raise AssessmentError(f"{where}: choice {c['id']!r} needs its text")
        choices.append(Choice(str(c["id"]), c["text"].strip(), float(points)))
    ids = [c.id for c in choices]
    if len(set(ids)) != len(ids):
        raise AssessmentError(f"{where}: choice ids must be unique, got {ids}")
    if max(c.points for c in choices) <= 0:
        raise AssessmentError(f"{where}: no choice is worth any points; give the best answer(s) points > 0")
    evidence = item.get("evidence")
    if isinstance(evidence, str):
        evidence = [evidence]
    if not isinstance(evidence, list) or not evidence:
        raise AssessmentError(f"{where}: 'evidence' must name at least one metrics path or figure in the run")
    for ref in evidence:
        _check_evidence_ref(ref, where)
    explanation = item.get("explanation", "")
    if not isinstance(explanation, str):
        raise AssessmentError(f"{where}: 'explanation' must be text")
    return Question(qid, section, text.strip(), tuple(choices), tuple(evidence), explanation.strip())


def _check_evidence_ref(ref, where: str) -> None:
    if not isinstance(ref, str) or not ref:
        raise AssessmentError(f"{where}: evidence {ref!r} must be a string")
    if ref.startswith("figure:"):
        if not re.match(r"^figure:[\w.-]+\.(png|jpg|jpeg|svg)$", ref):
            raise AssessmentError(f"{where}: evidence {ref!r} must name an image file, e.g. figure:pairs.png")
        return
    root = ref.split(".", 1)[0]
    if root not in EVIDENCE_ROOTS or not re.match(r"^[\w-]+(\.[\w-]+)*$", ref):
        raise AssessmentError(f"{where}: evidence {ref!r} must be a dotted path under one of "
                              f"{', '.join(EVIDENCE_ROOTS)} (e.g. metrics.position.no_scaling) or figure:NAME.png")


# -- evidence from a run -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Evidence:
    """What the run says for one evidence reference: a value, a table, a figure file, or why not."""

    ref: str
    kind: str  # "value" | "estimate" | "table" | "group" | "figure" | "missing"
    value: Any = None
    path: Path | None = None
    caption: str = ""

    @property
    def found(self) -> bool:
        return self.kind != "missing"

    def text(self) -> str:
        """A one-line reading of the value (estimates as '0.58 (95% CI 0.55–0.61; n = 1,000; Wilson 95%)')."""
        from autopsy.story import format_estimate, format_number

        if self.kind == "estimate":
            return format_estimate(self.value)
        if self.kind == "value":
            return format_number(self.value)
        return self.caption


def resolve_evidence(ref: str, run: Mapping | None, outputs: str | Path | None = None) -> Evidence:
    """Look ``ref`` up in a run record (``metrics/<slug>.json`` as a dict) and its outputs folder."""
    from autopsy.story import ESTIMATE_KEYS

    if run is None:
        return Evidence(ref, "missing", caption="no run of this incident yet: run it to see this evidence")
    if ref.startswith("figure:"):
        name = ref.split(":", 1)[1]
        path = Path(outputs) / name if outputs is not None else None
        caption = (run.get("figures") or {}).get(name, name)
        if path is None or not path.is_file():
            return Evidence(ref, "missing", caption=f"figure {name} is not among this run's outputs")
        return Evidence(ref, "figure", path=path, caption=caption)
    node: Any = run
    for part in ref.split("."):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        else:
            return Evidence(ref, "missing", caption=f"{ref} is not in this run's record")
    if isinstance(node, Mapping) and ESTIMATE_KEYS <= set(node) and node.get("value") is not None:
        return Evidence(ref, "estimate", value=dict(node))
    if isinstance(node, list):
        return Evidence(ref, "table", value=node, caption=ref)
    if isinstance(node, Mapping):
        return Evidence(ref, "group", value=dict(node), caption=ref)
    if node is None:
        return Evidence(ref, "missing", caption=f"{ref} has no value in this run")
    return Evidence(ref, "value", value=node)


# -- scenarios ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What the model did: the right choice, a sentence with the measured numbers, a picture."""

    answer: str  # one of the scenario's choices
    explanation: str
    image: Any = None  # PIL image or PNG bytes, shown at the reveal
    measured: Mapping[str, Any] = field(default_factory=dict)  # JSON-safe numbers behind the answer


@dataclass(frozen=True)
class Scenario:
    """A predict-then-reveal card. ``picture()`` and ``reveal()`` load photos and models on call."""

    id: str  # unique across incidents, e.g. "twitter_crop/pair-bf-wm"
    incident: str
    title: str
    prompt: str
    choices: tuple[str, ...]
    caption: str  # what the picture shows, with perceived labels where people appear
    picture: Callable[[], Any]
    reveal: Callable[[], Outcome]


def scenarios_for(slug: str, package: str = "incidents", *, outputs: str | Path | None = None) -> list[Scenario]:
    """The incident's scenario cards (``<package>.<slug>.scenarios.scenarios(outputs)``), or [] if it has none.

    ``outputs`` is the incident's run output folder, for cards chosen from a run's results.
    """
    name = f"{package}.{slug}.scenarios"
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as err:
        if name == err.name or name.startswith(f"{err.name}."):  # no scenarios module (or no such package)
            return []
        raise
    return list(module.scenarios(outputs))


# -- the workshop database -----------------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS participants (
    id INTEGER PRIMARY KEY,
    nickname TEXT NOT NULL UNIQUE COLLATE NOCASE,
    joined_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS answers (
    participant_id INTEGER NOT NULL REFERENCES participants(id) ON DELETE CASCADE,
    incident TEXT NOT NULL,
    section TEXT NOT NULL,
    question_id TEXT NOT NULL,
    answer TEXT NOT NULL,
    points REAL NOT NULL,
    max_points REAL NOT NULL,
    answered_at TEXT NOT NULL,
    PRIMARY KEY (participant_id, incident, question_id)
);
CREATE TABLE IF NOT EXISTS predictions (
    participant_id INTEGER NOT NULL REFERENCES participants(id) ON DELETE CASCADE,
    incident TEXT NOT NULL,
    scenario_id TEXT NOT NULL,
    prediction TEXT NOT NULL,
    predicted_at TEXT NOT NULL,
    outcome TEXT,
    revealed_at TEXT,
    PRIMARY KEY (participant_id, scenario_id)
);
CREATE TABLE IF NOT EXISTS reveals (
    scenario_id TEXT PRIMARY KEY,
    incident TEXT NOT NULL,
    outcome TEXT NOT NULL,
    revealed_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    id INTEGER PRIMARY KEY,
    incident TEXT NOT NULL,
    started_at TEXT NOT NULL,
    ended_at TEXT
);
"""


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def check_nickname(nickname: str) -> str:
    """The nickname, trimmed; :class:`WorkshopError` unless it is 1-30 letters, digits, spaces, - _ . '."""
    name = " ".join(str(nickname or "").split())
    if not _NICKNAME.match(name) or "@" in name:
        raise WorkshopError(f"nickname {name!r}: use 1-30 letters, digits, spaces or - _ . ' (a nickname only, "
                            "not your name or e-mail address)")
    return name


@dataclass(frozen=True)
class Session:
    id: int
    incident: str
    started_at: str


class Workshop:
    """One workshop's answers and predictions in a SQLite file; every call is its own short transaction.

    Open with :meth:`open`; a second open of the same file (another Streamlit session, or the app
    after a restart) sees the same data.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @classmethod
    def open(cls, path: str | Path, *, name: str | None = None) -> Workshop:
        """Open the workshop file at ``path``, creating it (and its folder) if needed."""
        path = Path(path).expanduser()
        if path.exists() and not path.is_file():
            raise WorkshopError(f"workshop file {path} is a folder; give a file path such as "
                                f"{path / 'workshop.sqlite'}")
        path.parent.mkdir(parents=True, exist_ok=True)
        workshop = cls(path)
        try:
            con = sqlite3.connect(path, timeout=15, isolation_level=None)
            try:  # outside a transaction: journal_mode cannot change inside one, executescript commits
                con.execute("PRAGMA busy_timeout=15000")
                con.execute("PRAGMA journal_mode=WAL")  # readers never block the writer; persistent in the file
                con.executescript(_SCHEMA)
            finally:
                con.close()
            with workshop._connect() as con:
                con.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                con.execute("INSERT OR IGNORE INTO meta VALUES ('created_at', ?)", (_now(),))
                con.execute("INSERT OR IGNORE INTO meta VALUES ('name', ?)", (name or path.stem,))
        except sqlite3.DatabaseError as err:
            raise WorkshopError(f"{path} is not a workshop database ({err}); choose another --workshop file") from None
        return workshop

    @contextlib.contextmanager
    def _connect(self, *, write: bool = True):
        con = sqlite3.connect(self.path, timeout=15, isolation_level=None)
        try:
            con.execute("PRAGMA foreign_keys=ON")
            con.execute("PRAGMA busy_timeout=15000")
            con.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")
        finally:
            con.close()

    def _query(self, sql: str, params: Sequence = ()) -> pd.DataFrame:
        with self._connect(write=False) as con:
            cursor = con.execute(sql, params)
            columns = [d[0] for d in cursor.description]
            return pd.DataFrame(cursor.fetchall(), columns=columns)

    @property
    def meta(self) -> dict:
        return dict(self._query("SELECT key, value FROM meta").itertuples(index=False))

    # -- participants ------------------------------------------------------------------------------
    def join(self, nickname: str) -> str:
        """Register ``nickname`` (case-insensitive; joining again returns the stored spelling)."""
        name = check_nickname(nickname)
        with self._connect() as con:
            con.execute("INSERT OR IGNORE INTO participants (nickname, joined_at) VALUES (?, ?)", (name, _now()))
            return con.execute("SELECT nickname FROM participants WHERE nickname = ?", (name,)).fetchone()[0]

    def participants(self) -> list[str]:
        return list(self._query("SELECT nickname FROM participants ORDER BY joined_at, id")["nickname"])

    @staticmethod
    def _participant(con, nickname: str) -> int:
        row = con.execute("SELECT id FROM participants WHERE nickname = ?", (check_nickname(nickname),)).fetchone()
        if row is None:
            raise WorkshopError(f"no participant {nickname!r} in this workshop; join with a nickname first")
        return row[0]

    # -- assessment ---------------------------------------------------------------------------------
    def record_answer(self, nickname: str, assessment: Assessment, question_id: str, choice_id: str) -> float:
        """Store (or replace) a participant's answer; returns the points it earned."""
        question = assessment.question(question_id)
        choice = question.choice(choice_id)
        with self._connect() as con:
            pid = self._participant(con, nickname)
            con.execute(
                "INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (pid, assessment.incident, question.section, question.id, choice.id, choice.points,
                 question.max_points, _now()),
            )
        return choice.points

    def answers(self, nickname: str | None = None, incident: str | None = None) -> pd.DataFrame:
        """One row per answer: nickname, incident, section, question_id, answer, points, max_points, answered_at."""
        where, params = _filters(nickname=nickname, incident=incident)
        return self._query(
            "SELECT p.nickname, a.incident, a.section, a.question_id, a.answer, a.points, a.max_points, a.answered_at "
            f"FROM answers a JOIN participants p ON p.id = a.participant_id {where} "
            "ORDER BY p.joined_at, p.id, a.incident, a.answered_at, a.rowid", params)  # rowid: order of saving

    def section_scores(self, incident: str | None = None, nickname: str | None = None,
                       banks: Mapping[str, Assessment] | None = None) -> pd.DataFrame:
        """Per participant, incident and section: points, max_points, score (= points / max_points over the
        questions answered), answered and, given the question ``banks`` by incident, questions."""
        answers = self.answers(nickname=nickname, incident=incident)
        keys = ["nickname", "incident", "section"]
        if answers.empty:
            return pd.DataFrame(columns=[*keys, "points", "max_points", "score", "answered", "questions"])
        table = answers.groupby(keys, sort=False).agg(points=("points", "sum"), max_points=("max_points", "sum"),
                                                      answered=("question_id", "count")).reset_index()
        table["score"] = table["points"] / table["max_points"]
        table["questions"] = [len(banks[i].in_section(s)) if banks and i in banks else pd.NA
                              for i, s in zip(table["incident"], table["section"])]
        table["section"] = pd.Categorical(table["section"], categories=list(SECTIONS), ordered=True)
        table = table.sort_values(["incident", "section"], kind="stable").reset_index(drop=True)
        table["section"] = table["section"].astype(str)
        return table[[*keys, "points", "max_points", "score", "answered", "questions"]]

    # -- scenarios ----------------------------------------------------------------------------------
    def record_prediction(self, nickname: str, scenario: Scenario | str, prediction: str,
                          incident: str | None = None) -> None:
        """Store a prediction; changing it is allowed until the outcome is revealed (to anyone or to them)."""
        scenario_id, incident = _scenario_key(scenario, incident)
        if isinstance(scenario, Scenario) and prediction not in scenario.choices:
            raise WorkshopError(f"{prediction!r} is not a choice of {scenario_id}; "
                                f"choose one of {list(scenario.choices)}")
        with self._connect() as con:
            pid = self._participant(con, nickname)
            revealed = con.execute("SELECT 1 FROM reveals WHERE scenario_id = ?", (scenario_id,)).fetchone()
            own = con.execute("SELECT outcome FROM predictions WHERE participant_id = ? AND scenario_id = ?",
                              (pid, scenario_id)).fetchone()
            if revealed or (own and own[0] is not None):
                raise WorkshopError(f"the outcome of {scenario_id} is already revealed; predictions are closed")
            con.execute("INSERT OR REPLACE INTO predictions VALUES (?, ?, ?, ?, ?, NULL, NULL)",
                        (pid, incident, scenario_id, prediction, _now()))

    def reveal(self, scenario: Scenario | str, outcome: str, incident: str | None = None) -> None:
        """The facilitator reveals ``outcome`` to everyone: predictions close and are marked against it."""
        scenario_id, incident = _scenario_key(scenario, incident)
        now = _now()
        with self._connect() as con:
            con.execute("INSERT OR REPLACE INTO reveals VALUES (?, ?, ?, ?)", (scenario_id, incident, outcome, now))
            con.execute("UPDATE predictions SET outcome = ?, revealed_at = ? WHERE scenario_id = ?",
                        (outcome, now, scenario_id))

    def reveal_for(self, nickname: str, scenario: Scenario | str, outcome: str) -> None:
        """Self-paced play: reveal ``outcome`` to one participant, who must have predicted first."""
        scenario_id, _ = _scenario_key(scenario, None)
        with self._connect() as con:
            pid = self._participant(con, nickname)
            updated = con.execute("UPDATE predictions SET outcome = ?, revealed_at = ? WHERE participant_id = ? "
                                  "AND scenario_id = ?", (outcome, _now(), pid, scenario_id)).rowcount
            if not updated:
                raise WorkshopError(f"{nickname} has not predicted {scenario_id} yet: predict, then reveal")

    def revealed(self) -> dict[str, str]:
        """Scenario id -> outcome, for the facilitator's reveals."""
        return dict(self._query("SELECT scenario_id, outcome FROM reveals").itertuples(index=False))

    def predictions(self, nickname: str | None = None, incident: str | None = None) -> pd.DataFrame:
        where, params = _filters(nickname=nickname, incident=incident, table="r")
        return self._query(
            "SELECT p.nickname, r.incident, r.scenario_id, r.prediction, r.predicted_at, r.outcome, r.revealed_at, "
            "CASE WHEN r.outcome IS NULL THEN NULL ELSE r.prediction = r.outcome END AS correct "
            f"FROM predictions r JOIN participants p ON p.id = r.participant_id {where} "
            "ORDER BY r.incident, r.scenario_id, p.joined_at, p.id", params)

    def tally(self, incident: str | None = None) -> pd.DataFrame:
        """Per scenario: predictions made, how many per choice, and the share that matched the model's outcome
        among revealed ones (Wilson 95% interval)."""
        from autopsy.stats import proportion

        table = self.predictions(incident=incident)
        rows = []
        for (inc, sid), group in table.groupby(["incident", "scenario_id"], sort=True):
            revealed = group[group["outcome"].notna()]
            right = int(revealed["correct"].astype(int).sum()) if len(revealed) else 0
            est = proportion(right, len(revealed), min_n=10).to_dict()
            rows.append({"incident": inc, "scenario_id": sid, "predictions": len(group),
                         "by_choice": group["prediction"].value_counts().to_dict(), "revealed": len(revealed),
                         "correct": right, "share_correct": est})
        return pd.DataFrame(rows, columns=["incident", "scenario_id", "predictions", "by_choice", "revealed",
                                           "correct", "share_correct"])

    # -- the facilitator's session -----------------------------------------------------------------------
    def start_session(self, incident: str) -> Session:
        """Start a facilitated session on ``incident`` (ending any other): from now on only the facilitator reveals."""
        now = _now()
        with self._connect() as con:
            con.execute("UPDATE sessions SET ended_at = ? WHERE ended_at IS NULL", (now,))
            sid = con.execute("INSERT INTO sessions (incident, started_at) VALUES (?, ?)", (incident, now)).lastrowid
        return Session(sid, incident, now)

    def current_session(self) -> Session | None:
        rows = self._query("SELECT id, incident, started_at FROM sessions WHERE ended_at IS NULL "
                           "ORDER BY id DESC LIMIT 1")
        if rows.empty:
            return None
        row = rows.iloc[0]
        return Session(int(row["id"]), str(row["incident"]), str(row["started_at"]))

    def end_session(self) -> None:
        with self._connect() as con:
            con.execute("UPDATE sessions SET ended_at = ? WHERE ended_at IS NULL", (_now(),))

    def reset(self, scope: str = "scenarios") -> None:
        """``"scenarios"``: forget predictions and reveals (to play the cards again); ``"all"``: also answers,
        participants and sessions. The file and its creation date stay."""
        if scope not in ("scenarios", "all"):
            raise WorkshopError(f"reset scope must be 'scenarios' or 'all', got {scope!r}")
        with self._connect() as con:
            con.execute("DELETE FROM predictions")
            con.execute("DELETE FROM reveals")
            if scope == "all":
                for table in ("answers", "participants", "sessions"):
                    con.execute(f"DELETE FROM {table}")  # noqa: S608 -- fixed names

    # -- export -------------------------------------------------------------------------------------------
    def tables(self, banks: Mapping[str, Assessment] | None = None) -> dict[str, pd.DataFrame]:
        """Everything in the workshop as flat tables (nicknames, never row ids)."""
        tally = self.tally()
        if not tally.empty:
            share = pd.DataFrame(list(tally.pop("share_correct")))
            tally["by_choice"] = tally["by_choice"].map(lambda d: json.dumps(d, ensure_ascii=False))
            tally = pd.concat([tally, share.add_prefix("share_correct_")], axis=1)
        return {
            "participants": self._query("SELECT nickname, joined_at FROM participants ORDER BY joined_at, id"),
            "answers": self.answers(),
            "section_scores": self.section_scores(banks=banks),
            "predictions": self.predictions(),
            "scenario_tally": tally,
        }

    def to_json(self, banks: Mapping[str, Assessment] | None = None) -> str:
        """One JSON document: workshop metadata, export time and every table as a list of records."""
        doc = {"workshop": self.meta, "exported_at": _now(),
               "note": "Participants are identified by the nickname they chose; nothing else is stored."}
        for name, table in self.tables(banks).items():
            doc[name] = json.loads(table.to_json(orient="records", force_ascii=False))
        return json.dumps(doc, indent=2, ensure_ascii=False)

    def export(self, folder: str | Path, banks: Mapping[str, Assessment] | None = None) -> list[Path]:
        """Write ``<table>.csv`` for every table and ``workshop.json`` into ``folder``; returns the paths."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        written = []
        for name, table in self.tables(banks).items():
            path = folder / f"{name}.csv"
            path.write_bytes(csv_bytes(table))
            written.append(path)
        path = folder / "workshop.json"
        path.write_text(self.to_json(banks), encoding="utf-8")
        return [*written, path]


def csv_bytes(table: pd.DataFrame) -> bytes:
    """A table as CSV bytes a spreadsheet opens as UTF-8 (with a byte-order mark)."""
    buffer = io.StringIO()
    table.to_csv(buffer, index=False)
    return buffer.getvalue().encode("utf-8-sig")


def _filters(*, nickname=None, incident=None, table="a") -> tuple[str, list]:
    clauses, params = [], []
    if nickname is not None:
        clauses.append("p.nickname = ?")
        params.append(check_nickname(nickname))
    if incident is not None:
        clauses.append(f"{table}.incident = ?")
        params.append(incident)
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", params


def _scenario_key(scenario, incident) -> tuple[str, str]:
    if isinstance(scenario, Scenario):
        return scenario.id, scenario.incident
    scenario_id = str(scenario)
    return scenario_id, incident or scenario_id.split("/", 1)[0]


# -- comparisons -----------------------------------------------------------------------------------------------


def comparison(scores: pd.DataFrame, *, by: str = "incident", n_resamples: int = 2000) -> pd.DataFrame:
    """Section scores compared across incidents (``by="incident"``: mean over participants, percentile
    bootstrap 95% interval over participants) or across participants (``by="nickname"``: each one's own
    score per section, over the incidents they answered, with no interval: it is a count, not an estimate).

    Returns one row per group and section: group, section, value, low, high, n, test, warning.
    """
    from autopsy.stats import bootstrap

    if by not in ("incident", "nickname"):
        raise ValueError(f"compare by 'incident' or 'nickname', got {by!r}")
    columns = ["group", "section", "value", "low", "high", "n", "test", "warning"]
    if scores.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    if by == "nickname":
        pooled = scores.groupby(["nickname", "section"], sort=False)[["points", "max_points"]].sum().reset_index()
        for row in pooled.itertuples(index=False):
            value = row.points / row.max_points
            rows.append({"group": row.nickname, "section": row.section, "value": value, "low": value, "high": value,
                         "n": 1, "test": "points earned / points available (exact)", "warning": None})
    else:
        for (group, section), part in scores.groupby(["incident", "section"], sort=False):
            values = part["score"].to_numpy(dtype=float)
            n = len(values)
            if n >= 2:
                low, high = bootstrap(np.mean, values, n_resamples=n_resamples)
            else:
                low = high = float("nan")
            warning = ("one participant: no interval" if n == 1
                       else f"{n} participants: interval unreliable" if n < 5 else None)
            rows.append({"group": group, "section": section, "value": float(values.mean()), "low": low, "high": high,
                         "n": n, "test": "mean over participants; percentile bootstrap 95% over participants",
                         "warning": warning})
    table = pd.DataFrame(rows, columns=columns)
    table["section"] = pd.Categorical(table["section"], categories=list(SECTIONS), ordered=True)
    return table.sort_values(["section", "group"], kind="stable").reset_index(drop=True).astype({"section": str})


_HATCHES = ("", "//", "..", "xx", "\\\\", "oo", "--", "++")


def comparison_figure(table: pd.DataFrame, *, title: str = "", group_label: str = "group"):
    """Grouped bars of :func:`comparison` rows: one cluster per section, one bar per group.

    Okabe-Ito colours plus a hatch per group (colour is never the only cue), bars from zero on a 0-100%
    axis, an error bar wherever there is an interval.
    """
    from autopsy.figures import group_colours, new_figure

    sections = [s for s in SECTIONS if s in set(table["section"])]
    groups = list(dict.fromkeys(table["group"]))
    colours = group_colours(groups)
    fig = new_figure(figsize=(max(6.0, 1.3 * len(sections) + 2), 4.0))
    ax = fig.add_subplot()
    width = 0.8 / max(len(groups), 1)
    for i, group in enumerate(groups):
        part = table[table["group"] == group].set_index("section")
        xs = [j + (i - (len(groups) - 1) / 2) * width for j, s in enumerate(sections) if s in part.index]
        present = [s for s in sections if s in part.index]
        values = part.loc[present, "value"].to_numpy(dtype=float)
        ax.bar(xs, values, width=width * 0.95, color=colours[group], edgecolor="black", linewidth=0.6,
               hatch=_HATCHES[i % len(_HATCHES)], label=str(group))
        low = part.loc[present, "low"].to_numpy(dtype=float)
        high = part.loc[present, "high"].to_numpy(dtype=float)
        has = np.isfinite(low) & np.isfinite(high) & (high > low)
        if has.any():
            err = np.vstack([values[has] - low[has], high[has] - values[has]])
            ax.errorbar(np.asarray(xs)[has], values[has], yerr=np.clip(err, 0, None), fmt="none", ecolor="black",
                        capsize=3, linewidth=1)
    ax.set_xticks(range(len(sections)), [SECTIONS[s] for s in sections], rotation=20, ha="right")
    ax.set_ylim(0, 1.05)
    ax.yaxis.set_major_formatter(lambda v, _: f"{v:.0%}")
    ax.set_ylabel("share of points earned")
    ax.axhline(0, color="black", linewidth=0.8)
    if title:
        ax.set_title(title)
    ax.legend(title=group_label, fontsize=8, title_fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.spines[["top", "right"]].set_visible(False)
    return fig
