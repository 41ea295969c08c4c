"""A resume must be the same computation: other weights, inputs or settings are refused, naming the part."""

import json

import pytest

from owlens.persist.fingerprint import Fingerprint, FingerprintMismatch, claim, file_digest, image_listing, weights_of


def _folder(root, content=b"weights"):
    root.mkdir(parents=True, exist_ok=True)
    (root / "model.safetensors").write_bytes(content)
    (root / "config.json").write_text("{}")
    return root


def test_the_first_run_stores_and_the_same_run_resumes(tmp_path):
    images = [tmp_path / "a.png"]
    images[0].write_bytes(b"png")
    print_ = Fingerprint(weights_of({"mllm": _folder(tmp_path / "m")}), {"images": image_listing(images, tmp_path)},
                         {"threshold": 0.5, "template": ("a", "b")})
    claim(tmp_path / "fp.json", print_)
    assert json.loads((tmp_path / "fp.json").read_text())["inputs"]["images"]["a.png"][0] == 3
    claim(tmp_path / "fp.json", print_)  # a resume with the same everything


@pytest.mark.parametrize("change, message", [
    ("weights", r"other weights \(weights\.mllm\.files\.model\.safetensors\)"),
    ("image", r"other inputs \(inputs\.images\.a\.png\)"),
    ("added", r"other inputs \(inputs\.images\.b\.png \(added\)\)"),
    ("settings", r"other settings \(settings\.threshold\)"),
])
def test_any_difference_is_refused_naming_it(tmp_path, change, message, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    model, image = _folder(tmp_path / "m"), tmp_path / "a.png"
    image.write_bytes(b"png")

    def fingerprint(images=(image,), threshold=0.5):
        return Fingerprint(weights_of({"mllm": model}), {"images": image_listing(images, tmp_path)},
                           {"threshold": threshold})

    claim(tmp_path / "fp.json", fingerprint())
    if change == "weights":
        (model / "model.safetensors").write_bytes(b"other weights")
    elif change == "image":
        image.write_bytes(b"another png")
    elif change == "added":
        (tmp_path / "b.png").write_bytes(b"png")
    with pytest.raises(FingerprintMismatch, match=message):
        claim(tmp_path / "fp.json", fingerprint(
            images=(image, tmp_path / "b.png") if change == "added" else (image,),
            threshold=0.7 if change == "settings" else 0.5))


def test_an_image_missing_before_may_appear(tmp_path):
    image = tmp_path / "a.png"
    claim(tmp_path / "fp.json", Fingerprint(inputs={"images": image_listing([image], tmp_path)}))
    image.write_bytes(b"png")
    claim(tmp_path / "fp.json", Fingerprint(inputs={"images": image_listing([image], tmp_path)}))


def test_digests_are_cached_by_path_size_and_mtime(tmp_path):
    path, cache = tmp_path / "w.bin", {}
    path.write_bytes(b"x" * 10)
    first = file_digest(path, cache)
    key = next(iter(cache))
    cache[key] = "cached"
    assert file_digest(path, cache) == "cached" and first != "cached"
    path.write_bytes(b"y" * 11)  # another size: hashed again
    assert file_digest(path, cache) not in ("cached", first)


def test_a_damaged_fingerprint_is_refused(tmp_path):
    (tmp_path / "fp.json").write_text("{not json")
    with pytest.raises(FingerprintMismatch, match="not readable JSON"):
        claim(tmp_path / "fp.json", Fingerprint())
