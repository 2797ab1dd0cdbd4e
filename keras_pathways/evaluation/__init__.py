"""Evaluations of attribution methods: ROAR / KAR, LeRF and the sanity check (SPEC §7)."""

from keras_pathways.evaluation.lerf import lerf
from keras_pathways.evaluation.retraining import PRESETS
from keras_pathways.evaluation.retraining import removal_order
from keras_pathways.evaluation.retraining import roar
from keras_pathways.evaluation.retraining import summarize
from keras_pathways.evaluation.sanity import sanity

__all__ = ["PRESETS", "lerf", "removal_order", "roar", "sanity", "summarize"]
