"""Jobs: the functions behind each CLI command and each script in ``pipelines/`` (top layer)."""
