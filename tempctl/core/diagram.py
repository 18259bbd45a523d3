"""The state machine as a Mermaid diagram, generated from the law table (law.MODEL).

The README embeds the output between markers; tests/test_docs.py keeps it in
sync. Regenerate with ``python -m tempctl.core.diagram``.
"""

from __future__ import annotations

from tempctl.core.decision import State
from tempctl.core.law import LAWS

__all__ = ["mermaid"]


def mermaid(law: str = "model") -> str:
    lines = [
        "stateDiagram-v2",
        f"    [*] --> {State.NORMAL.value}: start at or above MAX",
        f"    [*] --> {State.RECOVERING.value}: start below MAX",
    ]
    for row in LAWS[law]:
        label = " & ".join(row.when) + f" / {row.action}"
        for src in row.source:
            lines.append(f"    {src.value} --> {row.dest.value}: {label}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(mermaid(), end="")
