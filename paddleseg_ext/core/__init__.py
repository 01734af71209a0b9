"""Training, evaluation, inference, prediction and export."""
from .infer import aug_inference, inference, reverse_transform, slide_inference
from .val import evaluate
from .train import Trainer, TrainSettings, default_hooks, compute_losses, NonFiniteLossError
from .predict import predict, get_image_list
from .export import export

__all__ = ["aug_inference", "inference", "reverse_transform", "slide_inference", "evaluate", "Trainer",
           "TrainSettings", "default_hooks", "compute_losses", "NonFiniteLossError", "predict", "get_image_list", "export"]
