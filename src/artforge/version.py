"""The package version, written into every run's config.json (``artforge_version``)."""

__version__ = "0.1.0"
