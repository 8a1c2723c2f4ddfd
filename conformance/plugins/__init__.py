"""Integration with test runners: the pytest plugin and its assertions."""
