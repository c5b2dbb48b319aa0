"""Completions: the server side of one inline suggestion (see ``pipeline``)."""
