"""Sharded per-item passes on the local engine: Parquet shards, resume, bad items (tiny synthetic inputs)."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from autopsy.contract import Config
from autopsy.data import load_image
from autopsy.engines import ItemError, LocalEngine
from autopsy.runner import RunContext
from autopsy.shards import map_shards, read_shards


def _ctx(out, engine=None):
    return RunContext("alpha", Config(), "smoke", out, engine or LocalEngine())


def _square(state, x):
    return {"x": x, "square": state * x * x, "vector": np.arange(3.0) * x}


def test_rows_come_back_in_item_order_and_one_parquet_file_per_shard(tmp_path):
    seen = []
    ctx = _ctx(tmp_path)
    ctx.report = lambda f, m: seen.append((f, m))
    done = map_shards(ctx, "squares", _square, range(10), setup=lambda: 2, shard_size=4)
    assert done.table["item"].tolist() == list(range(10)) and done.table["square"].tolist() == [2 * x * x for x in
                                                                                               range(10)]
    assert np.array_equal(done.table["vector"][3], [0.0, 3.0, 6.0])
    assert sorted(p.name for p in done.folder.iterdir()) == [f"squares-0000{k}.parquet" for k in range(3)]
    assert (done.n_shards, done.reused, done.exclusions.n_listed, done.exclusions.items) == (3, 0, 10, ())
    assert seen[-1][0] == 1.0 and "10/10" in seen[-1][1] and "/s, ETA" in seen[-1][1]
    again, excluded = read_shards(tmp_path / "shards", "squares")  # a finished pass is re-analysed from its files
    pd.testing.assert_frame_equal(again, done.table)


def test_an_interrupted_pass_resumes_without_redoing_finished_shards(tmp_path):
    calls, interrupt = [], [True]

    def flaky(state, x):
        calls.append(x)
        if x == 9 and interrupt.pop() if interrupt else False:  # the first attempt dies in the third shard
            raise KeyboardInterrupt
        return {"x": x}

    with pytest.raises(KeyboardInterrupt):
        map_shards(_ctx(tmp_path), "xs", flaky, range(12), shard_size=4)
    assert calls == list(range(10)) and len(list((tmp_path / "shards").glob("xs-*.parquet"))) == 2
    calls.clear()
    done = map_shards(_ctx(tmp_path), "xs", flaky, range(12), shard_size=4)
    assert calls == [8, 9, 10, 11] and done.reused == 2 and done.table["x"].tolist() == list(range(12))
    calls.clear()
    other = map_shards(_ctx(tmp_path), "xs", flaky, range(1, 13), shard_size=4)  # other items: nothing reused
    assert other.reused == 0 and len(calls) == 12


def _photos(tmp_path, n=6, bad=(3,)):
    rows = []
    for k in range(n):
        path = tmp_path / f"photo{k}.png"
        if k in bad:
            path.write_bytes(b"not an image")
        else:
            Image.new("RGB", (20 + k, 24), (10 * k, 0, 0)).save(path)
        rows.append({"file": path.name, "path": str(path)})
    return rows


def _width(state, item):
    image = load_image(item["path"])  # loaded in the worker, from its path
    return {"file": item["file"], "width": image.width}


def test_a_bad_photo_stops_the_pass_naming_its_path(tmp_path):
    items = _photos(tmp_path)
    with pytest.raises(ItemError, match=r"photos item 3 \(.*photo3.png\) failed: ImageError.*--on-error skip"):
        map_shards(_ctx(tmp_path / "run"), "photos", _width, items, shard_size=2)
    assert [p.name for p in sorted((tmp_path / "run" / "shards").glob("*.parquet"))] == ["photos-00000.parquet"]


def test_a_bad_photo_is_skipped_and_recorded_with_skip(tmp_path):
    items = _photos(tmp_path, bad=(1, 4))
    done = map_shards(_ctx(tmp_path / "run", LocalEngine(on_error="skip")), "photos", _width, items, shard_size=2)
    assert done.table["item"].tolist() == [0, 2, 3, 5] and done.table["width"].tolist() == [20, 22, 23, 25]
    record = done.exclusions.to_dict()
    assert record["n_listed"] == 6 and record["n_excluded"] == 2
    assert [p["file"] for p in record["photos"]] == [items[1]["path"], items[4]["path"]]
    assert all("ImageError" in p["reason"] for p in record["photos"])
    assert (done.folder / "photos-exclusions.csv").is_file()


def test_several_rows_per_item_and_clear_errors_for_what_cannot_be_stored(tmp_path):
    done = map_shards(_ctx(tmp_path), "pairs", lambda s, x: [{"x": x, "k": 0}, {"x": x, "k": 1}], range(3))
    assert done.table[["item", "k"]].values.tolist() == [[0, 0], [0, 1], [1, 0], [1, 1], [2, 0], [2, 1]]
    with pytest.raises(TypeError, match="returned a float for 1; a sharded pass needs a dict"):
        map_shards(_ctx(tmp_path), "floats", lambda s, x: float(x), [1])
    with pytest.raises(ValueError, match="cannot be stored in Parquet.*1-D arrays"):
        map_shards(_ctx(tmp_path), "masks", lambda s, x: {"mask": np.zeros((2, 2, 2))}, [1])
    with pytest.raises(ValueError, match="on_error must be 'stop' or 'skip'"):
        LocalEngine(on_error="ignore")


def test_a_plain_map_stops_at_a_bad_item_and_names_it(tmp_path):
    Image.new("RGB", (20, 20)).save(tmp_path / "a.png")
    with pytest.raises(ItemError, match=r"images item 1 \(.*b.png\) failed: .*cannot skip one"):
        LocalEngine(on_error="skip").map(lambda s, p: load_image(p), [tmp_path / "a.png", tmp_path / "b.png"],
                                         desc="images")
