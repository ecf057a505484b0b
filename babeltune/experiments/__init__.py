"""Experiments: grids of tuning conditions run end to end, and their tidy results table."""
