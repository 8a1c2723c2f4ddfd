"""What a run reports: the matrix as text, Markdown and JSON; the generated layer docs."""
