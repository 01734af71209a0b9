"""What the trainer's hooks share during a run: one storage object.

detectron2 keeps the values of a run in one ``EventStorage`` that every hook
reads and writes; hooks never set attributes on the trainer for each other.
This is that object, reduced to what our hooks exchange.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional


def _no_best() -> Dict[str, Any]:
    return {"mIoU": -1.0, "iter": -1}


@dataclass
class TrainStorage:
    """The shared state of one training run.

    Attributes:
        scalars: the latest step's loss terms (``loss``, ``loss_<output>``) and ``lr``.
        step_ok: whether the latest step finished with finite losses (and so updated the weights).
        batch_cost: seconds of the latest step, data loading included.
        reader_cost: seconds the latest step waited for its batch.
        latest_eval: the metrics of the latest completed evaluation plus its ``iter``, or None.
        best: the best validation mIoU so far and its iteration (``{'mIoU', 'iter'}``, the
            layout every checkpoint's ``state.json`` has kept).
        stop_signal: name of the signal (``SIGINT``/``SIGTERM``) that asked the run to stop.
        early_stop: why early stopping ended the run, or None.
        sample_indices: validation images whose predictions a hook wants (VisualDL draws them).
        eval_samples: those images from the latest evaluation: index -> ``{'img' (C x H x W, as
            the model saw it), 'label' (H x W), 'pred' (H x W)}``.
        eval_model: the model evaluated and saved as ``best_model`` when it is not the trained
            one (the weight average of :mod:`.ema`); None: the trained model.
    """

    scalars: Dict[str, float] = field(default_factory=dict)
    step_ok: bool = True
    batch_cost: float = 0.0
    reader_cost: float = 0.0
    latest_eval: Optional[Dict[str, Any]] = None
    best: Dict[str, Any] = field(default_factory=_no_best)
    stop_signal: Optional[str] = None
    early_stop: Optional[str] = None
    sample_indices: List[int] = field(default_factory=list)
    eval_samples: Dict[int, Dict[str, Any]] = field(default_factory=dict)
    eval_model: Optional[Any] = None

    def model_to_evaluate(self, trained: Any) -> Any:
        """``eval_model`` when a hook set one, else ``trained``."""
        return trained if self.eval_model is None else self.eval_model

    @property
    def stopping(self) -> bool:
        """True once a signal or early stopping asked the run to end."""
        return bool(self.stop_signal or self.early_stop)

    def evaluated_at(self, iteration: int) -> bool:
        """True when the latest evaluation ran at ``iteration`` (i.e. in this step's hooks)."""
        return self.latest_eval is not None and self.latest_eval.get("iter") == iteration
