"""The recipe steps as pytest suites: `pytest --pyargs harness.suites -m sanity --recipe file.py:NAME`.

See suites/README.md for the tiers (sanity, recipe, bench) and where a new test goes.
"""
