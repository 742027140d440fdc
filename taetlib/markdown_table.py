"""Tables as GitHub markdown, with the column titles the published READMEs use."""
from __future__ import annotations

import pandas as pd

__all__ = ["HEADERS", "markdown"]

HEADERS = {"imbalance_ratio": "IR", "balanced_accuracy": "balanced acc.", "balanced_robustness": "balanced rob.",
           "taet_tail_robustness": "TAET tail rob.", "weakest_k_robustness": "weakest-k rob.",
           "worst_class_robustness": "worst class rob."}


def markdown(df: pd.DataFrame, headers: dict | None = None, floats: str | None = None) -> str:
    """df as a markdown table: each column titled by `headers`, else HEADERS, else its name; float cells
    formatted by `floats` (e.g. '.2f') where given, else as str() writes them."""
    titles = {**HEADERS, **(headers or {})}

    def cell(v):
        return format(v, floats) if floats and isinstance(v, float) else str(v)
    cols = list(df.columns)
    lines = ["| " + " | ".join(titles.get(c, c) for c in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)
