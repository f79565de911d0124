"""The recipe steps as pytest suites: `pytest --pyargs harness.suites -m sanity --recipe file.py:NAME`.

plugin.py is the pytest11 entry point (options, ini keys, markers; no torch); fixtures.py is the
run-time half it registers when a run asks for the harness; settings.py reads what was asked.
See suites/README.md for the tiers (sanity, recipe, bench) and where a new test goes, and
docs/plugin.md for the options and how the plugin stays inert.
"""
