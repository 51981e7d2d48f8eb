"""Shared work as declared steps: made once per run by the pipeline, before the sections that
read them, each with a typed result (a frozen dataclass) that no section changes.

- ``card.py``: the reliability card (``ReliabilityCard``), made when the audit runs the
  attribution section, whose ``[attribution]`` options configure it; the sections that take
  their method from it call ``card.choose`` and report the ``MethodChoice`` in their result.
- ``saliency.py``: the store of saliency maps (``SaliencyStore``): a map one section made (same
  method, score, options, image and target) is handed to the next instead of being recomputed.

The penultimate features come with the prediction pass (``predict.predictions``); the context
keeps them (``Context.features``) for the sections that need them.
"""
