"""Mahalanobis distance of decoder features to class-conditional Gaussians with a shared covariance.

Paper: Lee, Lee, Lee, Shin, "A Simple Unified Framework for Detecting Out-of-Distribution Samples and
Adversarial Attacks", NeurIPS 2018 (eq. 1-2). Code: github.com/pokaxpoka/deep_Mahalanobis_detector
(``lib_generation.sample_estimator``: class means, one covariance of the class-centred features,
``sklearn.covariance.EmpiricalCovariance``) and pytorch-ood ``detector.Mahalanobis``
(``fit_features``; score ``-max_k -0.5 * d_k^2``).

Per pixel: ``score(x) = min_k (f(x) - mu_k)^T Sigma^-1 (f(x) - mu_k)`` on the decoder features
``f`` (``outputs["features"]``, D channels at stride s), computed at feature resolution and upsampled
to the logits' size with :func:`hazardseg.maps.resize` (at the feature stride).

Fitting (``ScorerFitting`` caches it per checkpoint): each feature cell gets the *majority* label of
its s x s block of the mask (the mode; a cell whose majority is ignore / outlier / padding is skipped),
so boundary cells are labelled by the class that fills most of them rather than by one arbitrary
pixel. Accumulators are streamed in float64: per class the count and the feature sum, and one D x D
sum of outer products; ``Sigma = (sum f f^T - sum_k n_k mu_k mu_k^T) / n`` (the empirical covariance
of the class-centred features, as the reference) plus a ridge ``ridge * trace(Sigma) / D * I`` that
keeps the inverse defined for features that are (nearly) constant, e.g. dead ReLU channels.

Deviations, and why: no input pre-processing (ODIN-style gradient perturbation: a backward pass per
test batch) and no feature ensemble over layers (the logistic-regression weights of the reference
need outlier data); the features are the decoder output the classifier reads. The squared distance
is reported without the ``-0.5`` factor (same ranking).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from hazardseg.data.labels import IGNORE_LABEL
from hazardseg.errors import ConfigError, DataError
from hazardseg.maps import resize
from hazardseg.scorers.base import FittedScorer

_STATS = ("class_means", "center", "whitening", "class_count")


class Mahalanobis(FittedScorer):
    """Args:
        ridge: relative ridge added to the covariance's diagonal (times its mean eigenvalue).
        chunk: feature vectors scored per matrix product (bounds the memory at ``chunk x D``).
    """

    statistics = _STATS
    fit_version = 1
    name = "mahalanobis"

    # 16,384 vectors a product: its temporaries (chunk x D float32, 8 MiB at D = 128) are reused from the heap, where
    # 65,536 made them large enough to be mapped and faulted in afresh for every chunk (a 2048x1024 frame at stride
    # 4: 76 -> 30 ms); the values are the same (each row's products do not depend on the chunk, tested)
    def __init__(self, ridge: float = 1e-4, chunk: int = 1 << 14) -> None:
        super().__init__()
        if not ridge >= 0:
            raise ConfigError(f"scorer.mahalanobis.ridge={ridge}: must be >= 0")
        self.ridge, self.chunk = float(ridge), int(chunk)
        # Empty until fit/load (D and K are only known from the data). Scoring uses whitened
        # coordinates: z = (f - center) @ whitening, so d_k^2 = ||z - m_k||^2 with m_k the whitened means.
        self.register_buffer("class_means", torch.empty(0))  # (K, D) whitened class means
        self.register_buffer("center", torch.empty(0))  # (D,) mean of all fitted features
        self.register_buffer("whitening", torch.empty(0))  # (D, D): W W^T = Sigma^-1
        self.register_buffer("class_count", torch.empty(0, dtype=torch.long))  # (K,) fitted cells per class

    def _has_statistics(self) -> bool:
        return self.whitening.numel() > 0

    # ------------------------------------------------------------------ fitting
    def accumulate(self, batch: Mapping[str, Any], sums: tuple[Tensor, ...] | None) -> tuple[Tensor, ...]:
        features, labels = _cells(batch)
        if sums is None:
            k, d = batch["logits"].shape[1], features.shape[1]
            sums = (torch.zeros(k, dtype=torch.float64, device=features.device),  # count per class
                    torch.zeros(k, d, dtype=torch.float64, device=features.device),  # feature sum per class
                    torch.zeros(d, d, dtype=torch.float64, device=features.device))  # sum of outer products
        count, class_sums, outer = sums
        keep = labels < count.numel()  # known classes only
        f, y = features[keep].double(), labels[keep]
        count.index_add_(0, y, torch.ones_like(y, dtype=torch.float64))
        class_sums.index_add_(0, y, f)
        outer += f.T @ f
        return sums

    def set_statistics(self, count: Tensor, sums: Tensor, outer: Tensor) -> None:
        n = count.sum()
        if n < 2:
            raise DataError("scorer 'mahalanobis'.fit: fewer than 2 labelled feature cells; fit on more training batches")
        seen = count > 0
        if not seen.all():
            warnings.warn(f"scorer 'mahalanobis': classes {(~seen).nonzero().flatten().tolist()} have no labelled training "
                          "feature cell; they are left out of the minimum", RuntimeWarning, stacklevel=3)
        means = sums[seen] / count[seen, None]
        cov = (outer - (means.T * count[seen]) @ means) / n
        d = cov.shape[0]
        cov = cov + (self.ridge * cov.diagonal().sum() / d + 1e-12) * torch.eye(d, dtype=cov.dtype, device=cov.device)
        # Sigma^-1 = W W^T with W = L^-T, L the Cholesky factor of Sigma: whitened z = (f - c) @ W.
        chol = torch.linalg.cholesky(cov)
        whitening = torch.linalg.solve_triangular(chol, torch.eye(d, dtype=cov.dtype, device=cov.device), upper=False).T
        center = sums.sum(0) / n
        device = self.whitening.device
        self.center = center.float().to(device)
        self.whitening = whitening.float().to(device)
        self.class_means = ((means - center) @ whitening).float().to(device)
        self.class_count = count.long().to(device)

    # ------------------------------------------------------------------ scoring
    def score_outputs(self, outputs: Mapping[str, Any]) -> Tensor:
        features, logits = outputs.get("features"), outputs["logits"]
        if features is None or "feature_stride" not in outputs:
            raise DataError("scorer 'mahalanobis': needs the network's 'features' and 'feature_stride' outputs")
        n, d, h, w = features.shape
        if d != self.center.numel():
            raise DataError(f"scorer 'mahalanobis': statistics were fitted on {self.center.numel()}-channel features but "
                            f"the network gives {d}; refit (a new checkpoint is refitted automatically)")
        flat = features.detach().float().permute(0, 2, 3, 1).reshape(-1, d)
        distances = torch.cat([self._min_distance(part) for part in flat.split(self.chunk)])
        return resize(distances.reshape(n, h, w), tuple(logits.shape[-2:]), stride=int(outputs["feature_stride"]))

    def _min_distance(self, f: Tensor) -> Tensor:
        z = (f - self.center) @ self.whitening  # (M, D), whitened
        m = self.class_means
        # ||z - m_k||^2 = ||z||^2 - 2 z.m_k + ||m_k||^2; clamp the round-off below 0.
        sq = z.pow(2).sum(1, keepdim=True) - 2 * z @ m.T + m.pow(2).sum(1)
        return sq.amin(dim=1).clamp_min(0)

    def extra_repr(self) -> str:
        return f"ridge={self.ridge}, classes={self.class_means.shape[0] if self.is_fitted else 0}, fitted={self.is_fitted}"


def _cells(batch: Any) -> tuple[Tensor, Tensor]:
    """(M, D) feature vectors and the (M,) majority label of each feature cell's stride x stride block."""
    if not isinstance(batch, Mapping) or not {"features", "feature_stride", "mask", "logits"} <= set(batch):
        keys = sorted(batch) if isinstance(batch, Mapping) else type(batch).__name__
        raise DataError(f"scorer 'mahalanobis'.fit: each item needs 'logits', 'features', 'feature_stride' and 'mask'; got {keys}")
    features, mask, stride = batch["features"].detach().float(), batch["mask"], int(batch["feature_stride"])
    n, d, h, w = features.shape
    labels = _majority_labels(mask, stride, (h, w))
    return features.permute(0, 2, 3, 1).reshape(-1, d), labels.reshape(-1)


def _majority_labels(mask: Tensor, stride: int, size: tuple[int, int]) -> Tensor:
    """Mode of each stride x stride block of ``mask`` (N, H, W) on an (h, w) grid; the mask is padded to
    (h*stride, w*stride) with 255 (not a class) as the network padded the image. A tie goes to the smaller
    label value, i.e. to a class rather than to ignore / outlier / padding."""
    h, w = size
    mask = mask.long()
    pad_h, pad_w = h * stride - mask.shape[-2], w * stride - mask.shape[-1]
    mask = F.pad(mask, (0, max(pad_w, 0), 0, max(pad_h, 0)), value=IGNORE_LABEL)[:, : h * stride, : w * stride]
    values = torch.unique(mask)
    # Count each label value per block (one value at a time: memory stays at one (N, h, w) map per value).
    counts = torch.stack([F.avg_pool2d((mask == v).float().unsqueeze(1), stride)[:, 0] for v in values])
    return values[counts.argmax(0)]
