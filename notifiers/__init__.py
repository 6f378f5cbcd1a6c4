"""notifiers plugin family of flaggerpy, importable as flaggerpy.notifiers (see docs/plugins.md)."""
