"""Alembic's scripts for the database schema: env.py and one file per revision in versions/."""
