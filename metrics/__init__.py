"""metrics plugin family of flaggerpy, importable as flaggerpy.metrics (see docs/plugins.md)."""
