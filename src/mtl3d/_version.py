"""The package version (pyproject.toml reads it), in a module any layer can import."""

__version__ = "0.1.0"
