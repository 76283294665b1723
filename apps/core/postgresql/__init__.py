"""Django's PostgreSQL backend, taking a pooled connection without a round trip when it
cannot have been dropped (`base`). `main/settings.py` names it as the ENGINE."""
