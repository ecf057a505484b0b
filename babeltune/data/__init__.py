"""Data: the chat record, readers for every supported source, and study A's mixture recipes."""

from babeltune.data.jsonl import JSONLError, iter_jsonl, iter_jsonl_rows
from babeltune.data.mixtures import Mixture, MixtureError, MixtureSpec, build_mixture, language_counts
from babeltune.data.readers import LoadReport, LoadResult, bundled_path, load_records, read_records
from babeltune.data.records import ChatRecord, Message, RecordError, record_from_dict, write_jsonl

__all__ = [
    "ChatRecord",
    "JSONLError",
    "LoadReport",
    "LoadResult",
    "Message",
    "Mixture",
    "MixtureError",
    "MixtureSpec",
    "RecordError",
    "build_mixture",
    "bundled_path",
    "iter_jsonl",
    "iter_jsonl_rows",
    "language_counts",
    "load_records",
    "read_records",
    "record_from_dict",
    "write_jsonl",
]
