"""Command groups of the ``cardpipe`` CLI; each module has a ``register(app)``."""
