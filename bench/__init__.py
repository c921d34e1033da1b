"""`make bench`: side-by-side performance figures (bench/run.py), never a timed test."""
