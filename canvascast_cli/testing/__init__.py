"""Test-support helpers: synthetic media with known ground truth, for tests and demo assets."""
