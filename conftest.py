"""Root conftest: the project's own tests use pytester to run the suites as a user would.

The suites' options, markers and fixtures come from the installed plugin (suites/plugin.py,
registered through the pytest11 entry point), not from here.
"""
pytest_plugins = ["pytester"]
