"""``python -m bandits.simulate quality`` (``bin/quality``): the evidence in docs/quality.md.

Every number in the document is computed from the runs; the sentences that depend on a
result (met or missed, above or below) are chosen from the numbers, never written in advance.

- :mod:`~bandits.simulate.quality.plan`: what runs (settings, recommenders, seeds).
- :mod:`~bandits.simulate.quality.outcomes`: every run's result and the provenance, as JSON.
- :mod:`~bandits.simulate.quality.stats`: the statistics the sentences quote.
- :mod:`~bandits.simulate.quality.document` with :mod:`~bandits.simulate.quality.arms` and
  :mod:`~bandits.simulate.quality.forum`: the Markdown and its plots, from saved outcomes.
- :mod:`~bandits.simulate.quality.command`: the command line (run, ``--quick``, ``--render``).
"""
