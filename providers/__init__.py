"""providers plugin family of flaggerpy, importable as flaggerpy.providers (see docs/plugins.md)."""
