"""A sixth task that lives in the tests: digit-like glyph classification on generated images.

It plugs into the suite through the task contract alone (``docs/adding_a_task.md``), with no edit of
``suite/`` or ``callbacks/``: its configs sit in ``tests/glyph_task/conf`` and are found through
Hydra's search path (``hydra.searchpath=[file://tests/glyph_task/conf] experiment=glyphs``).
"""
