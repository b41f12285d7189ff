"""PPO against the PM (Bai et al. 2022, §4.1): the math (step.py), the stage (train.py) and its memory plan (plan.py)."""
