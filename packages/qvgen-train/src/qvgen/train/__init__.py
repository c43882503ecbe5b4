"""The QVGen distillation recipe (QAT with Phi and rank decay) on accelerate."""

__all__: list[str] = []
