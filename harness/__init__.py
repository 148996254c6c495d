"""canary-sweep harness: Optuna sweeps that fine-tune NVIDIA NeMo Canary models, tracked in MLflow."""

__version__ = "0.1.0"
