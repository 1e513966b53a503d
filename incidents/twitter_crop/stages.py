"""The Twitter cropping investigation as ordered stages (run by :mod:`autopsy.runner`).

1. ``photos``: the labelled photos, the paper's four groups.
2. ``trials``: the published paired protocol (first group always left) and the corrected one
   (swapped), each canvas through Twitter's binary pipeline (:mod:`.canvases`), in both settings.
3. ``fidelity``: a sample of trials rerun through the binary's exact path (JPEG file, byte-rounded
   resize); how often it picks the same photo.
4. ``padding``: the left-padding probe (a few black columns move the crop to the other face?).
5. ``pairs``: win rates with naive and image-clustered intervals beside the published table.
6. ``argmax``: winner by single maximum vs mean vs total saliency ("argmax bias").
7. ``skin_tone``: counterfactual skin-tone edits on the Monk ladder, paired against the original.
8. ``autopsy``: attribution with sanity checks, feature visualisation, a race probe with a control.
9. ``robustness``: the smallest change of one photo that moves the crop to the other face, by the
   perceived group of the face cropped out, and common corruptions (:mod:`.robustness`).
10. ``findings``: figures and the typed metrics record.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import numpy as np
import pandas as pd
import torch

from autopsy.contract import Findings
from autopsy.data import exclude, load_image
from autopsy.stats import proportion
from incidents.twitter_crop import autopsy_steps, canvases, data, model, padding as pad, plots, protocol
from incidents.twitter_crop import robustness as attacks
from incidents.twitter_crop import skin_tone as skin


@dataclass(frozen=True)
class TwitterMetrics:
    """What a run measures; the story's ``metrics.*`` placeholders read these fields."""

    n_images: int
    n_paper_images: int
    group_sizes: dict  # BF, BM, WF, WM -> photos
    pipeline: dict  # what ran: the binary's pipeline, and the fast path's agreement with its exact path
    pairs: dict  # setting -> pair -> {published_naive, published_bootstrap, swapped_*, published}
    summaries: dict  # setting -> Twitter's summary rates, ours beside published
    position: dict  # setting -> P(left photo wins), both orders pooled
    argmax_agreement: dict  # setting -> share of trials where max and mean rules agree
    padding: dict  # left-padding probe: flip rates by padding width
    ita: dict  # skin-tone counterfactuals
    autopsy: dict  # attribution sanity checks, faithfulness, probe
    robustness: dict  # smallest change that moves the crop off a face, by perceived group; corruptions
    exclusions: dict = field(default_factory=dict)  # photos not in the paper's groups


@dataclass(frozen=True)
class Photos:
    table: pd.DataFrame  # file, path, race, gender, group (BF/BM/WF/WM or None)
    members: dict  # group code -> row ids
    images: dict  # row id -> PIL image (the paper's groups only)
    exclusions: dict = field(default_factory=dict)  # photos left out, and why

    @property
    def paper_rows(self) -> list[int]:
        return sorted(i for ids in self.members.values() for i in ids)

    def sized(self, setting: str, height: int) -> dict:
        """The photos as a setting shows them: native size, or ``height`` pixels high."""
        if setting == "fixed_height":
            return {i: canvases.fixed_height(im, height) for i, im in self.images.items()}
        return dict(self.images)


def photos(ctx) -> Photos:
    """Load the labelled photos and sort them into the paper's four groups."""
    dataset, excluded = data.load_with_exclusions(ctx.config)
    codes = [protocol.group_code(r, g) for r, g in zip(dataset["race"], dataset["gender"])]
    dataset, outside = exclude(dataset, [c is not None for c in codes], "not in the paper's four groups")
    table = dataset.to_pandas()
    table["group"] = [c for c in codes if c is not None]
    members = {code: table.index[table["group"] == code].tolist() for code in protocol.PAPER_GROUPS}
    if any(len(ids) == 0 for ids in members.values()):
        raise ValueError("the paired protocol needs photos labelled Black/White x Female/Male; found "
                         f"{ {k: len(v) for k, v in members.items()} }. Check the race and gender columns.")
    rows = sorted(i for ids in members.values() for i in ids)
    return Photos(table, members, {i: load_image(table.at[i, "path"]) for i in rows}, (excluded + outside).to_dict())


CHUNK = 64  # trials per unit of work: one batch of canvases through the scorer


class _Scorers:
    """A worker's network and the :class:`~.canvases.CanvasScorer` of its current setting (passes cached)."""

    def __init__(self):
        self.net, self.setting, self.scorer = model.build_model(), None, None

    def get(self, setting: str, sized: dict):
        if setting != self.setting:
            if self.scorer is not None:
                self.scorer.forget()
            self.setting, self.scorer = setting, canvases.CanvasScorer(self.net, sized[setting])
        return self.scorer


def _score_chunk(state: _Scorers, item, *, sized: dict) -> pd.DataFrame:
    setting, order, chunk = item
    return _score(state.get(setting, sized), chunk, setting, order, lambda f: None, batch=CHUNK)


def _pooled(state: _Scorers, item, *, sized: dict) -> dict:
    setting, ids = item
    scorer = state.get(setting, sized)
    return {layer: np.stack([scorer.pooled(i, layer) for i in ids]) for layer in autopsy_steps.PROBE_LAYERS}


def trials(ctx, photos: Photos) -> dict:
    """Every pair's trials, published order and swapped, in each setting, through the binary's pipeline.

    The unit of work is a chunk of trials of one setting and order (``ctx.map``: local or Ray workers,
    each building the network once); results come back in order, so the engine does not change them.
    """
    settings = ctx.config.settings
    sized = {s: photos.sized(s, ctx.config.fixed_height) for s in settings}
    items = []
    for setting in settings:
        sampled = protocol.sample_trials(photos.members, protocol.PAPER_PAIRS, ctx.config.trials_for(setting),
                                         seed=ctx.seed)
        items += [(setting, order, sampled.iloc[k:k + CHUNK]) for order in ("published", "swapped")
                  for k in range(0, len(sampled), CHUNK)]
    frames = ctx.map(partial(_score_chunk, sized=sized), items, setup=_Scorers, desc="trials (chunks of 64)")
    rows = photos.paper_rows
    pooled = ctx.map(partial(_pooled, sized=sized), [(settings[-1], rows[k:k + 32]) for k in range(0, len(rows), 32)],
                     setup=_Scorers, desc="probe features")
    features = {layer: np.concatenate([p[layer] for p in pooled]) for layer in autopsy_steps.PROBE_LAYERS}
    frame = pd.concat(frames, ignore_index=True)
    frame["first_file"] = photos.table.loc[frame["first_image"], "file"].to_numpy()
    frame["second_file"] = photos.table.loc[frame["second_image"], "file"].to_numpy()
    _saved_trials(frame, ctx.config.trials_saved_per_pair).to_csv(ctx.out / "trials.csv", index=False)
    return {"trials": frame, "features": features}


def _score(scorer, sampled: pd.DataFrame, setting: str, order: str, progress, batch: int = 64) -> pd.DataFrame:
    firsts, seconds = sampled["first_image"].to_numpy(), sampled["second_image"].to_numpy()
    lefts, rights = (firsts, seconds) if order == "published" else (seconds, firsts)
    found = []
    for start in range(0, len(sampled), batch):
        a, b = lefts[start:start + batch], rights[start:start + batch]
        found += [canvases.outcome(g, scorer.layout(i, j)) for g, i, j in zip(scorer.grids(a, b), a, b)]
        progress(min(1.0, (start + batch) / len(sampled)))
    frame = sampled.assign(setting=setting, order=order)
    for rule in ("max", "mean", "sum"):
        left_wins = np.array([getattr(o, f"left_wins_{rule}") for o in found])
        frame[f"first_wins_{rule}"] = left_wins if order == "published" else ~left_wins
    frame["point_x"], frame["point_y"] = [o.point[0] for o in found], [o.point[1] for o in found]
    frame["canvas_w"] = [scorer.layout(i, j).size[0] for i, j in zip(lefts, rights)]
    frame["canvas_h"] = [scorer.layout(i, j).size[1] for i, j in zip(lefts, rights)]
    return frame


def _saved_trials(frame: pd.DataFrame, per_pair: int) -> pd.DataFrame:
    """The first trials of each pair with their crop boxes at Twitter's aspect ratios."""
    keep = frame[frame["trial"] < per_pair].copy()
    for ratio in model.ASPECT_RATIOS:
        keep[f"crop_{ratio}_ltwh"] = [",".join(str(int(v)) for v in model.crop((w, h), (x, y), ratio)) for w, h, x, y
                                      in zip(keep["canvas_w"], keep["canvas_h"], keep["point_x"], keep["point_y"])]
    return keep


def fidelity(ctx, photos: Photos, trials: dict) -> dict:
    """Rerun sampled trials through the binary's exact path; how often does it pick the same photo?"""
    frame = trials["trials"]
    sample = frame[frame["order"] == "published"].sample(n=min(ctx.config.fidelity_trials, len(frame)),
                                                        random_state=ctx.seed)
    sized = {s: photos.sized(s, ctx.config.fixed_height) for s in sample["setting"].unique()}
    same = []
    for k, (_, t) in enumerate(sample.iterrows()):
        left, right = sized[t["setting"]][t["first_image"]], sized[t["setting"]][t["second_image"]]
        same.append(canvases.binary_winner(left, right)[0] == bool(t["first_wins_max"]))
        ctx.progress((k + 1) / len(sample), f"{k + 1}/{len(sample)} trials through the exact path")
    return {"engine": "float path: whole-canvas resize weights, one pass per photo plus the seam band",
            "exact_path": "canvas saved as JPEG (PIL defaults, quality 75), libjpeg DCT pre-shrink, "
                          "imagecore byte-rounded Lanczos-3 resize, network: as Twitter's notebook ran the binary",
            "same_winner_as_exact_path": proportion(int(sum(same)), len(same))}


def padding(ctx, photos: Photos, trials: dict) -> dict:
    """Add a few black columns on the left of cross-race canvases: how often does the crop change face?"""
    frame = trials["trials"]
    first = ctx.config.settings[0]
    cross = frame[(frame["setting"] == first) & (frame["order"] == "published")
                  & (frame["first"].str[0] != frame["second"].str[0])].head(ctx.config.padding_canvases)
    sized = photos.sized(first, ctx.config.fixed_height)
    pairs = [(sized[t.first_image], sized[t.second_image], t.first, t.second) for t in cross.itertuples()]
    probed = pad.probe(model.build_model(), pairs, ctx.config.padding_pixels, progress=ctx.progress,
                       before=cross["first_wins_max"].to_numpy())  # the published order: the first photo is left
    rows = pad.table(probed)
    return {"metrics": {"setting": first, "n_canvases": len(pairs),
                        "by_padding": {str(r["padding (px)"]): r for r in rows}}, "table": rows}


def pairs(ctx, trials: dict) -> dict:
    """Per pair and setting: win rates, Twitter's summaries, and the position effect."""
    out = {"pairs": {}, "summaries": {}, "position": {}, "tables": {}}
    for setting in ctx.config.settings:
        part = trials["trials"][trials["trials"]["setting"] == setting]
        rows = protocol.pair_table(part, setting=setting, n_boot=ctx.config.n_bootstrap)
        out["pairs"][setting] = {r["pair"].replace("–", "_"): r for r in rows}
        out["tables"][f"pairs_{setting}"] = [_pair_row(r) for r in rows]
        out["summaries"][setting] = protocol.summaries(rows, setting=setting)
        left_wins = (part["order"] == "published") == part["first_wins_max"]
        out["position"][setting] = proportion(int(left_wins.sum()), len(part), test_against=0.5)
    return out


def _pair_row(row: dict) -> dict:
    out = {"pair": row["pair"], "published": row.get("published"),
           "ours, published order": row["published_naive"], "ours, image bootstrap": row["published_bootstrap"]}
    if "swapped_naive" in row:
        out["ours, positions swapped"] = row["swapped_naive"]
    return out


def argmax(ctx, trials: dict) -> dict:
    """The first group's win rate by the single maximum, the mean and the total saliency."""
    rows, agreement = [], {}
    for setting in ctx.config.settings:
        frame = trials["trials"]
        part = frame[(frame["setting"] == setting) & (frame["order"] == "published")]
        for rule in ("max", "mean", "sum"):
            for (first, second), g in part.groupby(["first", "second"], sort=False):
                wins = g[f"first_wins_{rule}"]
                rows.append({"setting": setting, "rule": rule, "pair": f"{first}–{second}",
                             "rate": proportion(int(wins.sum()), len(wins), test_against=0.5)})
        agreement[setting] = float((part["first_wins_max"] == part["first_wins_mean"]).mean())
    return {"rows": rows, "agreement": agreement}


def skin_tone(ctx, photos: Photos) -> dict:
    """Edit photos along the Monk Skin Tone ladder; pair each edit against its original (both orders)."""
    from autopsy.models.mediapipe import FaceDetector

    net, detector = model.build_model(), FaceDetector()
    rows, skipped = [], []
    for code, ids in photos.members.items():
        for i in ids[: ctx.config.ita_photos_per_group]:
            photo = canvases.fixed_height(photos.images[i], ctx.config.fixed_height)
            edited = skin.edits(detector, photo, levels=ctx.config.ita_levels)
            if edited is None:
                skipped.append(photos.table.at[i, "file"])
                continue
            rows += [{"group": code, "image": i, **r} for r in skin.edit_trials(net, photo, edited)]
    frame = pd.DataFrame(rows)
    return {"trials": frame, "metrics": skin.summary(frame, skipped), "table": skin.ladder_table(frame)}


def autopsy(ctx, photos: Photos, trials: dict) -> dict:
    """Attribution of the winning score with sanity checks, feature visualisation, and a race probe."""
    frame, net = trials["trials"], model.build_model()
    setting = "fixed_height" if "fixed_height" in ctx.config.settings else ctx.config.settings[0]  # smaller canvases
    sized = photos.sized(setting, ctx.config.fixed_height)
    examples = _examples(frame[(frame["setting"] == setting) & (frame["order"] == "published")],
                         ctx.config.attribution_examples)
    chosen = [canvases.join(sized[t.first_image], sized[t.second_image]) for t in examples.itertuples()]
    seams = [sized[t.first_image].width for t in examples.itertuples()]
    labels = photos.table.loc[photos.paper_rows, "race"].to_numpy()
    found = autopsy_steps.attribute(net, chosen, seams, ctx.config, trials["features"], labels,
                                    progress=lambda f, m: ctx.progress(0.8 * f, m))
    x = torch.cat([canvases.to_tensor(c) for c in chosen])
    with torch.no_grad():  # the caption's winner is read off the very canvas attributed
        grids = autopsy_steps.CanvasSaliency(net)(x)[:, 0].numpy()
    layouts = [canvases.Layout(sized[t.first_image].size, sized[t.second_image].size) for t in examples.itertuples()]
    captions = [f"{t.first} (left) vs {t.second} (right): "
                f"{t.first if canvases.outcome(g, lay).left_wins_max else t.second} wins"
                for t, g, lay in zip(examples.itertuples(), grids, layouts)]
    ctx.progress(0.8, "feature visualisation")
    renders = autopsy_steps.readout_images(net, ctx.config)
    return {"metrics": found.metrics(), "tables": found.tables(items=[{"example": c} for c in captions]),
            "figures": {"attribution.png": autopsy_steps.figure_attribution(x, found.maps, captions),
                        "featviz.png": autopsy_steps.figure_renders(renders)}}


def _examples(part: pd.DataFrame, n: int) -> pd.DataFrame:
    """Cross-race canvases, one layout: some where the Black face won, some where it lost."""
    part = part[(part["first"].str[0] == "B") & (part["second"].str[0] == "W")]
    part = part[(part["canvas_w"] == part["canvas_w"].iloc[0]) & (part["canvas_h"] == part["canvas_h"].iloc[0])]
    return pd.concat([part[part["first_wins_max"]].head((n + 1) // 2), part[~part["first_wins_max"]].head(n // 2)])


def robustness(ctx, photos: Photos, trials: dict) -> dict:
    """How little it takes: the smallest change of the winning photo that moves the crop, and corruptions."""
    config, setting = ctx.config, ctx.config.settings[0]
    chosen = attacks.choose(trials["trials"], setting, config.attack_per_group)
    sized = photos.sized(setting, config.fixed_height)
    pairs = [(sized[a], sized[b]) for a, b in zip(chosen["first_image"], chosen["second_image"])]
    net = model.build_model()
    found = attacks.attack_pairs(net, pairs, budgets=config.attack_budgets, method=config.attack_method,
                                 steps=config.attack_steps, seed=ctx.seed,
                                 progress=lambda f: ctx.progress(0.7 * f, "smallest change that moves the crop"))
    frame = attacks.attacked_frame(chosen, found, files=photos.table["file"])
    frame.to_csv(ctx.out / "robustness.csv", index=False)
    ctx.progress(0.7, "common corruptions")
    flips = attacks.corruption_flips(net, pairs, attacks.corruptions(config), seed=ctx.seed)
    metrics, tables = attacks.summarise(frame, flips, config, seed=ctx.seed)
    ctx.progress(0.95, "figures")
    drawn = attacks.draw(net, pairs, frame, config, seed=ctx.seed)
    for name, (fig, _) in drawn.items():
        fig.savefig(ctx.out / name, dpi=110)
    return {"metrics": metrics, "tables": tables, "figures": {name: caption for name, (_, caption) in drawn.items()}}


def findings(ctx, photos: Photos, trials: dict, fidelity: dict, padding: dict, pairs: dict, argmax: dict,
             skin_tone: dict, autopsy: dict, robustness: dict) -> Findings:
    """Draw the figures and assemble the metrics record."""
    first, frame = ctx.config.settings[0], trials["trials"]
    drawn = {"crops.png": plots.crops(frame, photos.sized(first, ctx.config.fixed_height)),
             "pairs.png": plots.pairs(pairs["pairs"]), "argmax.png": plots.argmax(argmax["rows"], first),
             "ita.png": plots.skin_tone(skin_tone["trials"]), **autopsy["figures"]}
    for name, (fig, _) in drawn.items():
        fig.savefig(ctx.out / name, dpi=120)
    metrics = TwitterMetrics(
        n_images=photos.exclusions.get("n_listed", len(photos.table)), n_paper_images=len(photos.paper_rows),
        group_sizes={k: len(v) for k, v in photos.members.items()}, pipeline=fidelity, pairs=pairs["pairs"],
        summaries=pairs["summaries"], position=pairs["position"], argmax_agreement=argmax["agreement"],
        padding=padding["metrics"], ita=skin_tone["metrics"], autopsy=autopsy["metrics"],
        robustness=robustness["metrics"], exclusions=photos.exclusions)
    tables = {**pairs["tables"], "ita_ladder": skin_tone["table"], "padding": padding["table"], **autopsy["tables"],
              **robustness["tables"],
              "argmax_bias": [{"setting": a["setting"], "pair": a["pair"], "rule": a["rule"],
                               "first group wins": a["rate"]} for a in argmax["rows"] if a["setting"] == first]}
    summary = tuple(f"{name}: ours {s['ours']:.3f} vs published {s['published']:.3f} ({first})"
                    for name, s in pairs["summaries"][first].items() if s["published"] is not None)
    smallest = min(len(v) for v in photos.members.values())
    if smallest < 10:
        summary += (f"caution: only {smallest} photo(s) in the smallest group; these rates are unreliable "
                    "(see the image-clustered intervals in the report)",)
    captions = {**{name: caption for name, (_, caption) in drawn.items()}, **robustness["figures"]}
    return Findings(metrics, tables, captions, summary)
