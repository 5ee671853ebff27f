"""An ``evaluate`` metric module for speech emotion recognition, loaded from this folder.

``evaluate.load("accuracy")`` fetches its script from the Hugging Face Hub; this local
module works offline and reports every figure the project publishes in one call.
"""

import datasets
import evaluate
import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, recall_score

_DESCRIPTION = "Accuracy, macro-F1, unweighted average recall, per-class recall and the confusion matrix."
_KWARGS_DESCRIPTION = """
Args:
    predictions: predicted class ids.
    references: true class ids.
    num_classes: number of classes (rows/columns of the confusion matrix).
Returns:
    accuracy, macro_f1, uar, per_class_recall (list), confusion_matrix (list of lists, rows = truth).
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class SerMetrics(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int32"), "references": datasets.Value("int32")}),
        )

    def _compute(self, predictions, references, num_classes=8):
        labels = list(range(num_classes))
        predictions, references = np.asarray(predictions), np.asarray(references)
        recall = recall_score(references, predictions, labels=labels, average=None, zero_division=0)
        return {
            "accuracy": float(accuracy_score(references, predictions)),
            "macro_f1": float(f1_score(references, predictions, labels=labels, average="macro", zero_division=0)),
            "uar": float(np.mean(recall)),
            "per_class_recall": recall.tolist(),
            "confusion_matrix": confusion_matrix(references, predictions, labels=labels).tolist(),
        }
