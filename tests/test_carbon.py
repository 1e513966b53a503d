"""autopsy.carbon: CodeCarbon's offline tracker around a short busy loop, JSON-safe records, no files, no network."""

import json
import math
import socket
import time

import pytest

from autopsy import carbon


def busy(seconds: float = 1.0) -> int:
    end, x = time.perf_counter() + seconds, 0
    while time.perf_counter() < end:
        x += 1
    return x


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a socket fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("autopsy.carbon tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_a_busy_loop_has_positive_finite_energy_offline(no_network, tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)  # CodeCarbon writes emissions.csv to the working folder unless told not to
    with carbon.measure_emissions(country="FRA", measure_power_secs=1) as tracking:
        assert tracking.record is None  # only set when the block exits
        busy(1.2)
    record = tracking.record
    assert record.measured, record.note
    assert 0 < record.energy_kwh < 1e-2 and math.isfinite(record.energy_kwh)
    assert 0 < record.emissions_kg_co2eq < 1e-2
    assert record.duration_s >= 1.0
    assert record.country == "FRA" and record.country_name == "France"
    assert record.carbon_intensity_g_per_kwh == pytest.approx(record.emissions_kg_co2eq / record.energy_kwh * 1000,
                                                              rel=1e-3)
    parts = record.cpu_energy_kwh + record.ram_energy_kwh + record.gpu_energy_kwh
    assert parts == pytest.approx(record.energy_kwh, rel=1e-6)
    assert f"CodeCarbon {record.codecarbon_version}" in record.method
    assert "tracking_mode=process" in record.method and "CPU:" in record.method and "France" in record.method
    assert list(tmp_path.iterdir()) == [], "CodeCarbon wrote files"
    assert "codecarbon" not in capfd.readouterr().err.lower(), "CodeCarbon's log reached stderr"


def test_the_record_and_section_are_json_safe_and_compare_with_published_footprints():
    with carbon.measure_emissions(country="deu", measure_power_secs=1) as tracking:
        busy(0.3)
    section = carbon.carbon_section(tracking.record)
    text = json.dumps(section, allow_nan=False)  # raises on NaN or non-JSON types
    assert json.loads(text)["measured"]["country"] == "DEU"
    published = {row["what"]: row for row in section["published"]}
    bloom = published["BLOOM 176B final training, dynamic power only"]
    assert bloom["co2eq_kg"] == 24_700 and bloom["energy_kwh"] == 433_196 and "Luccioni" in bloom["source"]
    assert published["BLOOM 176B final training, all processes"]["co2eq_kg"] == 50_500
    nas = published["Transformer (big) with neural architecture search"]
    assert nas["co2eq_kg"] == pytest.approx(626_155 * 0.45359237, abs=1) and "Strubell" in nas["source"]
    assert all(row["runs_of_this_size"] > 1 for row in section["published"])  # a short loop emits less than any


def test_a_body_that_raises_still_gets_a_record():
    with pytest.raises(RuntimeError, match="boom"):
        with carbon.measure_emissions(measure_power_secs=1) as tracking:
            raise RuntimeError("boom")
    assert tracking.record is not None and tracking.record.country == carbon.DEFAULT_COUNTRY


def test_a_tracker_that_cannot_start_gives_an_unmeasured_record(monkeypatch):
    def broken(*args, **kwargs):
        raise OSError("no power meters here")

    monkeypatch.setattr(carbon, "_start", broken)
    with carbon.measure_emissions() as tracking:
        pass
    record = tracking.record
    assert not record.measured and record.energy_kwh is None
    assert "no power meters here" in record.note
    json.dumps(carbon.carbon_section(record), allow_nan=False)
    assert all(row["runs_of_this_size"] is None for row in carbon.carbon_section(record)["published"])


def test_country_comes_from_the_setting_and_is_checked(monkeypatch):
    monkeypatch.setenv(carbon.COUNTRY_VARIABLE, "gbr")
    assert carbon.resolve_country() == "GBR"
    assert carbon.resolve_country("usa") == "USA"
    monkeypatch.delenv(carbon.COUNTRY_VARIABLE)
    assert carbon.resolve_country() == carbon.DEFAULT_COUNTRY == "FRA"
    with pytest.raises(ValueError, match="no offline energy mix for country 'XYZ'.*alpha-3"):
        carbon.resolve_country("XYZ")
    with pytest.raises(ValueError, match="tracking_mode"):
        with carbon.measure_emissions(tracking_mode="everything"):
            pass


def test_comparison_rows_render_as_a_report_table():
    from autopsy.story import markdown_table

    with carbon.measure_emissions(measure_power_secs=1) as tracking:
        busy(0.2)
    rows = carbon.comparison_rows(carbon.carbon_section(tracking.record))
    assert rows[0]["what"].startswith("This run (France grid") and rows[0]["runs like this one to match"] == 1
    assert len(rows) == 1 + len(carbon.PUBLISHED)
    table = markdown_table(rows, name="carbon")
    assert "BLOOM 176B final training, dynamic power only" in table and "Luccioni" in table
