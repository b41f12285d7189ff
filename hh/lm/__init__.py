"""Language modelling: the next-token loss, its jitted step, and the pretraining stage."""
