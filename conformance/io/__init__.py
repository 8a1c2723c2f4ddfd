"""Files: golden fixtures."""
