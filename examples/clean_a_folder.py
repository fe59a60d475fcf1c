"""Clean a folder of images with jumpray's Python API, notebook style (docs/api.md).

Each ``# %%`` cell runs on its own in VS Code, PyCharm or Jupytext; as a script it runs top to
bottom. The folder here is made from Fashion-MNIST with 30 % of the labels made wrong on purpose,
so the output can be checked against the truth; point ``FOLDER`` at your own
``folder/<class name>/<image>`` tree instead.

    python examples/clean_a_folder.py                               # 3000 images, 8 epochs
    JUMPRAY_EXAMPLE_LIMIT=300 JUMPRAY_EXAMPLE_EPOCHS=2 python examples/clean_a_folder.py

Settings (environment): ``JUMPRAY_EXAMPLE_LIMIT`` images (3000), ``JUMPRAY_EXAMPLE_EPOCHS``
(8), ``JUMPRAY_EXAMPLE_DIR`` where everything is written (a new temporary folder),
``JUMPRAY_EXAMPLE_CONFIG`` (``fashion_mnist``; any config file or shipped name).
"""

# %% Settings
import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

import jumpray
from jumpray.data.fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist

LIMIT = int(os.environ.get("JUMPRAY_EXAMPLE_LIMIT", "3000"))
EPOCHS = int(os.environ.get("JUMPRAY_EXAMPLE_EPOCHS", "8"))
CONFIG = os.environ.get("JUMPRAY_EXAMPLE_CONFIG", "fashion_mnist")
WORK = Path(os.environ.get("JUMPRAY_EXAMPLE_DIR") or tempfile.mkdtemp(prefix="jumpray-example-"))
MLFLOW_URI = f"sqlite:///{WORK / 'mlflow.db'}"
SETTINGS = {
    "train": {"epochs": EPOCHS},
    "tracking": {"enabled": True, "uri": MLFLOW_URI, "experiment": "clean-a-folder"},
}
print(f"writing under {WORK}")

# %% A folder of images: one sub-folder per class, 30 % of the images in the wrong one
images, true_labels = load_fashion_mnist("train", limit=LIMIT)
rng = np.random.default_rng(0)
wrong = rng.random(LIMIT) < 0.3
given = np.where(wrong, (true_labels + rng.integers(1, 10, LIMIT)) % 10, true_labels)
FOLDER = WORK / "images"
class_dirs = [f"{c}-{name.replace('/', '-')}" for c, name in enumerate(FASHION_MNIST_CLASSES)]
for i, (image, label) in enumerate(zip(images, given, strict=True)):
    path = FOLDER / class_dirs[label] / f"{i:06d}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
test_images, test_labels = load_fashion_mnist("test", limit=max(LIMIT // 3, 100))

# %% The folder (and a clean test set) as shards
index = jumpray.write_shards(WORK / "shards", folder=FOLDER)
jumpray.write_shards(
    WORK / "test-shards", test_images, test_labels, num_classes=10, class_names=class_dirs
)
print(f"{index.num_samples} images in {len(index.class_names)} classes -> {WORK / 'shards'}")

# %% Clean: train Jump-teaching, score every image, decide, write the kept images
result = jumpray.clean(
    WORK / "shards",
    WORK / "clean",
    config=CONFIG,
    test_shards=WORK / "test-shards",
    **SETTINGS,
)
s = result.summary
print(
    f"{s['num_label_issues']} of {s['num_samples']} labels flagged; "
    f"{s['num_kept']} images kept in {result.clean_shards}; test accuracy {s['test_accuracy']:.3f}"
)

# %% The worst samples: the label table, most suspicious first
table = result.labels.to_pandas()
# idx numbers the images in the order the folder was read: class folders, then file names.
origin = np.array([int(p.stem) for d in sorted(class_dirs) for p in sorted((FOLDER / d).glob("*"))])
worst = table[table["is_label_issue"]].sort_values("rank").head(10)
for row in worst.itertuples():
    i = origin[row.idx]
    print(
        f"#{int(row.rank):<3} {i:06d}.png: in {class_dirs[row.given_label]}, the model says "
        f"{class_dirs[row.predicted_label]} (p(label) {row.prob_given:.2f}; "
        f"truly {class_dirs[true_labels[i]]})"
    )
flagged = origin[table.loc[table["is_label_issue"], "idx"].to_numpy()]
if flagged.size:
    print(f"{wrong[flagged].mean():.0%} of the flagged images really were in the wrong folder")

# %% Retrain on the cleaned shards
retrained = jumpray.train_model(
    result.clean_shards,
    WORK / "retrain",
    config=CONFIG,
    test_shards=WORK / "test-shards",
    **SETTINGS,
)
final = retrained.summary["final"]
print(
    f"retrained on {retrained.summary['num_samples']} kept images: test accuracy "
    f"{final.get('test_accuracy', float('nan')):.3f}"
)

# %% The retrained network from MLflow: uint8 images in, probabilities out
if retrained.model_uri:
    import mlflow

    mlflow.set_tracking_uri(MLFLOW_URI)
    model = mlflow.pyfunc.load_model(retrained.model_uri)
    probs = model.predict(test_images[:8, None])
    print(
        f"{retrained.model_uri}: predicted {probs.argmax(axis=1).tolist()}, "
        f"true {test_labels[:8].tolist()}"
    )
