"""The serving path, in call order: retrieval, vote, head, zero-shot, batching, classifier."""
