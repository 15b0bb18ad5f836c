"""FLRDF Studio's Gradio dashboard: ``build_app`` (dashboard.app) composes one tab per module
(``inspect_tab`` now; ``train_tab`` and ``evaluate_tab`` later) over a shared
``DashboardContext`` (dashboard.context). Launch it with ``python app.py``.
"""
