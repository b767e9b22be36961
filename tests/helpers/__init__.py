"""Helpers shared by the tests, imported as ``tests.helpers.<module>``: paths of the shared real data, the CLI runner,
feature-set and activation builders, image builders, and small datasets appended straight into a store."""
