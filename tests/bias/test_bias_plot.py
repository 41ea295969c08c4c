"""The bias plot is a valid, self-contained SVG with one whisker and dot per condition and row."""

import xml.etree.ElementTree as ET

from owlens.viz.bias_plot import bias_plot_svg

SVG = "{http://www.w3.org/2000/svg}"


def _figure(delta, lo, hi):
    return {"expected": {"delta": delta, "ci95": [lo, hi], "p_value": 0.01, "n": 10, "n_missing": 0}}


def test_rows_conditions_and_missing_figures():
    summary = {"groups": {
        "men": {"traits": {"nurse": {"clean": {}, "adversarial": _figure(1.5, 1.0, 2.0),
                                     "random": _figure(0.1, -0.2, 0.3), "identity": _figure(None, None, None)}}},
        "women": {"n_images": 0}}}
    root = ET.fromstring(bias_plot_svg(summary, title="gender <test>"))
    assert root.tag == f"{SVG}svg"
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert "men · nurse" in texts and "gender <test>" in texts and "adversarial" in texts
    circles = [c for c in root.iter(f"{SVG}circle") if c.find(f"{SVG}title") is not None]
    assert len(circles) == 2  # the identity figure has no pairs: no dot, no crash
    assert circles[0].find(f"{SVG}title").text.startswith("adversarial: +1.500 [+1.000, +2.000]")
    assert "href" not in bias_plot_svg(summary)  # self-contained: nothing linked
