"""The TUI's models: plain state the screens keep and the widgets render, with no Textual in them.

``progress``: what a run's events say about each step on each host. ``library``: the library's
entries (valid runbooks and invalid files) and the filter over them. Nothing here imports
``textual``: a model is tested, and used by a bench or another front end, without an app.
"""
