"""Small command-line tools: python -m tools.<name> --help."""
