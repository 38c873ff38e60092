"""API routes for bulk data: import and export."""

data_patterns: list = []
