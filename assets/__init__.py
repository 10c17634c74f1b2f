"""Package data: the embedded default face model and other shipped data (see README.md here)."""
