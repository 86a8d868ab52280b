"""What a finished run shows: the per-round summary table, the HTML report and the figures
and tables it shares with the method comparison."""
