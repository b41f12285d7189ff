"""The synthetic HH world: conversations, a response model, gold scores and a noisy annotator."""
