"""``torchrun``: as ``local``, but every cell is a ``torchrun --standalone`` group of
``nproc`` ranks under its worker (threads divided by ``nproc``); output in ``train.log``."""
from __future__ import annotations

from typing import ClassVar

from varscale.grid.executors.local import LocalExecutor


class TorchrunExecutor(LocalExecutor):
    name: ClassVar[str] = "torchrun"
    torchrun: ClassVar[bool] = True
