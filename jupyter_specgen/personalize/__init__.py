"""Personalization, Jupyter side: turn the user's notebooks, the kernel's execution log and the
accepted suggestions into training examples (JSON lines) for the backend's ``training`` package.
"""
