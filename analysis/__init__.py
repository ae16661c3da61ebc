"""Analysis of results: tables, benchmark summaries, figures."""
