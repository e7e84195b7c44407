"""`make soak`: two production workers under load through restarts; see soak/run.py."""
