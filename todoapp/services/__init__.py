"""The rules of the domain, callable without HTTP: no FastAPI import below here."""
