"""The live conformance suite, `pytest conformance/ --env dev|prod`: its pytest plugin (plugin.py: options, the
target, fixtures, the report), its checks (test_*.py, one module per dimension) and its report (report.py).
conformance/conftest.py loads the plugin; the checks see each environment through the targets package only.
"""
