"""One module per resource; `app.py` includes each one's `router`."""
