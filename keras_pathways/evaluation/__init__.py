"""Evaluations of attribution methods (docs/method.md §7, §8).

With retraining: ROAR / KAR (``roar``); without: ROAD, deletion and insertion,
faithfulness correlation, GridPG, LeRF and the cascading-randomisation sanity
check. ``evaluate`` runs any of them for several methods and seeds with
intervals, resumable records and tables.
"""

from keras_pathways.evaluation.evaluator import Evaluation
from keras_pathways.evaluation.evaluator import evaluate
from keras_pathways.evaluation.faithfulness import faithfulness_correlation
from keras_pathways.evaluation.gridpg import gridpg
from keras_pathways.evaluation.gridpg import make_grids
from keras_pathways.evaluation.imputation import noisy_linear_impute
from keras_pathways.evaluation.lerf import lerf
from keras_pathways.evaluation.perturbation import deletion
from keras_pathways.evaluation.perturbation import insertion
from keras_pathways.evaluation.retraining import PRESETS
from keras_pathways.evaluation.retraining import removal_order
from keras_pathways.evaluation.retraining import roar
from keras_pathways.evaluation.retraining import summarize
from keras_pathways.evaluation.road import road
from keras_pathways.evaluation.sanity import sanity

__all__ = [
    "Evaluation",
    "PRESETS",
    "deletion",
    "evaluate",
    "faithfulness_correlation",
    "gridpg",
    "insertion",
    "lerf",
    "make_grids",
    "noisy_linear_impute",
    "removal_order",
    "roar",
    "road",
    "sanity",
    "summarize",
]
