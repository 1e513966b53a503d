"""The command line: exit codes and messages."""

import shutil
import subprocess
import sys


from autopsy import cli


def run(*args):
    return subprocess.run([sys.executable, "-m", "autopsy.cli", *args], capture_output=True, text=True, timeout=300)


def test_help_lists_commands():
    result = run("--help")
    assert result.returncode == 0
    for command in ("list", "assets", "fetch", "run", "report", "app"):
        assert command in result.stdout


def test_list_shows_incidents(tmp_path):
    result = run("list", "--out", str(tmp_path))
    assert result.returncode == 0 and "twitter_crop" in result.stdout and "not run yet" in result.stdout


def test_assets_show_pins_and_licences():
    result = run("assets", "twitter_crop")
    assert result.returncode == 0
    assert "sha256:" in result.stdout and "Apache-2.0" in result.stdout and "CC-BY-4.0" in result.stdout


def test_unknown_incident_is_one_clear_line_without_traceback():
    result = run("run", "no_such_incident")
    assert result.returncode == 1
    assert "no incident called 'no_such_incident'" in result.stderr
    assert "Traceback" not in result.stderr


def test_debug_shows_the_traceback():
    result = run("--debug", "run", "no_such_incident")
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_fetch_from_mirror_then_tampered_mirror_fails(tmp_path, mirror, monkeypatch):
    monkeypatch.setenv("AUTOPSY_CACHE", str(tmp_path / "cache"))
    assert cli.main(["fetch", "twitter_crop"]) == 0
    copy = tmp_path / "mirror"
    shutil.copytree(mirror / "models", copy / "models")
    data = bytearray((copy / "models/fastgaze.vxm").read_bytes())
    data[-1] ^= 1
    (copy / "models/fastgaze.vxm").chmod(0o644)
    (copy / "models/fastgaze.vxm").write_bytes(data)
    monkeypatch.setenv("AUTOPSY_MIRROR", str(copy))
    monkeypatch.setenv("AUTOPSY_CACHE", str(tmp_path / "cache2"))
    result = subprocess.run([sys.executable, "-m", "autopsy.cli", "fetch", "twitter_crop"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert "failed its integrity check" in result.stderr and "fastgaze.vxm" in result.stderr


def test_report_without_run_says_run_first(tmp_path):
    result = run("report", "twitter_crop", "--out", str(tmp_path))
    assert result.returncode == 1 and "run the incident first" in result.stderr


def test_byo_needs_both_images_and_labels(tmp_path):
    result = run("run", "twitter_crop", "--images", str(tmp_path))
    assert result.returncode == 1 and "--labels" in result.stderr
