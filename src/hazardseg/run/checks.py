"""Check stage of a training run: what would otherwise fail only once training runs, as one line now.

Each component checks itself against its neighbours; this stage only hands each the neighbour it needs:
the loss its data (does the datamodule paste the outliers its terms learn from?), the optimiser config its
parameters (built once and thrown away), the sweep objective the module and data, and the network's
smallest training batch the datamodule's batch constraints. (Loss vs network outputs and class count are
checked when the module is built, :func:`hazardseg.run.build.build_module`.)
"""

from __future__ import annotations

from hazardseg.errors import ConfigError
from hazardseg.module import Segmenter
from hazardseg.objective import check_objective
from hazardseg.run.build import Run


def check(run: Run) -> None:
    run.module.loss.check_outliers(getattr(run.datamodule, "outliers", None), run.datamodule.num_classes)
    check_objective(run.cfg.get("objective"), run.module, run.datamodule)
    preflight(run.module, run.datamodule)


def preflight(module: Segmenter, datamodule) -> None:
    """The optimiser and scheduler config (built once and thrown away), the data (set up now), and a
    training batch of one image through BatchNorm."""
    module.configure_optimizers()
    datamodule.prepare_data()
    datamodule.setup("fit")
    check_batch_of_one(module, datamodule)


def check_batch_of_one(module: Segmenter, datamodule) -> None:
    """BatchNorm after global pooling (DeepLabV3's ASPP image pooling) cannot train on a batch of one image.

    A configured (or unavoidable) batch of one is refused at start; with ``data.skip_bad_samples`` a
    batch can shrink to one image mid-training, so the module is told to skip such a batch."""
    train = datamodule.dataset("train")
    smallest = min(datamodule.batch_size, len(train))  # training drops a short last batch when it can
    if smallest >= 2 and not datamodule.skip_bad_samples:
        return
    if module.net.smallest_train_batch(datamodule.image_size) < 2:
        return
    if smallest >= 2:
        module.min_train_batch = 2
        return
    why = f"data.batch_size={datamodule.batch_size}" if datamodule.batch_size == 1 else f"the train split has only {len(train)} image"
    raise ConfigError(
        f"{why}: a training batch of one image cannot pass the model's BatchNorm after global pooling "
        f"(e.g. DeepLabV3's ASPP image pooling). Fix: data.batch_size=2 or more (trainer.accumulate_grad_batches=N "
        f"for a larger effective batch), or a model without it (model=unet)"
    )
