"""Twitter image cropping (2020–21): the saliency crop that favoured lighter-skinned and female faces.

AI Incident Database #103. Twitter released the model file (``fastgaze.vxm``) and its analysis
(Yee, Tantipongpipat & Mishra 2021, arXiv 2105.08667); the lab ports the real model to torch,
reruns the published paired-crop protocol and a corrected one, and investigates the result.

The first call for a researcher::

    from incidents.twitter_crop import saliency_map
    result = saliency_map(PIL.Image.open("photo.jpg"))  # Twitter's score grid and salient point
"""

from pathlib import Path

from autopsy.contract import Incident, Stage
from incidents.twitter_crop import data, model, stages
from incidents.twitter_crop.config import PROFILES, TwitterConfig
from incidents.twitter_crop.model import saliency_map, salient_point  # noqa: F401 - the public entry points

SLUG = "twitter_crop"


def build_fastgaze(*, weights=model.FASTGAZE_WEIGHTS):
    """FastGaze in torch: the pinned Twitter weights, or ``weights=None`` for random parameters (no file read)."""
    return model.build_model(weights=weights)


INCIDENT = Incident(
    slug=SLUG,
    title="Twitter image cropping",
    date="2020-09-19",
    harm="Automatic photo crops favoured white and female faces over Black and male ones.",
    story=Path(__file__).parent / "story.md",
    config=TwitterConfig,
    profiles=PROFILES,
    stages=(
        Stage("photos", stages.photos, share=0.05, save=False),
        Stage("trials", stages.trials, share=0.35),
        Stage("fidelity", stages.fidelity, share=0.08),
        Stage("padding", stages.padding, share=0.1),
        Stage("pairs", stages.pairs, share=0.03),
        Stage("argmax", stages.argmax, share=0.02),
        Stage("skin_tone", stages.skin_tone, share=0.07),
        Stage("autopsy", stages.autopsy, share=0.28),
        Stage("robustness", stages.robustness, share=0.12),
        Stage("findings", stages.findings, share=0.02),
    ),
    metrics=stages.TwitterMetrics,
    assets=data.assets,
    models={"fastgaze": build_fastgaze},
    weights={"fastgaze": model.FASTGAZE_WEIGHTS},
    aiid=103,
    explorer="app.explorers.twitter_crop",
)
