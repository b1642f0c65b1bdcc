"""GPU benchmarks of speed and memory: the harness (random models in real shapes, timed runs, reports),
the suites behind `pyramid bench`, and the policy timer for the selection-overhead suite.

A subpackage of its own, not part of the library's import path: nothing else in pyramid_core imports
it (tests/test_packaging.py checks), and it ships with the package so that `pyramid bench` runs on a
GPU machine from an install as well as from a checkout. The scripts in benchmarks/ build on it.
"""
