"""Synthetic StreetHazards: a deterministic generator writing the EXACT release format, plus its datamodule.

The generated tree is byte-identical for the same parameters and seed, and is loaded through exactly the
same :class:`~hazardseg.data.streethazards.StreetHazardsDataset` code path as the real data::

    <root>/train/train.odgt  <root>/train/validation.odgt  <root>/test/test.odgt   (one JSON array each)
    <root>/train/images/training/t1-3/<i>.png      RGBA, alpha 255
    <root>/train/annotations/training/t1-3/<i>.png mode L, values 1..14 (14 = anomaly, test only)
    <root>/train/images/validation/t4/<i>.png ...
    <root>/test/images/test/t5/<i>.png, t6/<i>.png (global ids like the release)
    <root>/synthetic.json  (generator version + parameters; written last: marks a complete dataset)

Scenes are road scenes in perspective: sky (unlabeled) above a varying horizon, building / wall /
vegetation / fence facades along both sides, sidewalks, the road with dashed centre line and edge lines,
poles with traffic signs, cars, pedestrians and "other" clutter (bins, boxes, benches), with per-class
colour distributions, textures, per-instance colour variation, per-image lighting / tint and pixel
noise. Test images additionally get 1-3 *anomalies* on the road or sidewalk whose shapes and
appearances never occur in train/val (irregular blobs, four-legged animal silhouettes, checkered /
striped polygons in saturated colours), labelled 14.

Generation is atomic and safe under concurrency: a ``fcntl`` lock on ``<root>.lock`` serialises
generators; each writes into a temporary folder next to the target and ``os.rename``s it into place.
"""

from hazardseg.data.synthetic.datamodule import SyntheticStreetHazardsDataModule
from hazardseg.data.synthetic.render import render_scene
from hazardseg.data.synthetic.writer import (
    DEFAULTS,
    GENERATOR_VERSION,
    dataset_id,
    default_cache_dir,
    ensure_synthetic,
    generate_streethazards,
    is_complete,
)

__all__ = ["DEFAULTS", "GENERATOR_VERSION", "SyntheticStreetHazardsDataModule", "dataset_id", "default_cache_dir",
           "ensure_synthetic", "generate_streethazards", "is_complete", "render_scene"]
