"""Runs of many cases: the layer x implementation matrix behind ``attnconf check``."""
