"""Models: online statistics and River anomaly detectors, one module per model.

``MODEL_PARAMS`` maps each model name to its parameter dataclass (policy section ``models``).
"""

from __future__ import annotations

from detectors.models import card_stats, feedback_model, location_model

MODEL_PARAMS: dict[str, type] = {
    "card_stats": card_stats.Params,
    "location_model": location_model.Params,
    "feedback": feedback_model.Params,
}
