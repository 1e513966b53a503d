"""A run's energy and emissions, measured offline with CodeCarbon, beside published training footprints.

::

    from autopsy.carbon import carbon_section, measure_emissions

    with measure_emissions(country="FRA") as tracking:
        run_the_investigation()
    record = tracking.record            # a frozen CarbonRecord, set when the block exits
    section = carbon_section(record)    # JSON-safe: the measurement beside PUBLISHED footprints

**Method.** CodeCarbon's ``OfflineEmissionsTracker`` (Courty et al., *mlco2/codecarbon*,
doi:10.5281/zenodo.11171501) samples power while the block runs and integrates it over time:
the CPU from Intel RAPL energy counters where the kernel exposes them, otherwise the CPU's TDP
(from CodeCarbon's hardware table, or a generic value for an unknown model) times this process's
CPU load, with a floor of 10% of TDP; RAM from an estimated number of memory modules; NVIDIA GPUs
through NVML. Energy becomes CO₂eq with the **country's average grid carbon intensity** from the
energy-mix table that ships with CodeCarbon, so nothing is fetched over the network and nothing is
written to disk. The record names the CodeCarbon version, how each component's power was obtained
and the intensity used, so a reader can rescale it to another grid. These are estimates: a TDP
model can be off by a factor of two, and a single run has no sampling interval to report.

**Tracking mode.** ``"process"`` (the default here) counts the CPU load of this process and its
children, not the whole machine's: on a shared machine the lab should not be charged for its
neighbours. ``"machine"`` counts everything.

**Country.** The ISO 3166-1 alpha-3 code comes from the ``country`` argument, else the environment
variable ``AUTOPSY_CARBON_COUNTRY``, else :data:`DEFAULT_COUNTRY` = ``"FRA"``. France is the default
because the lab's workshops and the BLOOM footprint it is compared with (trained on the Jean Zay
cluster near Paris) share its grid. French electricity is among the least carbon-intensive
(about 56 gCO₂eq/kWh in CodeCarbon's table, against about 370 for the USA and 580 for China):
set the country where the lab actually runs, or the emissions will look better than they are.

**Published footprints** (:data:`PUBLISHED`): Strubell, Ganesh & McCallum (2019), "Energy and
Policy Considerations for Deep Learning in NLP", ACL, Tables 1 and 3 (pounds of CO₂e converted to
kg; US-average grid and a PUE of 1.58 as in the paper); Luccioni, Viguier & Ligozat (2023),
"Estimating the Carbon Footprint of BLOOM, a 176B Parameter Language Model", JMLR 24(253).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass

__all__ = ["DEFAULT_COUNTRY", "PUBLISHED", "CarbonRecord", "Tracking", "carbon_section", "comparison_rows",
           "country_names", "measure_emissions"]

DEFAULT_COUNTRY = "FRA"
COUNTRY_VARIABLE = "AUTOPSY_CARBON_COUNTRY"
TRACKING_MODES = ("process", "machine")
POUND_KG = 0.45359237

STRUBELL = ("Strubell, E., Ganesh, A. & McCallum, A. Energy and Policy Considerations for Deep Learning in NLP. "
            "ACL 2019. https://doi.org/10.18653/v1/P19-1355")
LUCCIONI = ("Luccioni, A. S., Viguier, S. & Ligozat, A.-L. Estimating the Carbon Footprint of BLOOM, a 176B "
            "Parameter Language Model. JMLR 24(253):1-15, 2023. https://jmlr.org/papers/v24/23-0069.html")


def _row(what, co2eq_kg, energy_kwh, detail, source, kind="training"):
    return {"what": what, "kind": kind, "co2eq_kg": co2eq_kg, "energy_kwh": energy_kwh, "detail": detail,
            "source": source}


#: Published footprints to show beside a run (kg CO₂eq; energy where the source gives it).
PUBLISHED: tuple[dict, ...] = (
    _row("Transformer (big), one training run", round(192 * POUND_KG, 1), 201,
         "8 × P100 GPUs for 84 h; 192 lbs CO₂e (Table 3; energy is kWh × PUE 1.58)", STRUBELL),
    _row("BERT base, one training run", round(1438 * POUND_KG), 1507,
         "64 × V100 GPUs for 79 h; 1,438 lbs CO₂e (Table 3; energy is kWh × PUE 1.58)", STRUBELL),
    _row("Transformer (big) with neural architecture search", round(626155 * POUND_KG), 656347,
         "P100 GPUs, 274,120 h; 626,155 lbs CO₂e (Table 3; energy is kWh × PUE 1.58)", STRUBELL),
    _row("BLOOM 176B final training, dynamic power only", 24_700, 433_196,
         "1.08 million A100 GPU-hours on Jean Zay (France, about 57 gCO₂eq/kWh); 24.7 t CO₂eq", LUCCIONI),
    _row("BLOOM 176B final training, all processes", 50_500, None,
         "dynamic 24.7 t + idle infrastructure 14.6 t + embodied (manufacturing) 11.2 t = 50.5 t CO₂eq", LUCCIONI),
    _row("Air travel, one passenger, New York ↔ San Francisco", round(1984 * POUND_KG), None,
         "1,984 lbs CO₂e (Table 1), an everyday reference", STRUBELL, kind="reference"),
)


@dataclass(frozen=True)
class CarbonRecord:
    """One run's measured energy and emissions and how they were obtained (JSON-safe via :meth:`to_dict`).

    ``energy_kwh`` and ``emissions_kg_co2eq`` are None when the tracker failed; ``note`` says why.
    """

    energy_kwh: float | None
    emissions_kg_co2eq: float | None
    duration_s: float
    country: str
    country_name: str | None
    carbon_intensity_g_per_kwh: float | None
    cpu_energy_kwh: float | None
    ram_energy_kwh: float | None
    gpu_energy_kwh: float | None
    tracking_mode: str
    method: str
    codecarbon_version: str
    measured_at: str  # UTC, ISO 8601, when the block ended
    note: str | None = None

    def to_dict(self) -> dict:
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, float) and not math.isfinite(value):
                out[key] = None
        return out

    @property
    def measured(self) -> bool:
        return self.energy_kwh is not None


class Tracking:
    """What :func:`measure_emissions` yields; ``record`` is set when the ``with`` block exits."""

    def __init__(self, country: str, tracking_mode: str):
        self.country = country
        self.tracking_mode = tracking_mode
        self.record: CarbonRecord | None = None


def country_names() -> dict[str, str]:
    """ISO alpha-3 code -> country name, for every country CodeCarbon has an offline energy mix for."""
    from codecarbon.input import DataSource

    return {code: row["country_name"] for code, row in DataSource().get_global_energy_mix_data().items()}


def resolve_country(country: str | None = None) -> str:
    """The country to use (argument, else ``$AUTOPSY_CARBON_COUNTRY``, else FRA), checked against CodeCarbon's table."""
    code = (country or os.environ.get(COUNTRY_VARIABLE) or DEFAULT_COUNTRY).strip().upper()
    known = country_names()
    if code not in known:
        where = "country" if country else (COUNTRY_VARIABLE if os.environ.get(COUNTRY_VARIABLE) else "the default")
        raise ValueError(f"carbon: no offline energy mix for country {code!r} (from {where}); use an ISO 3166-1 "
                         f"alpha-3 code such as FRA, DEU, GBR, USA or IND ({len(known)} are known: "
                         "autopsy.carbon.country_names())")
    return code


@contextlib.contextmanager
def _quiet_codecarbon():
    """CodeCarbon logs at INFO to stderr by default; the lab keeps only its errors."""
    logger = logging.getLogger("codecarbon")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def measure_emissions(*, country: str | None = None, tracking_mode: str = "process",
                      measure_power_secs: float = 10.0):
    """Measure the energy and emissions of the ``with`` block; the yielded :class:`Tracking` gets ``.record``.

    Offline and side-effect free: CodeCarbon's outputs are all switched off (its working folder is a
    temporary directory, removed afterwards) and its logging is limited to errors. A failure of the
    tracker itself never fails the run: the record then carries ``None`` values and a ``note``.
    Exceptions raised inside the block propagate after the record is made.
    """
    if tracking_mode not in TRACKING_MODES:
        raise ValueError(f"carbon: tracking_mode must be one of {', '.join(TRACKING_MODES)}; got {tracking_mode!r}")
    if not measure_power_secs > 0:
        raise ValueError(f"carbon: measure_power_secs must be positive; got {measure_power_secs!r}")
    code = resolve_country(country)
    tracking = Tracking(code, tracking_mode)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="autopsy-carbon-") as workdir, _quiet_codecarbon():
        tracker, error = None, None
        try:
            tracker = _start(code, tracking_mode, measure_power_secs, workdir)
        except Exception as err:  # noqa: BLE001 -- the run matters more than its footprint
            error = f"the tracker did not start: {type(err).__name__}: {err}"
        try:
            yield tracking
        finally:
            tracking.record = _finish(tracker, error, code, tracking_mode, time.perf_counter() - started)


def _start(country: str, tracking_mode: str, measure_power_secs: float, workdir: str):
    from codecarbon import OfflineEmissionsTracker

    tracker = OfflineEmissionsTracker(
        country_iso_code=country, tracking_mode=tracking_mode, measure_power_secs=measure_power_secs,
        output_methods=[], output_dir=workdir, emissions_endpoint=None, log_level="error",
        allow_multiple_runs=True, force_carbon_intensity_g_co2e_kwh=None, cloud_provider=None, cloud_region=None,
        pue=1.0, project_name="ai-autopsy",
    )
    tracker.start()
    return tracker


def _finish(tracker, error: str | None, country: str, tracking_mode: str, elapsed: float) -> CarbonRecord:
    import codecarbon

    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    if tracker is not None:
        try:
            tracker.stop()
            data = tracker.final_emissions_data
            energy = float(data.energy_consumed)
            emissions = float(data.emissions)
            return CarbonRecord(
                energy_kwh=energy, emissions_kg_co2eq=emissions, duration_s=round(float(data.duration), 3),
                country=country, country_name=data.country_name,
                carbon_intensity_g_per_kwh=round(emissions / energy * 1000, 3) if energy > 0 else None,
                cpu_energy_kwh=float(data.cpu_energy), ram_energy_kwh=float(data.ram_energy),
                gpu_energy_kwh=float(data.gpu_energy), tracking_mode=tracking_mode,
                method=describe_method(tracker, country, data.country_name), codecarbon_version=codecarbon.__version__,
                measured_at=now,
            )
        except Exception as err:  # noqa: BLE001
            error = f"the tracker failed when stopping: {type(err).__name__}: {err}"
    return CarbonRecord(
        energy_kwh=None, emissions_kg_co2eq=None, duration_s=round(elapsed, 3), country=country,
        country_name=country_names().get(country), carbon_intensity_g_per_kwh=None, cpu_energy_kwh=None,
        ram_energy_kwh=None, gpu_energy_kwh=None, tracking_mode=tracking_mode,
        method=f"CodeCarbon {codecarbon.__version__} OfflineEmissionsTracker (not measured)",
        codecarbon_version=codecarbon.__version__, measured_at=now, note=f"not measured: {error}",
    )


def describe_method(tracker, country: str, country_name: str | None) -> str:
    """One sentence naming the tool, its version, how each component's power was obtained and the grid used."""
    import codecarbon

    parts = []
    for hardware in getattr(tracker, "_hardware", []):  # CodeCarbon keeps no public list of its meters
        kind = type(hardware).__name__
        if kind == "CPU":
            parts.append(_cpu_method(hardware))
        elif kind == "RAM":
            parts.append("RAM: power estimated from the installed memory size (CodeCarbon's module model)")
        elif kind == "GPU":
            parts.append("GPU: NVIDIA NVML energy counters")
        else:
            parts.append(f"{kind}: {hardware!r}")
    intensity = ""
    try:
        from codecarbon.input import DataSource

        value = DataSource().get_global_energy_mix_data()[country]["carbon_intensity"]
        intensity = f" {value:.0f} gCO₂eq/kWh,"
    except Exception:  # noqa: BLE001 -- the sentence is still useful without the figure
        pass
    return (f"CodeCarbon {codecarbon.__version__} OfflineEmissionsTracker, tracking_mode={tracker._tracking_mode}; "
            + "; ".join(parts or ["hardware not reported"])
            + f"; grid:{intensity} {country_name or country} ({country}) annual average from CodeCarbon's bundled "
              "energy-mix table; PUE 1.0 (no data-centre overhead)")


def _cpu_method(cpu) -> str:
    mode = getattr(cpu, "_mode", None)
    tdp = getattr(cpu, "_tdp", None)
    model = getattr(cpu, "_model", None) or "unknown model"
    generic = (" (a generic value: this CPU model is not in CodeCarbon's table)"
               if getattr(cpu, "_is_generic_tdp", False) else "")
    if mode == "intel_rapl":
        return f"CPU: Intel RAPL energy counters ({model})"
    if mode == "cpu_load":
        return f"CPU: TDP × this process's CPU load, at least 10% of TDP ({model}, TDP {tdp} W{generic})"
    if mode == "constant":
        return f"CPU: constant 50% of TDP ({model}, TDP {tdp} W{generic})"
    return f"CPU: {mode or 'unknown method'} ({model})"


def carbon_section(record: CarbonRecord) -> dict:
    """The run record's ``carbon`` entry: the measurement and the published footprints beside it.

    Each published row gets ``runs_of_this_size``: how many runs like this one emit as much.
    """
    emissions = record.emissions_kg_co2eq
    rows = []
    for row in PUBLISHED:
        ratio = row["co2eq_kg"] / emissions if emissions and emissions > 0 else None
        rows.append({**row, "runs_of_this_size": None if ratio is None else float(f"{ratio:.3g}")})
    return {"measured": record.to_dict(), "published": rows,
            "note": "Published numbers are training footprints under their authors' assumptions (grid, PUE, "
                    "hardware); this run's number is CodeCarbon's estimate for this machine and grid."}


def _short_citation(source: str) -> str:
    """'Strubell, E., Ganesh, A. & McCallum, A. ... 2019. ...' -> 'Strubell et al. 2019'."""
    import re

    year = re.search(r"\b(19|20)\d\d\b", source)
    return f"{source.split(',')[0]} et al. {year.group(0) if year else ''}".strip()


def comparison_rows(section: dict) -> list[dict]:
    """The run beside the published footprints, one row each, for a report table (``autopsy.story.markdown_table``).

    ``section`` is what :func:`carbon_section` returns (the run record's ``carbon`` entry).
    """
    measured = section["measured"]
    where = measured.get("country_name") or measured["country"]
    emitted = measured["emissions_kg_co2eq"]
    rows = [{"what": f"This run ({where} grid, CodeCarbon estimate)", "kg CO₂eq": emitted,
             "kWh": measured["energy_kwh"], "runs like this one to match": 1 if emitted else None,
             "source": measured["method"] if emitted is not None else measured.get("note")}]
    for row in section["published"]:
        rows.append({"what": row["what"], "kg CO₂eq": row["co2eq_kg"], "kWh": row["energy_kwh"],
                     "runs like this one to match": row["runs_of_this_size"],
                     "source": f"{_short_citation(row['source'])} ({row['detail']})"})
    return rows
