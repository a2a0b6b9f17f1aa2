"""The training engine (layer 4 of DESIGN.md): one loop for every method.

>>> from fastmix.train import TrainConfig, train
>>> cfg = TrainConfig.for_dataset("digits", method="at", epochs=10, out="runs/digits-at")
>>> trainer = train(cfg)          # writes runs/digits-at/{metrics.jsonl,last.pt,best.pt}
"""
from ..attacks.specs import parse_attack  # attacks by name live beside the attacks
from ..checkpoint import load_model
from ..data.defaults import DATASET_DEFAULTS
from ..eval.suite import accuracy  # the evaluation suite lives in fastmix.eval
from . import checkpoint, dist
from .checkpoint import load as load_checkpoint
from .config import AMP_MODES, COMPILE_MODES, TrainConfig
from .schedule import LRSchedule
from .trainer import Trainer, build_model, train

__all__ = ["TrainConfig", "Trainer", "train", "LRSchedule", "accuracy", "parse_attack", "load_checkpoint",
           "build_model", "load_model", "DATASET_DEFAULTS", "AMP_MODES", "COMPILE_MODES", "checkpoint", "dist"]
