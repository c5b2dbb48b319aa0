"""Plotting notebooks (matplotlib and pandas' ``.plot``): checks read the artists back from the
axes (line data, bar heights, scatter offsets, labels), so any call that draws the intended thing
passes."""

from __future__ import annotations

from . import Case, Notebook, md

__all__ = ["NOTEBOOKS"]

PLOTS = Notebook(
    id="plots",
    title="# A week of readings, drawn",
    setup=(
        "import matplotlib.pyplot as plt\nimport numpy as np",
        "days = np.arange(1, 8)\ntemps = np.array([14.2, 15.1, 13.8, 17.4, 18.9, 16.0, 15.5])\n"
        "ages = np.array([23, 35, 31, 47, 52, 29, 33, 41, 38, 26, 44, 30])\npts = np.random.default_rng(2).normal(size=(30, 2))",
    ),
    cases=(
        Case(intent="Temperature per day", prefix="fig, ax = plt.subplots(figsize=(7, 3))\nax.plot(days, ", reference="temps)",
             check="np.allclose(ax.lines[0].get_ydata(), temps)"),
        Case(intent="Histogram of the ages, 4 bins", prefix="fig, ax = plt.subplots(figsize=(7, 3))\nax.hist(ages, ", reference="bins=4)",
             check="len(ax.patches) == 4"),
        Case(intent="The points as a scatter", prefix="fig, ax = plt.subplots(figsize=(7, 3))\nax.scatter(pts[:, 0], ", reference="pts[:, 1])",
             check="np.allclose(ax.collections[0].get_offsets()[:, 1], pts[:, 1])"),
        Case(intent="x axis labelled 'day'", prefix="fig, ax = plt.subplots(figsize=(7, 3))\nax.plot(days, temps)\nax.set_xlabel(",
             reference="'day')", check="ax.get_xlabel() == 'day'"),
        Case(intent="Temperatures as bars", prefix="fig, ax = plt.subplots(figsize=(7, 3))\nax.bar(days, ", reference="temps)",
             check="[p.get_height() for p in ax.patches] == list(temps)"),
        Case(intent="Titled 'Weekly temperature'", prefix="plt.figure()\nplt.plot(days, temps)\nplt.title(",
             reference="'Weekly temperature')", check="plt.gca().get_title() == 'Weekly temperature'"),
        Case(intent="A dashed red line", prefix="fig, ax = plt.subplots(figsize=(7, 3))\nax.plot(days, temps, ", reference="'r--')",
             check="ax.lines[0].get_linestyle() == '--' and ax.lines[0].get_color() in ('r', 'red', '#ff0000')"),
        Case(intent="Two panels side by side", prefix="fig, axes = plt.subplots(", reference="1, 2)",
             check="axes.shape == (2,)"),
        Case(intent="y axis from 0 to 20", prefix="fig, ax = plt.subplots(figsize=(7, 3))\nax.plot(days, temps)\nax.set_ylim(",
             reference="0, 20)", check="ax.get_ylim() == (0.0, 20.0)"),
    ),
)

SURVEY = Notebook(
    id="survey",
    title="# Language survey",
    setup=(
        "import matplotlib.pyplot as plt\nimport numpy as np\nimport pandas as pd",
        md("Users of each language per year"),
        'langs = ["py", "rs", "go"]\nsurvey = pd.DataFrame({"year": [2021, 2022, 2023, 2024]})\n'
        'for k, lang in enumerate(langs):\n    survey[f"{lang}_users"] = [10 * (k + 1) + 3 * y for y in range(4)]',
    ),
    cases=(
        Case(intent="Rust users over the years", prefix="ax = survey.plot(x='year', y=", suffix=")", reference="'rs_users'",
             check="np.allclose(ax.lines[0].get_ydata(), survey['rs_users'])", live_state=True, needs="'rs_users'"),
        Case(intent="Python users as bars", prefix="ax = survey.plot.bar(x='year', y=", suffix=")", reference="'py_users'",
             check="[p.get_height() for p in ax.patches] == list(survey['py_users'])", live_state=True, needs="'py_users'"),
        Case(intent="Go users against Python users", prefix="fig, ax = plt.subplots(figsize=(7, 3))\nax.scatter(survey['py_users'], survey[",
             suffix=")", reference="'go_users']",
             check="np.allclose(ax.collections[0].get_offsets()[:, 1], survey['go_users'])", live_state=True, needs="'go_users'"),
        Case(intent="Every language on one chart", prefix="ax = survey.plot(x=", suffix=")", reference="'year'",
             check="len(ax.lines) == 3"),
        Case(intent="Histogram of Go users", prefix="ax = survey[", suffix="].plot.hist()", reference="'go_users'",
             check="abs(ax.patches[0].get_x() - 30) < 1e-9", live_state=True, needs="'go_users'"),
    ),
)

NOTEBOOKS = [PLOTS, SURVEY]
