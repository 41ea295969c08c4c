"""The README's first command: the demo on the shipped toy world, and its report in a real browser."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent / "viz"))
from test_report import click_token, open_in_browser, shown_map  # noqa: E402

pytestmark = pytest.mark.toy_weights


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    from owlens.demo import DemoSettings, run_demo
    from owlens.viz.report import render_report

    folder = run_demo(tmp_path_factory.mktemp("demo"), settings=DemoSettings(bias_scenes=16), log=lambda *_: None)
    return folder, render_report(folder)


def test_demo_writes_a_complete_run(demo_run):
    folder, report = demo_run
    run = json.loads((folder / "run.json").read_text())
    assert [item["id"] for item in run["items"]] == ["scene-1", "cue-case", "scene-2"]
    for item in run["items"]:
        assert item["answer"]["tokens"], item["id"]
        tokens = {int(k) for k in item["saliency"]["ga"]}
        assert tokens == {t["index"] for t in item["answer"]["tokens"]}
        for base in item["saliency"]["ga"].values():
            values = np.load(folder / f"{base}.npy")
            assert values.shape == (64, 64) and 0 <= values.min() and values.max() <= 1
    assert run["bias"]["figures"]["injected_delta"] == 4
    assert report.items == 3 and report.path.is_file()
    # The bias plot is drawn by the report from the summary's numbers; no .svg file is written or read.
    assert set(run["bias"]["summary"]["groups"]) == {"toy"} and run["bias"]["title"]
    assert not list(folder.glob("*.svg"))
    bias = report.path.read_text().split('<section id="bias"', 1)[1]
    assert bias.index("<svg") < bias.index("</section>") and "toy · heavy" in bias


def test_clicking_two_tokens_shows_their_saved_maps(demo_run, tmp_path):
    folder, report = demo_run
    run = json.loads((folder / "run.json").read_text())
    first = run["items"][0]
    driver = open_in_browser(report.path)
    try:
        shown = []
        for token in (1, 2):  # the caption's colour and shape words: "a <colour> <shape> ..."
            click_token(driver, token)
            values, meta = shown_map(driver)
            assert meta["token"] == str(token)
            saved = np.load(folder / f"{first['saliency']['ga'][str(token)]}.npy")
            np.testing.assert_allclose(values, saved, atol=0.5 / 255 + 1e-9)
            shown.append(values)
        assert not np.allclose(shown[0], shown[1]), "the map did not change between tokens"
        driver.save_screenshot(str(tmp_path / "demo-report.png"))
        assert (tmp_path / "demo-report.png").stat().st_size > 10_000
    finally:
        driver.quit()
