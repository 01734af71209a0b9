"""The trainer hook interface (its own file so hook modules can import it without cycles)."""

from __future__ import annotations

from typing import Any


class Hook:
    """Does nothing at every event; subclasses override the events they need.

    Each event receives the :class:`~paddleseg_ext.core.train.Trainer`; hooks
    share values through ``trainer.storage`` only.
    """

    def before_train(self, trainer: Any) -> None:
        pass

    def after_step(self, trainer: Any) -> None:
        pass

    def after_train(self, trainer: Any) -> None:
        pass
