"""Twitter image cropping (2020–21): the saliency crop that favoured lighter-skinned and female faces.

AI Incident Database #103. Twitter released the model file (``fastgaze.vxm``) and its analysis
(Yee, Tantipongpipat & Mishra 2021, arXiv 2105.08667); the lab ports the real model to torch,
reruns the published paired-crop protocol and a corrected one, and investigates the result.

The first call for a researcher::

    from incidents.twitter_crop import saliency_map
    heat = saliency_map(PIL.Image.open("photo.jpg"))  # H x W, the image's own resolution

Heavy modules (torch) load on first use, so listing incidents stays fast.
"""

from pathlib import Path

from autopsy.registry import Incident

SLUG = "twitter_crop"


def assets(profile: str = "quick"):
    from incidents.twitter_crop import data
    from incidents.twitter_crop.model import FASTGAZE

    return [FASTGAZE, *data.assets(profile)]


def build_model(weights="fastgaze"):
    from incidents.twitter_crop.model import build_model as build

    return build(weights)


def load_data(profile: str = "quick", **options):
    from incidents.twitter_crop import data

    return data.load(profile, **options)


def investigate(out_dir, params, progress=None):
    from incidents.twitter_crop.investigate import investigate as run

    return run(out_dir, params, progress=progress)


def saliency_map(image, **options):
    """The 2-D saliency map of a PIL image at the image's own resolution (see ``model.saliency_map``)."""
    from incidents.twitter_crop.model import saliency_map as compute

    return compute(image, **options)


INCIDENT = Incident(
    slug=SLUG,
    title="Twitter image cropping",
    date="2020-09-19",
    harm="Automatic photo crops favoured white and female faces over Black and male ones.",
    assets=assets,
    build_model=build_model,
    load_data=load_data,
    investigate=investigate,
    story=Path(__file__).parent / "story.md",
    aiid=103,
    explorer="app.explorers.twitter_crop",
)
