"""jumpray: find and learn through wrong labels in web-crawled image data with Jump-teaching on Ray.

Importing ``jumpray`` is cheap: it pulls in neither Ray, MLflow nor webdataset. The layers and
their import direction are listed in README.md ("Architecture") and enforced by
``tests/unit/test_architecture.py``.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
