"""Planning cluster time: placeholder dataset roots for paper-scale dry runs, and a GPU-hour plan per table."""
