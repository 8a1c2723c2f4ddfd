"""Cases and how they are drawn: seeded arrays, documented examples, edge cases, Hypothesis strategies."""
