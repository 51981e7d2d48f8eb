"""Shared work as declared steps: made once per run by the pipeline, before the sections that
read them, each with a typed result (a frozen dataclass, read-only all the way down) that no
section changes. They run in the order of ``STEPS``, each seeing the results of those before.

- ``card.py``: the reliability card (``ReliabilityCard``), made when the audit runs the
  attribution section, whose ``[attribution]`` options configure it; the sections that take
  their method from it call ``card.choose`` and report the ``MethodChoice`` in their result.
- ``features.py``: the penultimate features of every audit image (``Features``).
- ``saliency.py``: the saliency of the mistakes (``SaliencyMaps``): the maps the sections say
  they will read (``saliency_requests``), each made once.
- ``shared.py``: ``Shared``, the steps' results as the sections read them (``ctx.steps``),
  and ``Failed``, a step that broke on this model.

A section declares the steps it needs in ``STEPS`` (a tuple of step names); a step runs when a
section of the run declares it. Each step module has ``NAME``, ``TITLE`` (for the log) and
``make(inputs, options, shared, sections) -> result`` (``sections``: {name: module} of the
sections that need it).
"""

from auditor.steps import card, features, saliency

STEPS = (card, features, saliency)  # saliency after the card: a section's method may be the card's
