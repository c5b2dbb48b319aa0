"""Bounded descriptions of values, in this process (the kernel tests check them through a kernel)."""

import collections

import numpy as np
import pandas as pd

from jupyter_specgen.kernel.specs import Budget, Limits, describe, describe_names, safe_repr


def test_huge_containers_are_rendered_without_materialising_them():
    """A 10-million-item list gives its length, element type and a few items, not a 10-million-item repr."""
    big = list(range(10_000_000))
    spec = describe(big, "big")
    assert (spec.length, spec.element_type) == (10_000_000, "int")
    assert spec.examples == "[0, 1, 2, ... 9999997 more]"


def test_user_subclasses_and_objects_are_not_trusted_in_process():
    """Without fork, a user-defined __repr__ is not run; a user subclass of list is not iterated."""
    class Sneaky(list):
        def __iter__(self):
            raise AssertionError("iterated")

    class Loud:
        def __repr__(self):
            raise AssertionError("repr called")

    assert describe(Loud(), "x").note == "user-defined __repr__ not run"
    assert describe(Sneaky([1]), "y").kind == "object"
    assert safe_repr([Loud()]).endswith(".Loud object>]")


def test_frames_with_many_columns_are_capped_and_say_so():
    """Columns beyond the cap are counted in the note; the spec is marked truncated."""
    df = pd.DataFrame(np.zeros((2, 50)), columns=[f"c{i}" for i in range(50)])
    spec = describe(df, "df", limits=Limits(max_columns=5))
    assert len(spec.columns) == 5 and spec.truncated and spec.note == "45 more columns"


def test_budget_exhaustion_skips_names_and_reports_them():
    """With no time left, defined names are listed as skipped, undefined ones as missing, builtins as neither."""
    ns = {"a": 1, "b": collections.Counter("abc")}
    specs, missing, skipped = describe_names(ns, ["a", "b", "nope", "len"], budget_ms=0)
    assert (specs, missing, skipped) == ([], ["nope"], ["a", "b"])
    specs, _, _ = describe_names(ns, ["b"], budget_ms=50)
    assert specs[0].type == "collections.Counter" and specs[0].element_type == "str: int"
    assert not Budget(10).expired()
