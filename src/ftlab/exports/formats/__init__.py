"""The export formats, one module each; exports/__init__.py says what a format declares."""
