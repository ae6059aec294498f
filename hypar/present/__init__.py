"""What people read: text tables for the CLI, sweep reports (Markdown, CSV) and plots."""
