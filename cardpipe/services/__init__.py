"""Use cases: plain functions over a SQLAlchemy session, called by routes, actors and the CLI."""
