"""Fine-tuning the NLI fallback and the encoder on the table (the [train] extra)."""
