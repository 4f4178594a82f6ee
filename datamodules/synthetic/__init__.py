"""Generators of each task's on-disk layout: the default data when ``data.root`` is unset."""
