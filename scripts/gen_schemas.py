"""Regenerate the generated kerno-audit v1 schema files from the code they must not drift from.

common.schema.json comes from kerno_otel/records/patterns.py (the leak patterns),
record.schema.json from kerno_otel/records/catalogue.py (the event types), and
bundle.schema.json embeds every file of the set (for validators given one file).
The per-type details schemas beside them are written by hand and are not touched.

    python scripts/gen_schemas.py          # rewrite the two files
    python scripts/gen_schemas.py --check  # exit 1 if either differs (CI)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kerno_otel.records.catalogue import BUILTIN_TYPES
from kerno_otel.records.schema import (
    BUNDLE,
    COMMON,
    RECORD,
    SchemaSet,
    bundle_document,
    common_document,
    dumps,
    record_document,
)

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas" / "kerno-audit" / "v1"


def generated() -> dict[str, str]:
    """File name -> the text it must hold."""
    documents = SchemaSet.builtin().documents()
    return {
        COMMON: dumps(common_document()),
        RECORD: dumps(record_document(BUILTIN_TYPES)),
        # From the files as they are generated here, not as committed: one run is enough.
        BUNDLE: dumps(
            bundle_document(
                documents | {COMMON: common_document(), RECORD: record_document(BUILTIN_TYPES)}
            )
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report drift instead of writing")
    args = parser.parse_args(argv)
    stale = []
    for name, text in generated().items():
        path = SCHEMA_DIR / name
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        stale.append(name)
        if not args.check:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    if args.check and stale:
        print(f"out of date: {', '.join(stale)} (run scripts/gen_schemas.py)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
