"""The conformance suite: checks any implementation of the attention layers against the
NumPy reference. See ``conformance.contract`` for what an implementation provides."""
