"""Issue 11, defects 6 and 9: the report gallery never decodes a huge image at full size, and a
useless model is called out in summary.json, the report and the console."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from jumpray.score.report import write_report
from jumpray.score.sanity import model_warnings

ROOT = Path(__file__).parents[3]


def _huge_shard(folder: Path) -> list[dict]:
    """A tar with two 9000x9000 PNGs (about 250 KB each, under PIL's bomb limit) and one JPEG."""
    folder.mkdir()
    members = []
    for key, fmt in (("s0", "PNG"), ("s1", "PNG"), ("s2", "JPEG")):
        buf = io.BytesIO()
        Image.new("L", (9000, 9000), 128).save(buf, format=fmt)
        members.append((f"{key}.{'png' if fmt == 'PNG' else 'jpg'}", buf.getvalue()))
        members.append((f"{key}.cls", b"0"))
    with tarfile.open(folder / "a-000000.tar", "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return [{"shard": "a-000000.tar", "key": k} for k in ("s0", "s1", "s2")]


def test_gallery_of_huge_images_stays_small(tmp_path):
    rows = _huge_shard(tmp_path / "f")
    code = f"""
import json, resource, sys
# The decoder imports torch and torchvision's resize on first use (about 170 MB of libraries):
# imported before the baseline, so what is measured is the images' memory.
import torch, torchvision.transforms.v2.functional
from jumpray.score.export import read_gallery_images
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
images = read_gallery_images({str(tmp_path / "f")!r}, {rows!r}, side=64)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"grew_mb": (after - before) / 1024,
                  "shapes": [None if i is None else list(i.shape) for i in images]}}))
"""
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    # Full decodes would hold 3 x 81 MB of pixels (plus PIL's copies); previews hold 12 KB.
    assert result["grew_mb"] < 60, result
    # The PNGs cannot be decoded reduced and are not previewed; the JPEG is, at preview size.
    assert result["shapes"] == [None, None, [1, 64, 64]]


USELESS = {  # 1,000 samples, 2 epochs (issue 11): chance-level model, scores around 0.1
    "num_samples": 1000,
    "estimated_noise_rate": 0.437,
    "test_accuracy": 0.18,
    "noise_matrix_support": [0] * 10,
}
DEMO = {  # the demo's numbers (10,000 samples, sym:0.4, README)
    "num_samples": 10000,
    "estimated_noise_rate": 0.394,
    "test_accuracy": 0.8135,
    "noise_matrix_support": [700, 900, 500, 800, 600, 950, 300, 900, 950, 900],
}
EDGES = np.linspace(0, 1, 21).tolist()


def test_useless_model_warns_and_the_demo_does_not():
    crowded = {"edges": EDGES, "all": [0, 400, 600] + [0] * 17}  # all within 0.05..0.15
    spread = {"edges": EDGES, "all": [3500, 300, 100] + [50] * 14 + [200, 800, 4400]}
    found = model_warnings(USELESS, crowded, num_classes=10, threshold=0.1)
    assert len(found) == 3
    assert any("near chance" in w for w in found)
    assert any("within 0.05 of the threshold" in w for w in found)
    assert any("no sample of 10 of the 10" in w for w in found)
    assert model_warnings(DEMO, spread, num_classes=10, threshold=0.1) == []
    # 72.5 % flagged (3,000 samples, 4 epochs, issue 11) is implausible on its own.
    many = dict(DEMO, estimated_noise_rate=0.725)
    assert [
        "72.5% of the labels are flagged" in w
        for w in model_warnings(many, spread, num_classes=10, threshold=0.1)
    ] == [True]


def test_support_reads_confident_predictions_not_the_confident_joint():
    # Confident learning's joint always has support (its thresholds follow a useless model down
    # to chance: 60 samples, 3 classes, issue 11's tiny run); the confident predictions do not.
    summary = dict(DEMO, noise_matrix_support=[22, 7, 30])
    spread = {"edges": EDGES, "all": [3500, 300, 100] + [50] * 14 + [200, 800, 4400]}
    found = model_warnings(summary, spread, num_classes=3, threshold=0.1, support=[0, 0, 0])
    assert any("no sample of 3 of the 3" in w for w in found)
    assert model_warnings(summary, spread, num_classes=3, threshold=0.1) == []


def test_report_shows_the_warnings_first(tmp_path):
    summary = dict(USELESS, num_classes=10, estimated_noise_matrix=np.eye(10).tolist())
    summary["warnings"] = ["test accuracy 0.180 is near chance"]
    path = write_report(
        tmp_path,
        summary=summary,
        histograms={"edges": EDGES, "all": [0] * 20},
        history=[],
        gallery_rows=[],
        gallery_images=[],
        config={},
    )
    page = path.read_text()
    assert "Caution" in page and page.index("near chance") < page.index("<table>")
