"""Text to vectors: the sentence encoder (dense) and n-gram features (lexical)."""
