"""The policy side: sampling, and (next) context distillation, best-of-N, evaluation and PPO."""
