"""Every common order-file shape read into bounded chunks of text columns.

``iter_table`` is the one entry: it recognises the format from the content (magic bytes first,
the name second), decodes it, finds the header and yields polars frames of at most about
``chunk_rows`` rows. Every frame has the same shape, whatever the source format:

- ``line`` (Int64): 1-based line of the row in the source (the header is line 1, blank lines
  still advance the count); the sheet row for xlsx, the line for JSON Lines.
- one Utf8 column per requested column: the original, untrimmed text; null when the row has no
  such field.
- ``field_count_ok`` (Boolean): the row has as many fields as the header (or as requested
  columns when there is no header).

File-level problems raise ``FileRejected`` with a sentence meant for a person.
"""

from __future__ import annotations

from core.validation.readers.errors import FileRejected
from core.validation.readers.header import HeaderSeen
from core.validation.readers.table import FIELD_COUNT_OK, LINE, iter_table

__all__ = ["FIELD_COUNT_OK", "LINE", "FileRejected", "HeaderSeen", "iter_table"]
