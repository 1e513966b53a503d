"""The Twitter cropping investigation, top to bottom.

1. Per-image saliency passes (both of the paper's settings: native size and 256 px high).
2. The published paired protocol (first group always left) and the corrected one (swapped),
   win rates with naive and image-bootstrap intervals beside the published table.
3. Beyond the paper: winner by single maximum vs mean vs total saliency ("argmax bias"), and
   counterfactual skin-tone edits on an ITA ladder paired against the unedited photo.
4. The autopsy: attribution of the winning saliency value with sanity checks, feature
   visualisation of the readout channels, and a race probe on trunk features with a control.

Writes ``metrics/twitter_crop.json`` and figures under ``outputs/twitter_crop/``.
"""

from __future__ import annotations

import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from autopsy.data import load_image  # noqa: E402
from autopsy.runs import start_run, write_run  # noqa: E402
from incidents.twitter_crop import assets as incident_assets  # noqa: E402
from incidents.twitter_crop import data, model, protocol  # noqa: E402
from incidents.twitter_crop.seam import SeamCanvas  # noqa: E402

SLUG = "twitter_crop"
DEFAULTS = {
    "profile": "quick",
    "seed": 42,
    "n_trials": 500,  # per pair, order and setting; or a dict per setting (the paper: 10,000 / 5,000)
    "settings": ["no_scaling", "fixed_height"],
    "fixed_height": 256,
    "n_bootstrap": 2000,
    "ita_photos_per_group": 3,
    "ita_levels": [1, 3, 5, 7, 9],  # Monk Skin Tone levels as edit targets
    "attribution_examples": 2,
    "attribution_steps": 16,
    "featviz_steps": 48,
    "featviz_size": 96,
    "limit_per_group": None,
    "trials_saved_per_pair": 100,
}


#: The paper profile runs the published trial counts.
PAPER = {"n_trials": {"no_scaling": 10_000, "fixed_height": 5_000}}


def _release_freed_memory() -> None:
    """Hand freed heap pages back to the system (glibc ``malloc_trim``; a no-op elsewhere).

    Each photo's pass frees ~35 MB of activations but keeps ~2.5 MB of edge columns; the kept
    pieces pin the freed heap, and resident memory grew by ~16 MB per photo (7 GB for the quick
    profile). Trimming every few photos keeps it under 3 GB at no measurable cost in time.
    """
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def investigate(out_dir, params: dict | None = None, progress=None) -> dict:
    params = {**DEFAULTS, **(PAPER if (params or {}).get("profile") == "paper" else {}), **(params or {})}
    paths, progress = start_run(SLUG, out_dir, params, progress)
    started = time.perf_counter()

    # -- data -------------------------------------------------------------------------------
    progress(0.0, "loading images")
    dataset = data.load(params["profile"], images=params.get("images"), labels=params.get("labels"),
                        limit_per_group=params["limit_per_group"])
    table = dataset.to_pandas()
    table["group"] = [_group_code(r, g) for r, g in zip(table["race"], table["gender"])]
    members = {code: table.index[table["group"] == code].tolist() for code in protocol.PAPER_GROUPS}
    paper_rows = sorted(i for ids in members.values() for i in ids)
    if any(len(ids) == 0 for ids in members.values()):
        raise ValueError(
            "the paired protocol needs photos labelled Black/White x Female/Male; found "
            f"{ {k: len(v) for k, v in members.items()} }. Check the race and gender columns."
        )
    images = {i: load_image(table.at[i, "path"]) for i in paper_rows}

    network = model.build_model("fastgaze")
    seam = SeamCanvas(network.layers[:-1], network.layers[-1])
    metrics: dict = {"n_images": len(table), "n_paper_images": len(paper_rows),
                     "group_sizes": {k: len(v) for k, v in members.items()}}
    tables: dict = {}
    figures: dict = {}

    # -- 1. per-image passes ----------------------------------------------------------------
    passes, sized = {}, {}
    for s, setting in enumerate(params["settings"]):
        passes[setting], sized[setting] = {}, {}
        for k, i in enumerate(paper_rows):
            sized[setting][i] = _resize(images[i], setting, params)
            passes[setting][i] = seam.image_pass(model.preprocess(sized[setting][i]))
            if k % 10 == 9:
                _release_freed_memory()
            if k % 20 == 0:
                progress(0.05 + 0.35 * (s + k / len(paper_rows)) / len(params["settings"]),
                         f"saliency of {len(paper_rows)} photos ({setting})")

    # -- 2. paired trials, published order and swapped ------------------------------------
    results = []
    for s, setting in enumerate(params["settings"]):
        progress(0.4 + 0.2 * s / len(params["settings"]), f"paired trials ({setting})")
        n_trials = params["n_trials"][setting] if isinstance(params["n_trials"], dict) else params["n_trials"]
        sampled = protocol.sample_trials(members, protocol.PAPER_PAIRS, n_trials, seed=params["seed"])
        results.append(_run_trials(seam, network, passes[setting], sized[setting], sampled, setting))
    trials = pd.concat(results, ignore_index=True)
    trials["first_file"] = table.loc[trials["first_image"], "file"].to_numpy()
    trials["second_file"] = table.loc[trials["second_image"], "file"].to_numpy()
    _save_trials(trials, paths.outputs / "trials.csv", params["trials_saved_per_pair"])
    figures["crops.png"] = _figure_crops(trials, sized[params["settings"][0]], paths.outputs / "crops.png")

    for setting in params["settings"]:
        part = trials[trials["setting"] == setting]
        rows = protocol.pair_table(part, setting=setting, n_resamples=params["n_bootstrap"])
        metrics.setdefault("pairs", {})[setting] = {r["pair"].replace("–", "_"): r for r in rows}
        tables[f"pairs_{setting}"] = [_pair_row(r) for r in rows]
        metrics.setdefault("summaries", {})[setting] = protocol.summaries(rows)
        both = part.assign(left_wins=np.where(part["order"] == "published", part["first_wins_max"], ~part["first_wins_max"]))
        metrics.setdefault("position", {})[setting] = protocol.naive_rate(int(both["left_wins"].sum()), len(both))
    figures["pairs.png"] = _figure_pairs(metrics["pairs"], paths.outputs / "pairs.png")

    # -- 3a. argmax bias --------------------------------------------------------------------
    argmax = []
    for setting in params["settings"]:
        part = trials[(trials["setting"] == setting) & (trials["order"] == "published")]
        for rule in ("max", "mean", "sum"):
            for (first, second), g in part.groupby(["first", "second"], sort=False):
                wins = g[f"first_wins_{rule}"]
                argmax.append({"setting": setting, "rule": rule, "pair": f"{first}–{second}",
                               "rate": protocol.naive_rate(int(wins.sum()), len(wins))})
        agree = (part["first_wins_max"] == part["first_wins_mean"]).mean()
        metrics.setdefault("argmax_agreement", {})[setting] = float(agree)
    tables["argmax_bias"] = [{"setting": a["setting"], "pair": a["pair"], "rule": a["rule"], "first group wins": a["rate"]}
                             for a in argmax if a["setting"] == params["settings"][0]]
    figures["argmax.png"] = _figure_argmax(argmax, params["settings"][0], paths.outputs / "argmax.png")

    # -- 3b. skin-tone counterfactuals --------------------------------------------------------
    progress(0.62, "skin-tone counterfactuals")
    ita = _ita_ladder(seam, images, table, members, params)
    metrics["ita"] = ita["metrics"]
    tables["ita_ladder"] = ita["table"]
    figures["ita.png"] = _figure_ita(ita["trials"], paths.outputs / "ita.png")

    # -- 4. autopsy --------------------------------------------------------------------------
    from incidents.twitter_crop import autopsy_steps

    progress(0.7, "attribution and sanity checks")
    found = autopsy_steps.run(network, images, passes.get("fixed_height", {}), trials, table, paths.outputs, params,
                              progress=progress)
    metrics["autopsy"] = found["metrics"]
    tables.update(found["tables"])
    figures.update(found["figures"])

    progress(0.98, "writing metrics")
    assets = incident_assets(params["profile"]) if params["profile"] != "custom" else [model.FASTGAZE]
    record = write_run(paths, title="Twitter image cropping", profile=params["profile"], params=params,
                       metrics=metrics, tables=tables, assets=assets, figures=figures, started=started)
    record["summary"] = _summary_lines(metrics, params["settings"][0])
    progress(1.0, "done")
    return record


def _group_code(race: str, gender: str) -> str | None:
    for code, (r, g) in protocol.PAPER_GROUPS.items():
        if race == r and gender == g:
            return code
    return None


def _resize(image, setting: str, params: dict):
    if setting == "fixed_height":
        h = params["fixed_height"]
        return image.resize((max(1, round(image.width * h / image.height)), h), resample=3)
    return image


def _run_trials(seam: SeamCanvas, network, cache: dict, sized: dict, trials: pd.DataFrame, setting: str,
                *, batch: int = 64) -> pd.DataFrame:
    """Score every trial in both orders; columns first_wins_{max,mean,sum}, point_x/y, order.

    ``cache`` holds each photo's :class:`ImagePass`, ``sized`` the photo at this setting's size.
    Pairs the seam shortcut can take run batched; others (different heights, widths off the
    16-px grid, as in WikiCeleb) run a full pass on the joined canvas.
    """
    frames = []
    for order in ("published", "swapped"):
        firsts, seconds = trials["first_image"].to_numpy(), trials["second_image"].to_numpy()
        lefts, rights = (firsts, seconds) if order == "published" else (seconds, firsts)
        outcomes = []
        for start in range(0, len(trials), batch):
            left_ids, right_ids = lefts[start:start + batch], rights[start:start + batch]
            for m, left in zip(_canvas_maps(seam, network, cache, sized, left_ids, right_ids), left_ids):
                outcomes.append(protocol.outcome(m, sized[left].width, seam.stride))
        frame = trials.copy()
        frame["setting"], frame["order"] = setting, order
        for rule in ("max", "mean", "sum"):
            left_wins = np.array([getattr(o, f"left_wins_{rule}") for o in outcomes])
            frame[f"first_wins_{rule}"] = left_wins if order == "published" else ~left_wins
        frame["point_x"] = [o.point[0] for o in outcomes]
        frame["point_y"] = [o.point[1] for o in outcomes]
        frame["canvas_w"] = [sized[l].width + sized[r].width for l, r in zip(lefts, rights)]
        frame["canvas_h"] = [max(sized[l].height, sized[r].height) for l, r in zip(lefts, rights)]
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def _canvas_maps(seam: SeamCanvas, network, cache, sized, left_ids, right_ids) -> list[np.ndarray]:
    lefts, rights = [cache[i] for i in left_ids], [cache[i] for i in right_ids]
    uniform = len({(p.height, p.width) for p in lefts}) == 1 and len({(p.height, p.width) for p in rights}) == 1
    if uniform and seam.aligned(lefts[0], rights[0]):
        return list(seam.canvas_maps(lefts, rights).numpy())
    maps = []
    for a, b, left, right in zip(left_ids, right_ids, lefts, rights):
        if seam.aligned(left, right):
            maps.append(seam.canvas_maps([left], [right]).numpy()[0])
        else:
            with torch.no_grad():
                maps.append(network(model.preprocess(protocol.join(sized[a], sized[b])))[0, 0].numpy())
    return maps


def _save_trials(trials: pd.DataFrame, path: Path, per_pair: int) -> None:
    """The first trials of each pair with their crop boxes at Twitter's aspect ratios."""
    keep = trials[trials["trial"] < per_pair].copy()
    for ratio in model.ASPECT_RATIOS:
        boxes = [model.crop((w, h), (x, y), ratio) for w, h, x, y in
                 zip(keep["canvas_w"], keep["canvas_h"], keep["point_x"], keep["point_y"])]
        keep[f"crop_{ratio}_ltwh"] = [",".join(str(int(v)) for v in b) for b in boxes]
    tmp = path.with_suffix(".csv.part")
    keep.to_csv(tmp, index=False)
    tmp.replace(path)


def _pair_row(row: dict) -> dict:
    out = {"pair": row["pair"], "published": row.get("published"),
           "ours, published order": row["published_naive"],
           "ours, image bootstrap": row["published_bootstrap"]}
    if "swapped_naive" in row:
        out["ours, positions swapped"] = row["swapped_naive"]
    return out


def _ita_ladder(seam, images, table, members, params) -> dict:
    """Edit photos along the Monk Skin Tone ladder; pair each edit against its original (both orders)."""
    from autopsy import counterfactual, stats

    from autopsy.models.mediapipe import FaceDetector

    detector = FaceDetector()
    trials, skipped = [], []
    for code, ids in members.items():
        for i in ids[: params["ita_photos_per_group"]]:
            original = _resize(images[i], "fixed_height", params)
            faces = detector.detect(original)
            mask = counterfactual.skin_mask(original, region=faces[0].box) if faces else None
            if mask is None or mask.sum() < 100:
                skipped.append(table.at[i, "file"])  # no face found, or too little skin detected in it
                continue
            base = seam.image_pass(model.preprocess(original))
            for level in params["ita_levels"]:
                edited, record = counterfactual.edit_skin_tone(original, target=level, mask=mask)
                before, after = record.measured["ita_before"], record.measured["ita_after"]
                moved = seam.image_pass(model.preprocess(edited))
                for edited_left in (True, False):
                    lefts, rights = ([moved], [base]) if edited_left else ([base], [moved])
                    m = seam.canvas_maps(lefts, rights).numpy()[0]
                    o = protocol.outcome(m, lefts[0].width, seam.stride)
                    trials.append({"group": code, "image": i, "mst_level": level,
                                   "ita_before": before, "ita_after": after, "delta_ita": after - before,
                                   "edited_left": edited_left, "edited_wins": o.left_wins_max == edited_left})
    frame = pd.DataFrame(trials)
    rows = []
    for level, g in frame.groupby("mst_level"):
        wins, n = int(g["edited_wins"].sum()), len(g)
        low, high = stats.wilson_interval(wins, n)
        rows.append({"MST level": int(level), "mean ΔITA": float(g["delta_ita"].mean()),
                     "edited photo wins": stats.Estimate(wins / n, low, high, n, "Wilson 95%",
                                                         p_value=stats.binomial_test(wins, n))})
    lighter = frame[frame["delta_ita"] > 0]["edited_wins"]
    darker = frame[frame["delta_ita"] < 0]["edited_wins"]
    metrics = {
        "n_photos": int(frame["image"].nunique()), "n_trials": len(frame), "n_skipped": len(skipped),
        "skipped_files": skipped,
        "lighter_edit_wins": protocol.naive_rate(int(lighter.sum()), len(lighter)) if len(lighter) else None,
        "darker_edit_wins": protocol.naive_rate(int(darker.sum()), len(darker)) if len(darker) else None,
        "position_left_wins": protocol.naive_rate(int((frame["edited_wins"] == frame["edited_left"]).sum()), len(frame)),
    }
    return {"metrics": metrics, "table": rows, "trials": frame}


# -- figures ------------------------------------------------------------------------------------

def _figure_crops(trials: pd.DataFrame, sized: dict, path: Path) -> str:
    """The crop of a few cross-race trials (published order): canvas, salient point, crop windows."""
    from matplotlib.patches import Rectangle

    from autopsy import figures

    part = trials[(trials["order"] == "published") & (trials["setting"] == trials["setting"].iloc[0])
                  & (trials["first"].str[0] != trials["second"].str[0])].drop_duplicates(["first", "second"]).head(3)
    fig, axes = plt.subplots(1, len(part), figsize=(5.2 * len(part), 3.4), squeeze=False)
    for ax, (_, t) in zip(axes[0], part.iterrows()):
        canvas = protocol.join(sized[t["first_image"]], sized[t["second_image"]])
        ax.imshow(canvas)
        point = (min(t["point_x"], canvas.width - 1), min(t["point_y"], canvas.height - 1))
        for k, ratio in enumerate(model.ASPECT_RATIOS):
            left, top, width, height = model.crop(canvas.size, point, ratio)
            ax.add_patch(Rectangle((left, top), width, height, fill=False, lw=2, ls=("-", "--", ":", "-.")[k],
                                   edgecolor=figures.OKABE_ITO[k], label=f"crop {ratio}"))
        ax.plot(*point, marker="+", color="white", markersize=16, markeredgewidth=3)
        winner = t["first"] if t["first_wins_max"] else t["second"]
        ax.set_title(f"{t['first']} left, {t['second']} right: {winner} kept", fontsize=10)
        ax.axis("off")
    axes[0][0].legend(loc="lower left", fontsize=7, framealpha=0.8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return "Paired canvases with the most salient point (+) and Twitter's crop windows at four aspect ratios"


def _error_bars(estimates) -> np.ndarray:
    """Matplotlib's (2, n) error bars; a percentile interval need not contain its estimate, so clip at 0."""
    return np.clip([[e.value - e.low for e in estimates], [e.high - e.value for e in estimates]], 0, None)


def _figure_pairs(pairs: dict, path: Path) -> str:
    from autopsy import figures

    fig, axes = plt.subplots(1, len(pairs), figsize=(6 * len(pairs), 4.5), squeeze=False, sharey=True)
    for ax, (setting, rows) in zip(axes[0], pairs.items()):
        names = list(rows)
        x = np.arange(len(names))
        for k, (key, label) in enumerate([("published_naive", "ours, published order (naive CI)"),
                                          ("published_bootstrap", "ours, published order (image bootstrap CI)"),
                                          ("swapped_naive", "ours, positions swapped")]):
            est = [rows[n][key] for n in names]
            v = np.array([e.value for e in est])
            err = _error_bars(est)
            ax.errorbar(x + (k - 1) * 0.18, v, yerr=err, fmt="o", capsize=3, color=figures.OKABE_ITO[k], label=label)
        ax.scatter(x, [rows[n].get("published", np.nan) for n in names], marker="D", s=60, facecolors="none",
                   edgecolors="black", label="published (Yee et al. 2021)", zorder=5)
        ax.axhline(0.5, color="grey", lw=1, ls="--")
        ax.set_xticks(x, [n.replace("_", "–") for n in names])
        ax.set_ylim(0, 1)
        ax.set_title(f"{setting}: first group's win rate")
        ax.set_ylabel("P(first group's face is the crop centre)")
    axes[0][0].legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return "First group's win rate per pair with 95% intervals, beside the published rates"


def _figure_argmax(rows, setting, path: Path) -> str:
    from autopsy import figures

    rows = [r for r in rows if r["setting"] == setting]
    pairs = list(dict.fromkeys(r["pair"] for r in rows))
    fig, ax = plt.subplots(figsize=(8, 4.5))
    x = np.arange(len(pairs))
    for k, rule in enumerate(("max", "mean", "sum")):
        est = [next(r["rate"] for r in rows if r["pair"] == p and r["rule"] == rule) for p in pairs]
        v = np.array([e.value for e in est])
        ax.bar(x + (k - 1) * 0.27, v, width=0.27, color=figures.OKABE_ITO[k], label=f"winner by {rule} saliency",
               yerr=_error_bars(est), capsize=2)
    ax.axhline(0.5, color="grey", lw=1, ls="--")
    ax.set_xticks(x, pairs)
    ax.set_ylim(0, 1)
    ax.set_ylabel("first group's win rate")
    ax.set_title(f"Argmax bias ({setting}): the paper's single-maximum rule vs mean and total saliency")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return "Win rates by the single maximum, the mean and the total saliency per image"


def _figure_ita(frame: pd.DataFrame, path: Path) -> str:
    from autopsy import figures, stats

    fig, ax = plt.subplots(figsize=(7, 4.5))
    bins = np.linspace(frame["delta_ita"].min() - 1e-6, frame["delta_ita"].max() + 1e-6, 7)
    frame = frame.assign(bin=pd.cut(frame["delta_ita"], bins))
    centres, rates, lows, highs = [], [], [], []
    for interval, g in frame.groupby("bin", observed=True):
        wins, n = int(g["edited_wins"].sum()), len(g)
        low, high = stats.wilson_interval(wins, n)
        centres.append(interval.mid)
        rates.append(wins / n)
        lows.append(low)
        highs.append(high)
    rates, lows, highs = map(np.array, (rates, lows, highs))
    ax.errorbar(centres, rates, yerr=np.clip([rates - lows, highs - rates], 0, None), fmt="o-", capsize=3, color=figures.OKABE_ITO[0])
    ax.axhline(0.5, color="grey", lw=1, ls="--")
    ax.axvline(0, color="grey", lw=1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("ITA change of the edited photo (degrees; positive = lighter)")
    ax.set_ylabel("P(edited photo wins the crop)")
    ax.set_title("Same photo, edited skin tone, paired against the original")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return "Win rate of a skin-tone-edited photo against its original, by the change in ITA"


def _summary_lines(metrics: dict, setting: str) -> list[str]:
    lines = []
    for name, s in metrics["summaries"][setting].items():
        lines.append(f"{name}: ours {s['ours']:.3f} vs published {s['published']:.3f} ({setting})")
    return lines
