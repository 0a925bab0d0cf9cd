"""Import and export of the formats other labeling tools write: one module per format, by name.

`import_annotations` and `export_project` are the entry points; `format_names()` lists the formats.
"""

from projects.formats.common import FormatError, TransferError
from projects.formats.exporter import ExportReport, export_project
from projects.formats.importer import ImportOptions, ImportReport, import_annotations, load_mapping
from projects.formats.registry import format_names, get_format

__all__ = ["ExportReport", "FormatError", "ImportOptions", "ImportReport", "TransferError", "export_project",
           "format_names", "get_format", "import_annotations", "load_mapping"]
