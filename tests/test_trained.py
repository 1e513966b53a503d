"""Trained artefacts: trained once, cached with their provenance, re-verified on every load."""

import json

import numpy as np
import pytest

from autopsy.trained import TrainedArtefactError, data_sha256, train_or_load, weights_sha256


def _fit():
    rng = np.random.default_rng(0)
    return {"coef": rng.normal(size=(1, 4)), "intercept": np.array([0.5])}


def test_trains_once_records_provenance_and_reloads(tmp_path):
    calls = []

    def fit():
        calls.append(1)
        return _fit()

    data = {"features": data_sha256(np.arange(12.0))}
    w1, rec1 = train_or_load("toy", fit, data=data, config={"c": 1.0}, seed=0, folder=tmp_path)
    w2, rec2 = train_or_load("toy", fit, data=data, config={"c": 1.0}, seed=0, folder=tmp_path)
    assert len(calls) == 1 and rec1 == rec2
    np.testing.assert_array_equal(w1["coef"], w2["coef"])
    assert rec1.weights_sha256 == weights_sha256(w1) and rec1.data == data and rec1.seed == 0
    assert {"numpy", "python"} <= set(rec1.libraries) and len(rec1.code_sha256) == 64
    train_or_load("toy", fit, data=data, config={"c": 2.0}, seed=0, folder=tmp_path)
    assert len(calls) == 2  # another config is another artefact


def test_tampered_weights_are_refused_with_the_fix(tmp_path):
    _, record = train_or_load("toy", _fit, data={}, config={}, seed=0, folder=tmp_path)
    (folder,) = [p for p in tmp_path.iterdir() if p.name.startswith("toy-")]
    weights = dict(np.load(folder / "weights.npz"))
    weights["coef"] = weights["coef"] + 1
    np.savez(folder / "weights.npz", **weights)
    with pytest.raises(TrainedArtefactError, match="do not match their provenance.*Delete that folder"):
        train_or_load("toy", _fit, data={}, config={}, seed=0, folder=tmp_path)
    assert json.loads((folder / "provenance.json").read_text())["weights_sha256"] == record.weights_sha256
