"""The checkpoint readers' limits. The modules of fadiag.checkpoint read them from here at call time, so a
caller may lower or raise one: set it here, or on the package (``fadiag.checkpoint.MAX_PICKLE_OPS = ...``,
which sets it here)."""

#: Refuse files larger than this unless the caller raises it: a guard against absurd inputs.
MAX_CHECKPOINT_BYTES = 8 * 1024**3
#: A pickle stream (torch's data.pkl, or a legacy file's leading pickles) over this many bytes is refused.
MAX_PICKLE_BYTES = 64 * 1024**2
#: ... and over this many opcodes (an honest state dict needs ~20 per tensor).
MAX_PICKLE_OPS = 4_000_000
#: A legacy torch file holds five pickles before its raw storages: magic, protocol, sys info, object, keys.
LEGACY_PICKLES = 5
#: An archive expanding past this many bytes, at over MAX_ZIP_RATIO times its size, is refused as a bomb.
MAX_ZIP_EXPANDED = 256 * 1024**2
MAX_ZIP_RATIO = 200

NAMES = ("MAX_CHECKPOINT_BYTES", "MAX_PICKLE_BYTES", "MAX_PICKLE_OPS", "LEGACY_PICKLES", "MAX_ZIP_EXPANDED",
         "MAX_ZIP_RATIO")
