"""``autopsy``: list, inspect, fetch, run and report incidents; start the viewer.

User errors (a missing asset, an unknown incident, a bad labels file, a story placeholder
that does not resolve) print one message and exit 1; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import yaml

from autopsy import registry
from autopsy.assets import AssetError, fetch, is_available
from autopsy.data import ImageError
from autopsy.contract import ContractError
from autopsy.runner import RunError
from autopsy.runs import RunPaths, check_outputs_belong
from autopsy.story import StoryError

USER_ERRORS = (AssetError, registry.RegistryError, StoryError, ImageError, ValueError, FileNotFoundError,
               RunError, ContractError)
APP_SCRIPT = Path(__file__).resolve().parents[1] / "app" / "streamlit_app.py"


def cmd_list(args) -> int:
    for slug, incident in registry.discover().items():
        ran = RunPaths(Path(args.out), slug).metrics.is_file()
        print(f"{slug:<16} {incident.date:<10} {incident.title}")
        print(f"{'':<16} {'':<10} harm: {incident.harm}  [{'run found' if ran else 'not run yet'}]")
    return 0


def cmd_assets(args) -> int:
    incidents = registry.discover()
    slugs = [args.slug] if args.slug else list(incidents)
    for slug in slugs:
        incident = registry.get(slug, incidents)
        assets = incident.assets(incident.settings(args.profile))
        print(f"# {slug} ({args.profile} profile): {len(assets)} pinned file(s)")
        shown = assets if args.all_files else _one_per_group(assets)
        for asset in shown:
            status = "available" if is_available(asset) else "not cached"
            print(f"{asset.name}\n  url:     {asset.url}\n  sha256:  {asset.sha256}\n"
                  f"  licence: {asset.licence}   [{status}]\n  cite:    {asset.citation}")
        if len(shown) < len(assets):
            print(f"  ... {len(assets) - len(shown)} more files of the same sets (--all-files lists them)")
    return 0


def _one_per_group(assets):
    seen, shown = set(), []
    for asset in assets:
        group = asset.name.split("/")[0]
        if group not in seen:
            seen.add(group)
            shown.append(asset)
    return shown


def cmd_fetch(args) -> int:
    from tqdm import tqdm

    incidents = registry.discover()
    if not args.all and not args.slug:
        raise ValueError("name an incident (autopsy fetch SLUG) or pass --all")
    slugs = list(incidents) if args.all else [args.slug]
    for slug in slugs:
        incident = registry.get(slug, incidents)
        assets = incident.assets(incident.settings(args.profile))
        for asset in tqdm(assets, desc=f"{slug}: verifying", unit="file", disable=len(assets) < 5):
            fetch(asset)
        print(f"{slug}: {len(assets)} file(s) present and verified")
    return 0


def settings(incident, args):
    """The run's frozen config: the profile, then ``--params`` YAML, then the command-line options."""
    overrides = {}
    if args.params:
        path = Path(args.params)
        if not path.is_file():
            raise FileNotFoundError(f"parameters file {path} does not exist")
        section = (yaml.safe_load(path.read_text()) or {}).get(incident.slug, {})
        if not isinstance(section, dict):
            raise ValueError(f"{path}: the section {incident.slug!r} must be a mapping of setting: value")
        overrides.update(section)
    if args.images or args.labels:
        if not (args.images and args.labels):
            raise ValueError("bring-your-own needs both --images DIR and --labels CSV")
        overrides.update(images=str(args.images), labels=str(args.labels))
    if args.limit is not None:
        if args.limit < 1:
            raise ValueError(f"--limit must be at least 1 photo per group, got {args.limit}")
        overrides["limit_per_group"] = args.limit
    return incident.settings(args.profile, overrides)


def cmd_run(args) -> int:
    from autopsy import runner
    from autopsy.engines import get_engine

    incident = registry.get(args.slug)
    config = settings(incident, args)
    started = time.perf_counter()
    last = {"stage": None, "time": 0.0}

    def progress(fraction: float, message: str) -> None:
        now, stage = time.perf_counter(), message.split(":", 1)[0]
        if stage == last["stage"] and now - last["time"] < 2.0 and fraction < 1.0:
            return  # at most one line every two seconds within a stage
        last.update(stage=stage, time=now)
        print(f"  [{now - started:6.1f}s {100 * fraction:3.0f}%] {message}", file=sys.stderr, flush=True)

    engine = get_engine(args.engine, address=args.address, on_error=args.on_error)
    try:
        record = runner.run(incident, config, out_root=Path(args.out), resume=args.resume, engine=engine,
                            progress=progress)
    finally:
        engine.close()
    paths = RunPaths(Path(args.out), args.slug)
    print(f"{args.slug}: metrics written to {paths.metrics}, figures to {paths.outputs}/")
    for line in record.get("summary", []):
        print(f"  {line}")
    return 0


def cmd_params(args) -> int:
    """Print the quick profile's settings as YAML, a section per incident (the source of params.yaml)."""
    incidents = registry.discover()
    slugs = [args.slug] if args.slug else list(incidents)
    out = {slug: registry.get(slug, incidents).settings(args.profile).to_dict() for slug in slugs}
    print(PARAMS_HEADER + yaml.safe_dump(out, sort_keys=False, default_flow_style=None, width=100), end="")
    return 0


PARAMS_HEADER = ("# Generated by `autopsy params > params.yaml` from each incident's quick profile; edit a value to\n"
                 "# change what `dvc repro` runs (autopsy run SLUG --params params.yaml).\n")


def cmd_report(args) -> int:
    from autopsy import story

    incident = registry.get(args.slug)
    paths = RunPaths(Path(args.out), args.slug)
    run = story.load_run(paths.metrics)
    check_outputs_belong(run, paths.outputs)
    resolved = story.resolve(story.parse(incident.story), run, paths.outputs)
    destination = story.render_html(resolved, Path(args.html) if args.html else paths.report)
    print(f"{args.slug}: report written to {destination}")
    return 0


def cmd_app(args) -> int:
    if not APP_SCRIPT.is_file():
        raise FileNotFoundError(
            f"the viewer script {APP_SCRIPT} is missing; install the lab from a checkout with `pip install -e .`"
        )
    command = [sys.executable, "-m", "streamlit", "run", str(APP_SCRIPT), "--server.port", str(args.port),
               "--server.headless", "true" if args.headless else "false", "--", "--out", str(Path(args.out).resolve())]
    if args.workshop:
        command += ["--workshop", str(Path(args.workshop).resolve())]
    return subprocess.call(command)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autopsy",
        description="AI Autopsy: re-run public AI incidents and investigate them. "
                    "Offline use: set AUTOPSY_MIRROR to a folder holding the pinned files.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name, func, help_text):
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=func)
        return p

    def out_option(p):
        p.add_argument("--out", default=".", help="output root holding metrics/, outputs/, reports/ (default: .)")

    p = add("list", cmd_list, "list the registered incidents and whether each has been run")
    out_option(p)
    p = add("assets", cmd_assets, "show the pinned artefacts (URL, SHA-256, licence, citation)")
    p.add_argument("slug", nargs="?", help="one incident (default: all)")
    p.add_argument("--profile", default="quick")
    p.add_argument("--all-files", action="store_true", help="list every file of image sets")
    p = add("fetch", cmd_fetch, "download (or copy from AUTOPSY_MIRROR) and verify an incident's assets")
    p.add_argument("slug", nargs="?")
    p.add_argument("--all", action="store_true", help="every incident")
    p.add_argument("--profile", default="quick")
    p = add("run", cmd_run, "run an incident's investigation: metrics/<slug>.json and outputs/<slug>/")
    p.add_argument("slug")
    p.add_argument("--profile", default=None,
                   help="smoke: seconds, for tests; quick (default): offline with the mirror, minutes on 2 cores; "
                        "paper: the published protocol at full size")
    p.add_argument("--params", help="YAML file with a section per incident (e.g. params.yaml)")
    p.add_argument("--images", type=Path, help="bring your own: a folder of photos")
    p.add_argument("--labels", type=Path, help="bring your own: CSV with columns file,race,gender")
    p.add_argument("--limit", type=int, help="at most N images per race x gender group (small runs)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run with the same settings")
    p.add_argument("--engine", default="local", choices=("local", "ray"),
                   help="local (default): this process; ray: Ray tasks (a local instance, or --address)")
    p.add_argument("--address", help="a Ray cluster to join, e.g. ray://head:10001 (with --engine ray)")
    p.add_argument("--on-error", default="stop", choices=("stop", "skip"),
                   help="an image that fails in a sharded pass: stop the run (default), or skip it and list it "
                        "in the run's exclusions")
    out_option(p)
    p = add("params", cmd_params, "print the settings of a profile as YAML (the source of params.yaml)")
    p.add_argument("slug", nargs="?", help="one incident (default: all)")
    p.add_argument("--profile", default="quick")
    p = add("report", cmd_report, "render the incident's story from its latest run as one HTML file")
    p.add_argument("slug")
    p.add_argument("--html", help="where to write the report (default: <out>/reports/<slug>.html)")
    out_option(p)
    p = add("app", cmd_app, "start the Streamlit narrative viewer")
    p.add_argument("--port", type=int, default=8501)
    p.add_argument("--headless", action="store_true", help="do not open a browser")
    p.add_argument("--workshop", help="the workshop's answers database (default: <out>/workshop.sqlite)")
    out_option(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except USER_ERRORS as err:
        if args.debug:
            raise
        print(f"autopsy: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("autopsy: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
