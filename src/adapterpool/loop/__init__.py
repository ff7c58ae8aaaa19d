"""The transferability-guided loop (:func:`~adapterpool.loop.adapt.adapt`).

- :mod:`.adapt`: ``adapt`` and its result;
- :mod:`.attempts`: the attempts of one run (tries, probes, composed start, fallback);
- :mod:`.strategies`: the time-saving strategies and their stop rules;
- :mod:`.report`: what ``report.json`` holds;
- :mod:`.processes`: the main process and the others under ``accelerate launch``.

Importing this package loads nothing heavy (the command line reads the strategies from it).
"""
