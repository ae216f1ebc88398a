"""SLOs as code: an SLO file becomes Prometheus rule files and promtool test suites.

``spec`` loads and validates SLO files, ``rules`` renders recording and alerting rules,
``promtests`` renders promtool unit tests that prove the alerts' behaviour, ``cli`` is ``qobs alerts``.
"""
