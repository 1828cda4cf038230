"""musicid serve: every family behind one HTTP service, following registry aliases (app.py, slots.py)."""
