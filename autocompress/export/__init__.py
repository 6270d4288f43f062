"""Export a study's candidate as a deployable, verified artifact, and load it back."""

from __future__ import annotations

from autocompress.export.artifact import ArtifactError, load
from autocompress.export.write import ExportError, ExportResult, export

__all__ = ["ArtifactError", "ExportError", "ExportResult", "export", "load"]
