"""What people read: text tables for the CLI (:mod:`~hypar.present.text`, :mod:`~hypar.present.inspect`),
sweep reports in Markdown and CSV (:mod:`~hypar.present.report`, over the rows of
:mod:`~hypar.present.results`) and plots (:mod:`~hypar.present.plots`, matplotlib)."""
