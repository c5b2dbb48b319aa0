"""numpy notebooks: reductions, reshapes, masks; user functions with keyword parameters defined in
another cell; classes made by ``make_dataclass`` from generated field names; dicts keyed by
generated labels."""

from __future__ import annotations

from . import Case, Notebook, md

__all__ = ["NOTEBOOKS"]

GRID = Notebook(
    id="grid",
    title="# Arrays of marks",
    setup=(
        "import numpy as np\n\nvalues = np.arange(1, 13)\nrng = np.random.default_rng(0)\nscores = rng.integers(0, 100, size=(5, 3))",
        md("`scores`: one row per student, one column per subject"),
    ),
    cases=(
        Case(intent="Three rows of four", prefix="grid = values.reshape(", reference="3, 4)",
             check="grid.shape == (3, 4) and grid[0, 0] == 1"),
        Case(intent="Sum of each column", prefix="grid = values.reshape(3, 4)\ncol_sums = grid.sum(", reference="axis=0)",
             check="_same(col_sums, values.reshape(3, 4).sum(axis=0))"),
        Case(intent="Mean of each row", prefix="grid = values.reshape(3, 4)\nrow_means = grid.", reference="mean(axis=1)",
             check="_same(row_means, np.array([2.5, 6.5, 10.5]))"),
        Case(intent="Best student in each subject", prefix="best = scores.", reference="argmax(axis=0)",
             check="_same(best, scores.argmax(axis=0))"),
        Case(intent="All marks in one flat array", prefix="flat = scores.", reference="ravel()",
             check="_same(flat, scores.reshape(-1))"),
        Case(intent="Even numbers only", prefix="evens = values[values % 2 == ", reference="0]",
             check="_same(evens, np.array([2, 4, 6, 8, 10, 12]))"),
        Case(intent="How many students and subjects", prefix="n_students, n_subjects = scores.", reference="shape",
             check="(n_students, n_subjects) == (5, 3)"),
        Case(intent="Standardised marks", prefix="z = (scores - scores.mean()) / scores.", reference="std()",
             check="_same(z, (scores - scores.mean()) / scores.std())"),
        Case(intent="Running total of the values", prefix="running = np.", reference="cumsum(values)",
             check="_same(running, np.cumsum(values))"),
        Case(intent="Above 50 is a pass, else a fail", prefix="labels = np.where(scores > 50, ", reference="'pass', 'fail')",
             check="labels.shape == scores.shape and (labels == 'pass').sum() == (scores > 50).sum() and set(np.unique(labels)) <= {'pass', 'fail'}"),
        Case(intent="Two copies of the values, one above the other", prefix="both = np.vstack([", suffix="])",
             reference="values, values", check="both.shape == (2, 12)"),
        Case(intent="One row per subject", prefix="by_subject = scores.", reference="T", check="by_subject.shape == (3, 5)"),
        Case(intent="Marks held between 10 and 90", prefix="clipped = np.clip(scores, ", reference="10, 90)",
             check="_same(clipped, np.clip(scores, 10, 90))"),
    ),
)

SIGNAL = Notebook(
    id="signal",
    title="# A noisy tone",
    setup=(
        "import numpy as np\n\nt = np.linspace(0, 1, 200)\nwave = np.sin(2 * np.pi * 5 * t) + 0.3 * np.cos(2 * np.pi * 12 * t)",
        md("Helpers"),
        'def smooth(x, *, window_len=5, mode="same"):\n    kernel = np.ones(window_len) / window_len\n'
        "    return np.convolve(x, kernel, mode=mode)\n\n\n"
        "def peaks(x, *, min_height=0.0, spacing=1):\n"
        "    idx = [i for i in range(1, len(x) - 1) if x[i - 1] < x[i] >= x[i + 1] and x[i] >= min_height]\n"
        "    kept = []\n    for i in idx:\n        if not kept or i - kept[-1] >= spacing:\n            kept.append(i)\n"
        "    return np.array(kept)",
    ),
    cases=(
        Case(intent="Smooth over 9 samples", prefix="smoothed = smooth(wave, ", reference="window_len=9)",
             check="_same(smoothed, smooth(wave, window_len=9))", live_state=True, needs="window_len="),
        Case(intent="Peaks higher than 1", prefix="tall = peaks(wave, ", reference="min_height=1.0)",
             check="_same(tall, peaks(wave, min_height=1.0))", live_state=True, needs="min_height="),
        Case(intent="Peaks at least 20 samples apart", prefix="sparse = peaks(wave, ", reference="spacing=20)",
             check="_same(sparse, peaks(wave, spacing=20))", live_state=True, needs="spacing="),
        Case(intent="Smoothed, keeping only the fully overlapping part", prefix="inner = smooth(wave, window_len=9, ",
             reference="mode='valid')", check="len(inner) == 192", live_state=True, needs="mode="),
        Case(intent="Energy of the signal", prefix="energy = np.sum(", reference="wave ** 2)",
             check="_same(energy, np.sum(wave ** 2))"),
        Case(intent="Largest absolute value", prefix="amp = np.abs(wave).", reference="max()",
             check="_same(amp, np.abs(wave).max())"),
        Case(intent="Every 10th sample", prefix="coarse = wave[", reference="::10]", check="_same(coarse, wave[::10])"),
    ),
)

BANNERS = Notebook(
    id="banners",
    title="# Ad formats",
    setup=(
        'import dataclasses\n\ndims = ["width", "height"]\nSize = dataclasses.make_dataclass("Size", [(f"{d}_px", int) for d in dims])',
        "banner = Size(728, 90)\nsizes = [Size(300, 250), Size(160, 600), Size(728, 90)]",
    ),
    cases=(
        Case(intent="Area of the banner", prefix="area = banner.", reference="width_px * banner.height_px",
             check="area == 65520", live_state=True, needs="width_px"),
        Case(intent="The tallest format", prefix="tallest = max(sizes, key=lambda s: s.", reference="height_px)",
             check="tallest == Size(160, 600)", live_state=True, needs="height_px"),
        Case(intent="A 1200 by 400 hero image", prefix="hero = Size(", reference="width_px=1200, height_px=400)",
             check="hero.width_px == 1200 and hero.height_px == 400", live_state=True, needs="width_px="),
        Case(intent="All widths", prefix="widths = [s.", suffix=" for s in sizes]", reference="width_px",
             check="widths == [300, 160, 728]", live_state=True, needs="width_px"),
        Case(intent="As plain dicts", prefix="rows = [dataclasses.", suffix="(s) for s in sizes]", reference="asdict",
             check="rows[0] == {'width_px': 300, 'height_px': 250}"),
        Case(intent="Formats wider than tall", prefix="landscape = [s for s in sizes if s.width_px > s.", reference="height_px]",
             check="landscape == [Size(300, 250), Size(728, 90)]", live_state=True, needs="height_px"),
    ),
)

INVENTORY = Notebook(
    id="inventory",
    title="# Stock room",
    setup=(
        'skus = [f"SKU-{n:03d}" for n in (7, 12, 31, 44)]\nstock = dict(zip(skus, [5, 0, 17, 3]))\n'
        "prices = {sku: 2.5 * (i + 1) for i, sku in enumerate(skus)}",
    ),
    cases=(
        Case(intent="Stock of item 31", prefix="left = stock[", suffix="]", reference="'SKU-031'", check="left == 17",
             live_state=True, needs="'SKU-031'"),
        Case(intent="Items out of stock", prefix="empty = [sku for sku, qty in stock.items() if ", reference="qty == 0]",
             check="empty == ['SKU-012']"),
        Case(intent="Value of the stock", prefix="value = sum(stock[s] * prices[s] for s in ", reference="skus)",
             check="value == 170.0"),
        Case(intent="Price of item 44", prefix="p = prices[", suffix="]", reference="'SKU-044'", check="p == 10.0",
             live_state=True, needs="'SKU-044'"),
        Case(intent="Ten more of item 7", prefix="stock[", suffix="] += 10", reference="'SKU-007'",
             check="stock['SKU-007'] == 15", live_state=True, needs="'SKU-007'"),
    ),
)

NOTEBOOKS = [GRID, SIGNAL, BANNERS, INVENTORY]
