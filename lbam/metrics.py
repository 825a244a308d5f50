"""Classification metrics from a confusion matrix, in float64.

Balanced accuracy and macro-F1 average over the classes present in the test targets: a class with no test
sample has no recall, and scoring it as 0 (as torchmetrics' macro average does) would punish a model for a
class the test set lacks. Per-class accuracy (recall) is None for such a class.
"""

from __future__ import annotations

import torch


def confusion_matrix(targets: torch.Tensor, preds: torch.Tensor, num_classes: int) -> torch.Tensor:
    """[true][pred] counts, int64."""
    idx = targets.long() * num_classes + preds.long()
    return torch.bincount(idx, minlength=num_classes * num_classes).view(num_classes, num_classes)


def classification_metrics(cm: torch.Tensor, class_names: list[str]) -> dict:
    """test_acc, test_balanced_acc, test_macro_f1, per_class_acc and confusion_matrix of ``cm`` ([true][pred])."""
    cm = cm.to(torch.float64)
    tp, support, predicted = cm.diag(), cm.sum(1), cm.sum(0)
    present = support > 0
    recall = tp / support.clamp(min=1)
    precision = tp / predicted.clamp(min=1)
    denom = precision + recall
    f1 = torch.where(denom > 0, 2 * precision * recall / denom.clamp(min=1e-300), torch.zeros_like(denom))
    return {
        "test_acc": float(tp.sum() / cm.sum().clamp(min=1)),
        "test_balanced_acc": float(recall[present].mean()) if present.any() else 0.0,
        "test_macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class_acc": {c: (float(r) if p else None) for c, r, p in zip(class_names, recall, present)},
        "confusion_matrix": cm.long().tolist(),
    }
