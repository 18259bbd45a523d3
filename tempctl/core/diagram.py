"""The state machine as a Mermaid diagram, generated from controller.LAW.

The README embeds the output between markers; tests/test_docs.py keeps it in
sync. Regenerate with ``python -m tempctl.core.diagram``.
"""

from __future__ import annotations

from tempctl.core.controller import LAW, State


def mermaid() -> str:
    lines = [
        "stateDiagram-v2",
        f"    [*] --> {State.NORMAL.value}: start at or above MAX",
        f"    [*] --> {State.RECOVERING.value}: start below MAX",
    ]
    for row in LAW:
        sources = row["source"] if isinstance(row["source"], list) else [row["source"]]
        label = " & ".join(row["conditions"]) + f" / {row['action']}"
        for src in sources:
            lines.append(f"    {src.value} --> {row['dest'].value}: {label}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(mermaid(), end="")
