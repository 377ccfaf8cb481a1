"""Real torch.distributed (gloo, 2 CPU processes): metric states reduce across ranks."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from hazardseg.metrics import AnomalyMetrics, PerImageAnomalyMetrics


def _data():
    gen = torch.Generator().manual_seed(0)
    labels = torch.rand(4, 48, 64, generator=gen) < 0.05
    scores = torch.randn(4, 48, 64, generator=gen) + 1.5 * labels
    return scores, labels


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    from hazardseg.metrics import anomaly

    scores, labels = _data()
    kept = AnomalyMetrics()  # a small evaluation keeps its pixels as they are: sync() puts them into the states
    kept.update(scores[rank::world], labels[rank::world])
    anomaly.SORT_BELOW_PIXELS = 0  # from here on, straight into the histogram
    pooled, per_image = AnomalyMetrics(), PerImageAnomalyMetrics()
    pooled.update(scores[rank::world], labels[rank::world])  # each rank sees half of the images
    per_image.update(scores[rank::world], labels[rank::world])
    local_blocks = pooled.offsets >= 0  # each rank allocated the blocks its own pixels reached
    result = {"pooled": pooled.compute(), "per_image": per_image.compute(), "kept": kept.compute()}  # compute() syncs
    result["blocks_restored"] = torch.equal(pooled.offsets >= 0, local_blocks)  # unsync: the local layout again
    # block ids as a plain list: shared tensors die with the worker, and a big pickle would fill the pipe
    queue.put((rank, torch.nonzero(local_blocks).ravel().tolist(), result))
    dist.barrier()
    dist.destroy_process_group()


def test_two_process_gloo_equals_single_process():
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    mp.spawn(_worker, args=(2, _free_port(), queue), nprocs=2, join=True)
    answers = dict((rank, (blocks, result)) for rank, blocks, result in (queue.get(timeout=60) for _ in range(2)))
    # the ranks' pools held different blocks: the sync had to agree on a common layout before summing
    assert answers[0][0] != answers[1][0]
    distributed = answers[0][1]
    assert distributed["blocks_restored"] and answers[1][1]["blocks_restored"]
    assert answers[1][1]["pooled"] == distributed["pooled"]
    scores, labels = _data()
    pooled, per_image = AnomalyMetrics(), PerImageAnomalyMetrics()
    pooled.update(scores, labels)
    per_image.update(scores, labels)
    for key, value in pooled.compute().items():
        assert distributed["pooled"][key] == pytest.approx(value, abs=1e-12), key
        assert distributed["kept"][key] == pytest.approx(value, abs=1e-12), key
    for key, value in per_image.compute().items():
        assert distributed["per_image"][key] == pytest.approx(value, abs=1e-12), key


def _set_loss_worker(rank: int, world: int, port: int, queue) -> None:
    from hazardseg.losses.mask_classification import _set_criterion

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    criterion = _set_criterion(4, {"class_weight": 2.0, "mask_weight": 5.0, "dice_weight": 5.0, "no_object_weight": 0.1,
                                   "train_num_points": 64, "oversample_ratio": 3.0, "importance_sample_ratio": 0.75})
    classes = [torch.arange(1 + 2 * rank), torch.arange(1)]  # rank 0: 2 target masks, rank 1: 4
    queue.put((rank, float(criterion.get_num_masks(classes, torch.device("cpu")))))
    dist.barrier()
    dist.destroy_process_group()


def test_mask2former_set_loss_averages_the_target_mask_count_over_ranks():
    """As detectron2's SetCriterion: the loss of every rank is normalised by the mean target-mask count of all
    ranks (transformers does it only under accelerate)."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    mp.spawn(_set_loss_worker, args=(2, _free_port(), queue), nprocs=2, join=True)
    counts = dict(queue.get(timeout=60) for _ in range(2))
    assert counts == {0: 3.0, 1: 3.0}  # (2 + 4) / 2 on both ranks
