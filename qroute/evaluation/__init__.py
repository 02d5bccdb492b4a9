"""Measuring a router on labelled rows and tuning its thresholds (the [eval] extra)."""
