"""WikiCeleb: the ``paper`` profile's images, rebuilt from Wikidata and Wikimedia Commons.

Yee, Tantipongpipat & Mishra, "Image Cropping on Twitter: Fairness Metrics, their Limitations,
and the Importance of Representation, Design, and Agency", CSCW 2021 (arXiv:2105.08667), measured
Twitter's saliency cropping on "WikiCeleb": photos of people on Wikidata with an image (P18), a sex
or gender (P21), an ethnic group (P172), an occupation (P106) and a Library of Congress authority
ID (P244). Their public code (github.com/twitter-research/image-crop-analysis, notebook "Data
Preparation") starts from the saved SPARQL results and names one local file per person; the
query and the group rules are described in the paper. This module re-runs that pipeline:

1. :func:`build_query` — the SPARQL query (sent to https://query.wikidata.org/sparql);
2. :func:`parse_results` — the JSON results as a table, ethnic groups mapped to census race;
3. :func:`select` — the paper's rules: ethnic groups with at least 40 images are kept and mapped
   to a race (White, Black, Asian; the rest dropped), gender is Male or Female from P21 (other
   values dropped), and race x gender subgroups with fewer than 100 images are dropped;
4. :func:`fetch_images` — each image downloaded once from Commons and pinned by SHA-256 in a lock
   file on first fetch, then verified on every later load;
5. :func:`load` — all of it, as a ``datasets.Dataset`` (file, path, race, gender, qid).

**Labels.** Race and gender here are perceived / annotated attributes: Wikidata editors' statements
of "ethnic group" and "sex or gender", mapped by the paper's authors to census race categories. They
are not how the people pictured identify, and the mapping from ethnic group to race is itself a
choice the paper made. Races are capitalised ("White", "Black", "Asian") to match FairFace's labels.

**Licences.** Every image keeps its own Wikimedia Commons licence (they vary: CC BY, CC BY-SA,
public domain, ...). The lock file records each file's Commons page as its licence source; check
it before redistributing an image. Nothing here relicenses the photos.

**Sizes.** The paper's ``no_scaling`` condition fed the images at their stored sizes, so the
original upload is downloaded (``https://upload.wikimedia.org/wikipedia/commons/<a>/<ab>/<file>``,
the address ``Special:FilePath/<file>`` redirects to) rather than a ``?width=`` thumbnail, which
would be a re-encoded, resized copy and would change what the saliency model sees.

**Pins.** The lock file (CSV, default ``cache_dir()/wikiceleb/wikiceleb.lock.csv``) lists the
selected people (qid, file, url, race, gender, licence) and, once an image has been fetched, its
``sha256`` and ``size``. When the lock exists, :func:`load` takes the membership from it and does
not query Wikidata again, so a run is reproducible offline from a pre-filled cache + lock file.
A cached image whose hash differs from its pin is an error; to accept a deliberate change (the
file was replaced on Commons), pass ``refresh=True`` to :func:`fetch_images` / :func:`load`, or
delete the lock file to rebuild the set from today's Wikidata.

Departures, stated: a person listed with several images keeps the first file name (the paper's code
kept one file per person); a person whose kept ethnic groups map to different races, or with more
than one sex-or-gender value, is dropped as ambiguous; files that are not raster photos (SVG, PDF,
video, ...) are dropped before the subgroup sizes are counted, since the saliency model cannot read
them.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from pathlib import Path
from typing import Callable

import pandas as pd

from autopsy import assets
from autopsy.assets import AssetIntegrityError, AssetUnavailableError

CITATION = (
    "Yee, K., Tantipongpipat, U. & Mishra, S. Image Cropping on Twitter: Fairness Metrics, their "
    "Limitations, and the Importance of Representation, Design, and Agency. Proc. ACM Hum.-Comput. "
    "Interact. 5, CSCW2 (2021). arXiv:2105.08667"
)
SOURCE_CODE = "https://github.com/twitter-research/image-crop-analysis"
SPARQL_ENDPOINT = "https://query.wikidata.org/sparql"
USER_AGENT = (
    "AI-Autopsy-WikiCeleb/0.1 (research reproduction of Yee et al. 2021, arXiv:2105.08667; "
    "https://github.com/twitter-research/image-crop-analysis) python-urllib"
)
UPLOAD_ROOT = "https://upload.wikimedia.org/wikipedia/commons"
FILE_PAGE_ROOT = "https://commons.wikimedia.org/wiki/File:"

#: The paper's thresholds.
MIN_ETHNIC_GROUP_IMAGES = 40
MIN_SUBGROUP_IMAGES = 100

#: Ethnic groups (P172) kept by the paper, mapped to census race.
RACE_BY_ETHNIC_GROUP = {
    **{q: "White" for q in ("Q127885", "Q42406", "Q44806", "Q539051", "Q678551",
                            "Q726673", "Q7325", "Q79797", "Q179248", "Q2325516")},
    **{q: "Black" for q in ("Q190168", "Q49085")},
    "Q161652": "Asian",
}
#: Sex or gender (P21) values kept; the others are dropped.
GENDER_BY_QID = {"Q6581097": "Male", "Q6581072": "Female"}

#: Extensions the image loader can read (P18 also holds SVG drawings, PDFs, videos...).
RASTER_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".tif", ".tiff", ".webp", ".bmp"}

LOCK_COLUMNS = ["qid", "file", "url", "sha256", "size", "race", "gender", "licence"]
TABLE_COLUMNS = ["qid", "name", "file", "race", "gender", "ethnic_group"]

Transport = Callable[..., bytes]


class WikiCelebUnavailable(AssetUnavailableError):
    """The network is needed (no lock file, or images missing from the cache) and cannot be reached."""


class WikiCelebIntegrityError(AssetIntegrityError):
    """A cached or downloaded image does not match the SHA-256 pinned in the lock file."""


class ImageGone(LookupError):
    """The server says the file no longer exists (HTTP 404/410): it was deleted or renamed on Commons."""


def cache_root() -> Path:
    return assets.cache_dir() / "wikiceleb"


def default_lock_path() -> Path:
    return cache_root() / "wikiceleb.lock.csv"


def images_dir() -> Path:
    """Where the images live (named ``<qid>.<ext>``), whichever lock file pins them."""
    return cache_root() / "images"


# --------------------------------------------------------------------------- the network


def _offline_message(reason: str) -> str:
    return (
        f"the WikiCeleb 'paper' profile needs the network ({reason}): it queries Wikidata "
        f"({SPARQL_ENDPOINT}) and downloads the photos from Wikimedia Commons. Either run with "
        f"network access (unset {assets.OFFLINE_ENV}), or provide a pre-filled cache and lock file "
        f"({default_lock_path()} and its images/ folder; set {assets.CACHE_ENV} to move it), or use "
        f"the offline 'quick' profile (FairFace), e.g. `autopsy run twitter_crop --profile quick`."
    )


def urllib_get(url: str, params: dict | None = None, *, timeout: float = 120.0, attempts: int = 4) -> bytes:
    """GET ``url`` (with query ``params``) and return the body; the default transport.

    Sends a descriptive User-Agent (Wikimedia's policy), retries 429/5xx with backoff honouring
    ``Retry-After``, raises :class:`ImageGone` for 404/410 and :class:`WikiCelebUnavailable`
    when ``AUTOPSY_OFFLINE`` is set. Other failures surface as ``OSError`` (urllib's URLError).
    """
    if os.environ.get(assets.OFFLINE_ENV, "") not in ("", "0"):
        raise WikiCelebUnavailable(_offline_message(f"{assets.OFFLINE_ENV} is set"))
    if params:
        url = f"{url}?{urllib.parse.urlencode(params)}"
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    for attempt in range(attempts):
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.read()
        except urllib.error.HTTPError as err:
            if err.code in (404, 410):
                raise ImageGone(f"{url}: HTTP {err.code}") from None
            if err.code in (429, 500, 502, 503, 504) and attempt < attempts - 1:
                retry_after = err.headers.get("Retry-After", "") if err.headers else ""
                time.sleep(float(retry_after) if retry_after.isdigit() else 2.0 * 2**attempt)
                continue
            raise
    raise AssertionError("unreachable")  # pragma: no cover


def _call(transport: Transport, url: str, params: dict | None = None) -> bytes:
    """Call the transport; turn network failures into the offline message."""
    try:
        return transport(url, params)
    except (WikiCelebUnavailable, ImageGone):
        raise
    except OSError as err:
        raise WikiCelebUnavailable(_offline_message(f"fetching {url} failed: {err}")) from None


# --------------------------------------------------------------------------- query and rules


def build_query(*, ethnic_groups=None, limit: int | None = None) -> str:
    """The SPARQL query for people with an image, sex or gender, ethnic group, occupation and LoC ID.

    As in the paper, every ethnic group is returned (``ethnic_groups=None``), so that the 40-image
    rule in :func:`select` is applied to today's counts. ``ethnic_groups`` (QIDs) restricts the
    query to those groups, for a lighter request. Occupation and the LoC authority ID are required
    but not returned, so a person with several occupations is one row, not many.
    """
    values = ""
    if ethnic_groups is not None:
        values = "  VALUES ?ethnic_group { " + " ".join(f"wd:{q}" for q in sorted(ethnic_groups)) + " }\n"
    query = (
        "SELECT DISTINCT ?human ?name ?image ?sex_or_gender ?ethnic_group WHERE {\n"
        f"{values}"
        "  ?human wdt:P31 wd:Q5 ;\n"           # instance of: human
        "         wdt:P18 ?image ;\n"          # image
        "         wdt:P21 ?sex_or_gender ;\n"  # sex or gender
        "         wdt:P172 ?ethnic_group ;\n"  # ethnic group
        "         wdt:P106 ?occupation ;\n"    # occupation
        "         wdt:P244 ?loc_aid .\n"       # Library of Congress authority ID
        '  OPTIONAL { ?human rdfs:label ?name . FILTER(LANG(?name) = "en") }\n'
        "}"
    )
    if limit is not None:
        query += f"\nLIMIT {int(limit)}"
    return query


def run_query(query: str | None = None, *, transport: Transport | None = None) -> dict:
    """Send the query to the Wikidata endpoint and return the decoded JSON."""
    import json

    body = _call(transport or urllib_get, SPARQL_ENDPOINT, {"query": query or build_query(), "format": "json"})
    return json.loads(body)


def _last_segment(value: str) -> str:
    return urllib.parse.unquote(value.rsplit("/", 1)[-1])


def parse_results(results: dict) -> pd.DataFrame:
    """SPARQL JSON results -> one row per binding: qid, name, file, race, gender, ethnic_group.

    ``file`` is the Commons file name (spaces as underscores); ``race`` is ``None`` for an ethnic
    group outside the paper's mapping and ``gender`` is ``None`` for P21 values other than male
    or female: :func:`select` drops those rows.
    """
    rows = []
    for binding in results["results"]["bindings"]:
        qid = _last_segment(binding["human"]["value"])
        ethnic = _last_segment(binding["ethnic_group"]["value"])
        sex = _last_segment(binding["sex_or_gender"]["value"])
        rows.append({
            "qid": qid,
            "name": binding.get("name", {}).get("value", ""),
            "file": _last_segment(binding["image"]["value"]).replace(" ", "_"),
            "race": RACE_BY_ETHNIC_GROUP.get(ethnic),
            "gender": GENDER_BY_QID.get(sex),
            "ethnic_group": ethnic,
        })
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def select(df: pd.DataFrame, *, min_ethnic_group: int = MIN_ETHNIC_GROUP_IMAGES,
           min_subgroup: int = MIN_SUBGROUP_IMAGES) -> pd.DataFrame:
    """Apply the paper's rules; one row per person, sorted by race, gender and qid.

    1. ethnic groups with at least ``min_ethnic_group`` people (images) are kept, and of those
       only the ones the paper mapped to a race;
    2. gender must be Male or Female; people with any other or several P21 values are dropped;
    3. one image per person (the first file name), raster formats only; people whose kept groups
       map to more than one race are dropped;
    4. race x gender subgroups with fewer than ``min_subgroup`` people are dropped.
    """
    df = df.copy()
    per_group = df.groupby("ethnic_group")["qid"].nunique()
    big = set(per_group[per_group >= min_ethnic_group].index)
    df = df[df["ethnic_group"].isin(big) & df["race"].notna()]
    if df.empty:
        return pd.DataFrame(columns=TABLE_COLUMNS)

    genders = df.groupby("qid")["gender"].agg(lambda s: frozenset(s.fillna("?")))
    races = df.groupby("qid")["race"].nunique()
    keep = [q for q in genders.index if len(genders[q]) == 1 and "?" not in genders[q] and races[q] == 1]
    df = df[df["qid"].isin(keep)]
    df = df[df["file"].map(lambda f: Path(f).suffix.lower() in RASTER_SUFFIXES)]
    df = df.sort_values(["qid", "file", "ethnic_group"]).drop_duplicates("qid", keep="first")

    sizes = df.groupby(["race", "gender"])["qid"].transform("size")
    df = df[sizes >= min_subgroup]
    return df.sort_values(["race", "gender", "qid"]).reset_index(drop=True)[TABLE_COLUMNS]


# --------------------------------------------------------------------------- files and the lock


def upload_url(file: str) -> str:
    """The original upload's address: Commons stores ``<file>`` under md5(name)[0]/md5(name)[:2]."""
    name = file.replace(" ", "_")
    digest = hashlib.md5(name.encode("utf-8"), usedforsecurity=False).hexdigest()
    return f"{UPLOAD_ROOT}/{digest[0]}/{digest[:2]}/{urllib.parse.quote(name)}"


def licence_note(file: str) -> str:
    page = FILE_PAGE_ROOT + urllib.parse.quote(file.replace(" ", "_"))
    return f"Wikimedia Commons licence of this file; see {page}"


def local_name(qid: str, file: str) -> str:
    """One file per person, named by QID (as the paper's code did), with the Commons extension."""
    return f"{qid}{Path(file).suffix.lower()}"


def read_lock(lock_path) -> pd.DataFrame:
    lock_path = Path(lock_path)
    table = pd.read_csv(lock_path, dtype=str, keep_default_na=False)
    missing = [c for c in LOCK_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"lock file {lock_path} lacks the column(s) {missing}; delete it to rebuild the set")
    return table[LOCK_COLUMNS]


def _atomic_write(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_lock(lock_path, table: pd.DataFrame) -> None:
    buffer = io.StringIO()
    table[LOCK_COLUMNS].to_csv(buffer, index=False, quoting=csv.QUOTE_MINIMAL)
    _atomic_write(Path(lock_path), buffer.getvalue().encode("utf-8"))


def _lock_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Lock entries (hash still blank) for the rows of a selection table."""
    return pd.DataFrame({
        "qid": df["qid"], "file": df["file"], "url": df["file"].map(upload_url), "sha256": "", "size": "",
        "race": df["race"], "gender": df["gender"], "licence": df["file"].map(licence_note),
    }, columns=LOCK_COLUMNS)


def _limit(df: pd.DataFrame, limit_per_group: int | None) -> pd.DataFrame:
    if limit_per_group is None:
        return df
    return df.groupby(["race", "gender"], sort=False, group_keys=False).head(limit_per_group)


def _mismatch(name: str, path: Path, expected: str, actual: str, lock_path: Path, origin: str) -> str:
    return (
        f"WikiCeleb image {name} ({path}) does not match its pin in {lock_path}: expected SHA-256 "
        f"{expected}, got {actual} ({origin}). If the change is deliberate (the file was replaced on "
        f"Commons), re-pin it with wikiceleb.load(refresh=True) / fetch_images(..., refresh=True), "
        f"or delete that row (or the whole lock file) to rebuild; otherwise delete {path} to re-download it."
    )


def fetch_images(df: pd.DataFrame, *, lock_path=None, transport: Transport | None = None,
                 session: Transport | None = None, limit_per_group: int | None = None,
                 refresh: bool = False) -> pd.DataFrame:
    """Download (once) and verify the images of ``df``; return it with ``path`` and ``sha256``.

    ``df`` has at least qid, file, race and gender (a :func:`select` table or the lock file); all
    of its people enter the lock file, and ``limit_per_group`` then fetches only the first N of
    every race x gender cell. A cached image is checked against its pinned SHA-256 without calling
    the transport; a missing one is downloaded, checked against its pin if it has one, else pinned
    now (first fetch). The lock is rewritten atomically as pins are added and keeps the entries of
    people not in ``df``. ``refresh=True`` re-downloads images that fail their check and pins the
    new bytes (a deliberate re-pin). Files Commons no longer has (HTTP 404/410) are skipped with a
    warning and listed in ``result.attrs["gone"]``. ``session`` is an alias of ``transport``.
    """
    transport = transport or session or urllib_get
    lock_path = Path(lock_path) if lock_path is not None else default_lock_path()
    folder = images_dir()
    df = df.reset_index(drop=True)

    lock = read_lock(lock_path) if lock_path.is_file() else pd.DataFrame(columns=LOCK_COLUMNS, dtype=str)
    entries = {row["qid"]: dict(row) for _, row in lock.iterrows()}
    order = list(entries)
    new_people = False
    for _, row in _lock_rows(df).iterrows():
        if row["qid"] not in entries:
            entries[row["qid"]] = dict(row)
            order.append(row["qid"])
            new_people = True

    def save():
        write_lock(lock_path, pd.DataFrame([entries[q] for q in order], columns=LOCK_COLUMNS))

    if new_people:
        save()  # the membership is pinned before any image is fetched
    df = _limit(df, limit_per_group)
    paths, hashes, gone, pending = [], [], [], 0
    try:
        for _, row in df.iterrows():
            entry = entries[row["qid"]]
            path = folder / local_name(row["qid"], entry["file"])
            pinned = entry["sha256"]
            if path.is_file():
                actual = assets.sha256_of(path)
                if not pinned:  # written by an interrupted run before its pin was saved
                    entry.update(sha256=actual, size=str(path.stat().st_size))
                    pending += 1
                elif actual != pinned:
                    if not refresh:
                        raise WikiCelebIntegrityError(
                            _mismatch(entry["file"], path, pinned, actual, lock_path, "cached file"))
                    path.unlink()
            if not path.is_file():
                try:
                    data = _call(transport, entry["url"])
                except ImageGone as err:
                    warnings.warn(f"WikiCeleb: {entry['file']} ({row['qid']}) is gone from Commons ({err}); skipped")
                    gone.append(row["qid"])
                    paths.append("")
                    hashes.append("")
                    continue
                actual = hashlib.sha256(data).hexdigest()
                if pinned and actual != pinned and not refresh:
                    raise WikiCelebIntegrityError(_mismatch(entry["file"], path, pinned, actual, lock_path,
                                                            f"downloaded from {entry['url']}; not cached"))
                _atomic_write(path, data)
                entry.update(sha256=actual, size=str(len(data)))
                pending += 1
            if pending >= 50:
                save()
                pending = 0
            paths.append(str(path))
            hashes.append(entry["sha256"])
    finally:
        if pending:
            save()
    out = df.assign(path=paths, sha256=hashes)
    out = out[~out["qid"].isin(gone)].reset_index(drop=True)
    out.attrs["gone"] = gone
    return out


# --------------------------------------------------------------------------- the profile


def load(*, limit_per_group: int | None = None, lock_path=None, transport: Transport | None = None,
         refresh: bool = False, min_ethnic_group: int = MIN_ETHNIC_GROUP_IMAGES,
         min_subgroup: int = MIN_SUBGROUP_IMAGES):
    """WikiCeleb as a ``datasets.Dataset`` with columns file, path, race, gender, qid.

    With a lock file, its membership is used (no Wikidata query) and the images are verified;
    without one, Wikidata is queried, the paper's rules applied and the lock written. Race is
    "White"/"Black"/"Asian", gender "Female"/"Male" — perceived attributes from Wikidata.
    """
    import datasets

    transport = transport or urllib_get
    lock_path = Path(lock_path) if lock_path is not None else default_lock_path()
    if lock_path.is_file():
        table = read_lock(lock_path)
    else:
        table = select(parse_results(run_query(transport=transport)),
                       min_ethnic_group=min_ethnic_group, min_subgroup=min_subgroup)
        if table.empty:
            raise ValueError("the Wikidata query returned no person who passes the paper's rules; nothing to load")
    fetched = fetch_images(table, lock_path=lock_path, transport=transport,
                           limit_per_group=limit_per_group, refresh=refresh)
    columns = ["file", "path", "race", "gender", "qid"]
    return datasets.Dataset.from_pandas(fetched[columns].astype(str), preserve_index=False)
