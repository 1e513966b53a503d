"""WikiCeleb (the Twitter incident's paper profile), offline: a fake transport stands in for
Wikidata and Commons, serving a canned SPARQL answer and tiny generated PNGs."""

from __future__ import annotations

import hashlib
import inspect
import io
import json
import urllib.parse

import pandas as pd
import pytest
from PIL import Image

from incidents.twitter_crop import wikiceleb as wc

WD = "http://www.wikidata.org/entity/"
MALE, FEMALE, TRANS_WOMAN = "Q6581097", "Q6581072", "Q1052281"
WHITE_G, WHITE_SMALL_G, BLACK_G, ASIAN_G, UNMAPPED_G = "Q7325", "Q42406", "Q49085", "Q161652", "Q170217"
SMALL = {"min_ethnic_group": 3, "min_subgroup": 3}


def binding(qid, file, sex, ethnic, name=None):
    row = {
        "human": {"type": "uri", "value": WD + qid},
        "image": {"type": "uri",
                  "value": "http://commons.wikimedia.org/wiki/Special:FilePath/" + urllib.parse.quote(file)},
        "sex_or_gender": {"type": "uri", "value": WD + sex},
        "ethnic_group": {"type": "uri", "value": WD + ethnic},
    }
    row["name"] = {"type": "literal", "xml:lang": "en", "value": name or f"Person {qid}"}
    return row


def canned_results():
    rows = []
    n = iter(range(1000, 2000))

    def people(k, sex, ethnic, ext=".jpg"):
        for _ in range(k):
            q = f"Q{next(n)}"
            rows.append(binding(q, f"Portrait of {q}{ext}", sex, ethnic))

    people(4, MALE, WHITE_G)            # kept: White Male x4
    people(3, FEMALE, WHITE_G)          # kept: White Female x3
    people(3, MALE, BLACK_G)            # kept: Black Male x3
    people(3, FEMALE, BLACK_G)          # kept: Black Female x3
    people(2, FEMALE, ASIAN_G)          # Asian Female: subgroup of 2 < 3, dropped
    people(1, MALE, ASIAN_G)            # Asian Male: subgroup of 1, dropped
    people(2, MALE, WHITE_SMALL_G)      # mapped to White, but the ethnic group has only 2 images
    people(5, MALE, UNMAPPED_G)         # a big ethnic group outside the paper's mapping
    people(1, TRANS_WOMAN, WHITE_G)     # a P21 value other than male/female: dropped
    people(1, MALE, WHITE_G, ".svg")    # a drawing, not a photo: dropped
    # one person in two groups that map to different races: ambiguous, dropped
    rows.append(binding("Q900", "Mixed.jpg", FEMALE, WHITE_G))
    rows.append(binding("Q900", "Mixed.jpg", FEMALE, BLACK_G))
    # one person with two images (and a repeated row, as several occupations give): first file kept
    rows.append(binding("Q901", "B second.jpg", MALE, BLACK_G))
    rows.append(binding("Q901", "A first.jpg", MALE, BLACK_G))
    rows.append(binding("Q901", "A first.jpg", MALE, BLACK_G))
    # one person with both a male and another P21 value: ambiguous, dropped
    rows.append(binding("Q902", "Both.jpg", MALE, WHITE_G))
    rows.append(binding("Q902", "Both.jpg", TRANS_WOMAN, WHITE_G))
    return {"head": {"vars": ["human", "name", "image", "sex_or_gender", "ethnic_group"]},
            "results": {"bindings": rows}}


def png_bytes(seed: str) -> bytes:
    h = hashlib.sha256(seed.encode()).digest()
    buf = io.BytesIO()
    Image.new("RGB", (6, 4), tuple(h[:3])).save(buf, format="PNG")
    return buf.getvalue()


class FakeTransport:
    def __init__(self, results=None, gone=()):
        self.results = results or canned_results()
        self.calls = []
        self.gone = set(gone)

    def __call__(self, url, params=None):
        self.calls.append((url, params))
        if url == wc.SPARQL_ENDPOINT:
            assert params["format"] == "json" and "wdt:P172" in params["query"]
            return json.dumps(self.results).encode()
        assert url.startswith(wc.UPLOAD_ROOT + "/")
        if any(url.endswith(urllib.parse.quote(g)) for g in self.gone):
            raise wc.ImageGone(f"{url}: HTTP 404")
        return png_bytes(url)

    @property
    def image_calls(self):
        return [u for u, _ in self.calls if u != wc.SPARQL_ENDPOINT]


def refuse(url, params=None):
    raise AssertionError(f"the transport was called for {url}")


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOPSY_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def lock(tmp_path):
    return tmp_path / "pins" / "wikiceleb.lock.csv"


def test_query_asks_for_the_papers_properties():
    query = wc.build_query()
    for term in ("wdt:P31 wd:Q5", "wdt:P18", "wdt:P21", "wdt:P172", "wdt:P106", "wdt:P244", "SELECT DISTINCT"):
        assert term in query
    assert "VALUES" not in query  # every ethnic group, so the 40-image rule sees today's counts
    restricted = wc.build_query(ethnic_groups=wc.RACE_BY_ETHNIC_GROUP)
    for qid in ("Q127885", "Q42406", "Q44806", "Q539051", "Q678551", "Q726673", "Q7325", "Q79797",
                "Q179248", "Q2325516", "Q190168", "Q49085", "Q161652"):
        assert f"wd:{qid}" in restricted
    assert set(wc.GENDER_BY_QID) == {MALE, FEMALE}


def test_parse_maps_ethnic_groups_and_gender():
    df = wc.parse_results(canned_results())
    assert list(df.columns) == ["qid", "name", "file", "race", "gender", "ethnic_group"]
    assert len(df) == len(canned_results()["results"]["bindings"])
    first = df.iloc[0]
    assert first["file"] == f"Portrait_of_{first['qid']}.jpg"  # URL-decoded, spaces as underscores
    assert first["name"] == f"Person {first['qid']}"
    by_group = df.groupby("ethnic_group")["race"].first()
    assert by_group[WHITE_G] == "White" and by_group[BLACK_G] == "Black" and by_group[ASIAN_G] == "Asian"
    assert df.loc[df["ethnic_group"] == UNMAPPED_G, "race"].isna().all()
    assert df.loc[df["gender"].isna()].shape[0] == 2  # the two trans-woman rows


def test_select_applies_the_group_rules():
    df = wc.select(wc.parse_results(canned_results()), **SMALL)
    counts = df.groupby(["race", "gender"]).size().to_dict()
    # Black Male: 3 + Q901; the Asian subgroups (2 and 1) are under 3
    assert counts == {("Black", "Female"): 3, ("Black", "Male"): 4, ("White", "Female"): 3, ("White", "Male"): 4}
    assert df["qid"].is_unique
    assert not set(df["ethnic_group"]) & {WHITE_SMALL_G, UNMAPPED_G, ASIAN_G}
    assert not set(df["qid"]) & {"Q900", "Q902"}
    assert df.set_index("qid").loc["Q901", "file"] == "A_first.jpg"
    assert not df["file"].str.endswith(".svg").any()
    # the paper's thresholds are the defaults, and this small fixture passes none of them
    defaults = inspect.signature(wc.select).parameters
    assert defaults["min_ethnic_group"].default == 40 and defaults["min_subgroup"].default == 100
    assert wc.select(wc.parse_results(canned_results())).empty


def test_upload_url_follows_commons_layout():
    assert wc.upload_url("Example.jpg") == "https://upload.wikimedia.org/wikipedia/commons/a/a9/Example.jpg"
    assert wc.upload_url("A first.jpg").endswith("/A_first.jpg")
    assert wc.default_lock_path().parent == wc.assets.cache_dir() / "wikiceleb"


def test_first_load_pins_every_image(lock):
    fake = FakeTransport()
    ds = wc.load(lock_path=lock, transport=fake, **SMALL)
    assert set(ds.column_names) == {"file", "path", "race", "gender", "qid"}
    assert len(ds) == 14 and set(ds["race"]) == {"White", "Black"} and set(ds["gender"]) == {"Female", "Male"}
    assert fake.calls[0][0] == wc.SPARQL_ENDPOINT and len(fake.image_calls) == 14

    pins = pd.read_csv(lock, dtype=str, keep_default_na=False)
    assert list(pins.columns) == ["qid", "file", "url", "sha256", "size", "race", "gender", "licence"]
    assert len(pins) == 14
    for _, pin in pins.iterrows():
        data = png_bytes(pin["url"])
        assert pin["sha256"] == hashlib.sha256(data).hexdigest() and int(pin["size"]) == len(data)
        assert pin["url"] == wc.upload_url(pin["file"])
        assert "commons.wikimedia.org/wiki/File:" in pin["licence"]
    for row in ds:
        assert wc.assets.sha256_of(row["path"]) == pins.set_index("qid").loc[row["qid"], "sha256"]
    images = wc.images_dir()
    assert images.is_dir() and not list(images.glob(".*.part")) and not list(lock.parent.glob(".*.part"))


def test_second_load_verifies_without_the_network(lock):
    first = wc.load(lock_path=lock, transport=FakeTransport(), **SMALL)
    before = lock.read_bytes()
    second = wc.load(lock_path=lock, transport=refuse)
    assert sorted(second["qid"]) == sorted(first["qid"])
    assert lock.read_bytes() == before


def test_limit_per_group_pins_membership_then_fetches_on_demand(lock):
    fake = FakeTransport()
    ds = wc.load(lock_path=lock, transport=fake, limit_per_group=1, **SMALL)
    assert len(ds) == 4 and len(fake.image_calls) == 4
    pins = pd.read_csv(lock, dtype=str, keep_default_na=False)
    assert len(pins) == 14 and (pins["sha256"] != "").sum() == 4

    more = FakeTransport()
    ds = wc.load(lock_path=lock, transport=more, limit_per_group=2)
    assert len(ds) == 8 and len(more.image_calls) == 4  # only the new ones; no SPARQL query
    assert (pd.read_csv(lock, dtype=str, keep_default_na=False)["sha256"] != "").sum() == 8


def test_tampered_image_is_refused_and_refresh_is_deliberate(lock):
    ds = wc.load(lock_path=lock, transport=FakeTransport(), **SMALL)
    victim = ds[0]
    pinned = pd.read_csv(lock, dtype=str).set_index("qid").loc[victim["qid"], "sha256"]
    with open(victim["path"], "ab") as f:
        f.write(b"tampered")
    actual = wc.assets.sha256_of(victim["path"])
    with pytest.raises(wc.WikiCelebIntegrityError) as err:
        wc.load(lock_path=lock, transport=refuse)
    message = str(err.value)
    assert victim["file"] in message and pinned in message and actual in message and "refresh=True" in message

    fake = FakeTransport()
    wc.load(lock_path=lock, transport=fake, refresh=True)
    assert len(fake.image_calls) == 1
    assert wc.assets.sha256_of(victim["path"]) == pinned


def test_upstream_change_against_the_pin_is_refused(lock):
    ds = wc.load(lock_path=lock, transport=FakeTransport(), **SMALL)
    victim = ds[0]
    wc.images_dir().joinpath(victim["path"]).unlink()

    def changed(url, params=None):
        return png_bytes(url + "#new version")

    with pytest.raises(wc.WikiCelebIntegrityError, match=victim["file"]):
        wc.load(lock_path=lock, transport=changed)
    assert not wc.images_dir().joinpath(victim["path"]).exists()  # refused bytes are not cached


def test_deleted_commons_file_is_skipped_with_a_warning(lock):
    fake = FakeTransport(gone={"A_first.jpg"})
    with pytest.warns(UserWarning, match="A_first.jpg"):
        ds = wc.load(lock_path=lock, transport=fake, **SMALL)
    assert len(ds) == 13 and "Q901" not in ds["qid"]


def test_network_failure_gives_the_offline_message(lock):
    def down(url, params=None):
        raise OSError("Temporary failure in name resolution")

    with pytest.raises(wc.WikiCelebUnavailable) as err:
        wc.load(lock_path=lock, transport=down, **SMALL)
    message = str(err.value)
    assert "needs the network" in message and "lock file" in message and "quick" in message
    assert not lock.exists()


def test_default_transport_honours_autopsy_offline(monkeypatch):
    monkeypatch.setenv("AUTOPSY_OFFLINE", "1")
    with pytest.raises(wc.WikiCelebUnavailable, match="needs the network.*AUTOPSY_OFFLINE"):
        wc.load()
    with pytest.raises(wc.WikiCelebUnavailable):
        wc.urllib_get(wc.SPARQL_ENDPOINT, {"query": "ASK {}", "format": "json"})
    assert isinstance(wc.WikiCelebUnavailable("x"), wc.assets.AssetUnavailableError)


def test_docstring_cites_the_paper_and_the_perceived_labels():
    doc = wc.__doc__
    assert "2105.08667" in doc and "Yee" in doc
    assert "perceived" in doc and "Wikidata" in doc and "licence" in doc.lower()
