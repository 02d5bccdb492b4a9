"""qroute: label a query with the domain of its nearest labelled examples."""

from qroute.config import Settings, load_settings
from qroute.routing.classifier import Classifier
from qroute.types import Decision, Example, Hit, LabelScore, Prediction

__all__ = [
    "Classifier",
    "Decision",
    "Example",
    "Hit",
    "LabelScore",
    "Prediction",
    "Settings",
    "load_settings",
]
