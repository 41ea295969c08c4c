"""The HTML report: self-contained, and what it shows is what the run saved (checked in a real browser)."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from owlens.rundir import RunFormatError, read_run, save_image, write_run
from owlens.viz.report import render_report

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def _explanation(folder: Path, item: str, method: str, token: int, values: np.ndarray) -> str:
    base = f"maps/{item}/{method}/{token:03d}"
    (folder / base).parent.mkdir(parents=True, exist_ok=True)
    np.save(folder / f"{base}.npy", values.astype(np.float32))
    boxes = [[0.25, 0.25, 0.5, 0.5], [0.75, 0.75, 0.2, 0.2]]
    (folder / f"{base}.json").write_text(json.dumps({"method": method, "query": "a photo of a star",
                                                     "image_size": [64, 48], "boxes_cxcywh": boxes,
                                                     "class_weights": [1.0, 0.0]}))
    return base


def make_run(folder: Path, items: int = 1) -> Path:
    rng = np.random.default_rng(0)
    entries = []
    for k in range(items):
        item = f"scene-{k:03d}"
        image = save_image(folder, item, Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)))
        maps = {m: {str(t): _explanation(folder, item, m, t, rng.random((48, 64))) for t in (1, 3)}
                for m in ("ga", "random")}
        entries.append({
            "id": item, "image": image, "size": [64, 48], "saliency": maps,
            "answer": {"prompt": "what is in the image ?", "text": "a red star and a blue circle .",
                       "tokens": [{"index": i, "token": w, "token_id": i}
                                  for i, w in enumerate("a red star and".split())]},
            "detections": [{"query": "a photo of a star", "score": 0.9, "box_xyxy_px": [1, 2, 30, 40]}],
            "hallucination": {"objects": [{"name": "star", "grounded": True, "presence": 0.93,
                                           "box_xyxy_px": [1, 2, 30, 40]},
                                          {"name": "circle", "grounded": False, "presence": 0.08,
                                           "box_xyxy_px": [30, 10, 60, 40]}]}})
    write_run(folder, {"title": "test run", "model": {"owl": "toy"}, "settings": {"seed": 0},
                       "timings": {"total_s": 1.0}, "items": entries,
                       "pope": {"adversarial": {"accuracy": 0.8, "precision": 0.7, "recall": 0.9, "f1": 0.79,
                                                "yes_ratio": 0.6}}})
    return folder


def test_report_is_self_contained(tmp_path):
    report = render_report(make_run(tmp_path, items=3))
    page = report.path.read_text()
    assert report.items == 3 and report.size_bytes == report.path.stat().st_size
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "") and "https://" not in page
    assert "<script src" not in page and "data:image/png;base64," in page
    assert "{{" not in page, "a template slot was left unfilled"


def test_missing_files_and_other_schemas_are_refused(tmp_path):
    with pytest.raises(RunFormatError, match="not a run folder"):
        read_run(tmp_path)
    make_run(tmp_path)
    os.remove(tmp_path / "maps/scene-000/ga/003.npy")
    with pytest.raises(RunFormatError, match="missing file"):
        read_run(tmp_path)
    (tmp_path / "run.json").write_text(json.dumps({"schema": "other/9"}))
    with pytest.raises(RunFormatError, match="owlens-run/1"):
        read_run(tmp_path)


def test_large_maps_are_downsampled_for_the_page(tmp_path):
    make_run(tmp_path)
    for path in tmp_path.glob("maps/**/*.npy"):
        np.save(path, np.ones((600, 800), np.float32))
    page = render_report(tmp_path, max_map_side=100).path.read_text()
    assert '"shape": [75, 100]' in page


def open_in_browser(html_path: Path, screenshot: Path | None = None):
    """A headless Chromium driven by selenium with the system chromedriver (never downloads a browser)."""
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        if os.environ.get("CI"):
            pytest.fail("CI must install chromium and chromium-driver (see .ci/run)")
        pytest.skip("chromium / chromedriver not installed")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1200,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.get(html_path.resolve().as_uri())
    return driver


READ_MAP = """
const c = document.getElementById('map');
const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
const alpha = [];
for (let i = 3; i < d.length; i += 4) alpha.push(d[i]);
return {h: c.height, w: c.width, alpha: alpha, token: c.dataset.token, method: c.dataset.method};
"""


def shown_map(driver) -> tuple[np.ndarray, dict]:
    shown = driver.execute_script(READ_MAP)
    return np.array(shown["alpha"], dtype=np.float64).reshape(shown["h"], shown["w"]) / 255, shown


def click_token(driver, index: int):
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, f'.token[data-index="{index}"]').click()


def test_clicked_tokens_show_their_saved_maps(tmp_path):
    folder = make_run(tmp_path)
    driver = open_in_browser(render_report(folder).path)
    try:
        shown = {}
        for token in (3, 1):
            click_token(driver, token)
            shown[token], meta = shown_map(driver)
            assert meta["token"] == str(token) and meta["method"] == "ga"
            saved = np.load(folder / f"maps/scene-000/ga/{token:03d}.npy")
            np.testing.assert_allclose(shown[token], saved, atol=0.5 / 255 + 1e-9)
        assert not np.allclose(shown[1], shown[3])
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import Select

        Select(driver.find_element(By.ID, "method")).select_by_value("random")
        switched, meta = shown_map(driver)
        assert meta["method"] == "random"
        np.testing.assert_allclose(switched, np.load(folder / "maps/scene-000/random/001.npy"), atol=0.5 / 255 + 1e-9)
        driver.find_element(By.ID, "next").click()  # a one-item run pages back onto itself without errors
        errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        assert not errors, errors
    finally:
        driver.quit()


def test_a_run_without_images_shows_its_tables_as_text(tmp_path):
    from owlens.rundir import table, write_run

    write_run(tmp_path, {"title": "figures only", "items": [], "tables": [
        table("methods <b>", ("method", "score"), [["ga", 0.12345], ["<script>x</script>", float("nan")]])]})
    page = render_report(tmp_path).path.read_text()
    assert "methods &lt;b&gt;" in page and "<td>0.1235</td>" in page
    assert "&lt;script&gt;x&lt;/script&gt;" in page and "<script>x" not in page


def test_object_level_explanations_list_their_objects_under_the_map(tmp_path):
    folder = make_run(tmp_path)
    explanation = folder / "maps/scene-000/ga/001.json"
    payload = json.loads(explanation.read_text())
    payload["objects"] = [{"index": 0, "box_xyxy_px": [1, 2, 30, 40], "box_cxcywh": [0.2, 0.4, 0.4, 0.8],
                           "concept": "a photo of a red cross", "concept_score": 0.81, "weight": 1.0, "tokens": 6,
                           "logit_without": 10.6, "logit_drop": 4.2},
                          {"index": 9, "box_xyxy_px": [40, 2, 60, 20], "box_cxcywh": [0.8, 0.2, 0.3, 0.3],
                           "concept": "a photo of a red circle", "concept_score": 0.7, "weight": 0.5, "tokens": 4,
                           "logit_without": 14.7, "logit_drop": 0.1, "logit_without_first": 3.2}]
    explanation.write_text(json.dumps(payload))
    driver = open_in_browser(render_report(folder).path)
    try:
        from selenium.webdriver.common.by import By

        click_token(driver, 1)
        shown = [li.text for li in driver.find_elements(By.CSS_SELECTOR, "#objects li")]
        assert shown == ["“red” rests on the object OWL reads as “red cross” (p 0.81); without it the logit goes "
                         "14.8 → 10.6", "“red” rests on the object OWL reads as “red circle” (p 0.70); without it "
                         "the logit goes 14.8 → 14.7, 3.2 with the first object gone too"]
        click_token(driver, 3)  # that explanation lists no objects: the list is hidden and empty
        assert driver.find_elements(By.CSS_SELECTOR, "#objects li") == []
    finally:
        driver.quit()
    payload["objects"][1]["logit_without_first"] = "low"
    explanation.write_text(json.dumps(payload))
    with pytest.raises(RunFormatError, match=r"objects\[1\]\.logit_without_first"):
        render_report(folder)
    payload["objects"][1]["logit_without_first"] = None
    payload["objects"][0]["concept_score"] = "high"
    explanation.write_text(json.dumps(payload))
    with pytest.raises(RunFormatError, match=r"objects\[0\]\.concept_score"):
        render_report(folder)
