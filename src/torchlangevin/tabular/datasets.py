"""A generated mixed-type table: numbers, counts, strings, booleans and gaps, with structure.

Three latent factors drive every column, so columns are correlated across types and the
label depends on them; nothing is downloaded.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def mixed_table(n: int = 5000, seed: int = 0) -> pd.DataFrame:
    """``n`` rows x 20 columns + ``label`` (3 string classes).

    8 continuous (some skewed), 4 integer (counts and ages), 4 categorical strings, 2
    booleans; ``income`` and ``region`` have 5% missing values.
    """
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, 3))
    noise = rng.standard_normal((n, 20))
    df = pd.DataFrame({
        "height": 170 + 8 * z[:, 0] + 3 * noise[:, 0],
        "weight": 70 + 10 * z[:, 0] + 6 * z[:, 1] + 4 * noise[:, 1],
        "income": np.exp(10 + 0.5 * z[:, 2] + 0.3 * noise[:, 2]),
        "score_a": z[:, 1] + 0.5 * noise[:, 3],
        "score_b": z[:, 1] - z[:, 2] + 0.5 * noise[:, 4],
        "ratio": 1 / (1 + np.exp(-(z[:, 0] - z[:, 2] + 0.5 * noise[:, 5]))),
        "wait_time": rng.exponential(np.exp(0.5 * z[:, 1])),
        "temperature": 20 + 5 * np.sin(z[:, 2]) + noise[:, 6],
        "age": np.clip(np.round(40 + 12 * z[:, 2] + 5 * noise[:, 7]), 18, 90).astype(int),
        "visits": rng.poisson(np.exp(1 + 0.4 * z[:, 1])),
        "children": rng.poisson(np.exp(0.2 * z[:, 0] - 0.5).clip(0.05)),
        "rooms": np.clip(np.round(3 + z[:, 0] + noise[:, 8]), 1, 8).astype(int),
        "region": np.array(["north", "south", "east", "west"])[
            np.digitize(z[:, 0] + 0.8 * noise[:, 9], [-0.7, 0.0, 0.7])].astype(object),
        "plan": np.where(z[:, 1] + noise[:, 10] > 0.5, "premium",
                         np.where(z[:, 1] + noise[:, 10] > -0.5, "standard", "basic")),
        "device": np.array(["phone", "tablet", "desktop"])[
            np.digitize(z[:, 2] + noise[:, 11], [-0.4, 0.6])],
        "channel": rng.choice(["web", "store", "partner", "call", "mail"], n,
                              p=[0.4, 0.25, 0.15, 0.12, 0.08]),
        "member": (z[:, 1] + noise[:, 12] > 0),
        "churned": (z[:, 2] - z[:, 1] + noise[:, 13] > 1.0),
    })
    df["region"] = df["region"].where(rng.random(n) > 0.05, None)
    df["income"] = df["income"].where(rng.random(n) > 0.05, np.nan)
    # two more numeric columns to reach 20, then the label
    df["balance"] = 1000 * (z[:, 0] + z[:, 2]) + 300 * noise[:, 14]
    df["tenure"] = np.clip(np.round(5 + 3 * z[:, 1] + 2 * noise[:, 15]), 0, None).astype(int)
    logits = np.stack([z[:, 0] + z[:, 1], z[:, 2] - z[:, 0], 0.5 * noise[:, 16]], 1)
    df["label"] = np.array(["gold", "silver", "bronze"])[logits.argmax(1)]
    return df
