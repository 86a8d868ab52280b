"""What a finished run shows: the round summary, the HTML report, figures shared with compare."""
