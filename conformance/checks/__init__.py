"""The checks: one case on one implementation (engine), elementwise comparison, tolerances."""
