"""model.tar.gz for SageMaker endpoints: build, verify, safe extraction, deployment configuration."""

from restyle.package.archive import ArchiveError, build_archive, inspect_archive, safe_extract

__all__ = ["ArchiveError", "build_archive", "inspect_archive", "safe_extract"]
