"""Attribution methods side by side, and whether to trust them.

The methods explain the most confident mistakes; the sanity check (Adebayo et al. 2018) tests
that each method's maps depend on the model's weights; deletion and insertion curves (Petsiuk
et al. 2018) test that the pixels a method ranks first are the ones the prediction needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from auditor.checks.check import Check, evaluate
from auditor.errors import AuditorError, ConfigError
from auditor.sections.base import Context, SectionResult, at_least, known_methods, one_of
from auditor.sections.performance import most_confident_mistakes

NAME = "attribution"
TITLE = "Attribution methods"
CHECKS = ("attribution.faithfulness", "attribution.sanity.*")
DEFAULT_METHODS = ["gradient", "saliency", "gradient_x_input", "smoothgrad",
                   "integrated_gradients", "gradcam", "gradcam_pp", "occlusion"]
UNSIGNED = {"gradient_abs", "saliency", "gradcam", "gradcam_pp"}
# Rank correlation with the original maps once every layer is random. A map that ignores the
# weights scores 1; maps multiplied by the input keep its outline and ties (black pixels stay 0),
# about 0.85 on the digits, although their gradient part is destroyed.
SANITY_DEFAULTS = {"warn_above": 0.9, "fail_above": 0.95}
FAITHFULNESS_DEFAULTS = {"warn_below": 0.0}


@dataclass
class Options:
    methods: list[str] = field(default_factory=lambda: list(DEFAULT_METHODS))
    score: str = "logit"  # logit, softmax or log_softmax
    examples: int = 4  # most confident mistakes explained side by side
    sanity_samples: int = 8
    sanity_stages: int = 5  # cascade stages measured, spread from the top layer to the first
    faithfulness_samples: int = 32
    faithfulness_steps: int = 16
    reference_method: str = "gradient"  # the method the faithfulness check holds against random
    compare_layers: int = 3  # deepest stage-ending layers explained (gradient x activation)
    display_smoothing: float = 0.0  # Gaussian sigma in pixels for shown maps only; 0 = raw
    method_options: dict = field(default_factory=dict)  # e.g. {smoothgrad = {samples = 32}}

    def __post_init__(self):
        from auditor.methods.attribution.registry import SCORES, method_entry

        known_methods(NAME, "methods", self.methods)
        known_methods(NAME, "reference_method", self.reference_method)
        one_of(NAME, "score", self.score, SCORES)
        at_least(NAME, self, 0, "examples", "compare_layers", "display_smoothing")
        at_least(NAME, self, 1, "sanity_samples", "sanity_stages", "faithfulness_samples",
                 "faithfulness_steps")
        for method, given in self.method_options.items():
            known_methods(NAME, "method_options", method)
            try:
                method_entry(method, given if isinstance(given, dict) else {})
            except AuditorError as exc:
                raise ConfigError(f"'{NAME}.method_options.{method}': {exc}") from None


def sample_positions(n: int, size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=min(size, n), replace=False))


def compute_maps(handle, x, targets, methods, score, method_options):
    """Maps of every method that applies to this model, and the reason for each that does not
    (e.g. Grad-CAM on a model without convolutions)."""
    from auditor.methods.attribution import attribute

    maps, unavailable = {}, {}
    for method in methods:
        try:
            maps[method] = attribute(handle, x, targets, method, score=score,
                                     **method_options.get(method, {}))
        except AuditorError as exc:
            unavailable[method] = str(exc)
    return maps, unavailable


def coloured(heat: np.ndarray, signed: bool) -> np.ndarray:
    """An (H, W) map as RGB: signed maps on the shared diverging colormap with a symmetric
    scale, unsigned ones on the sequential colormap from zero to their maximum."""
    from matplotlib import colormaps

    from auditor.report.figures import DIVERGING, SEQUENTIAL, symmetric_limit

    if signed:
        limit = symmetric_limit(heat)
        return colormaps[DIVERGING](np.clip(heat / limit, -1, 1) * 0.5 + 0.5)[..., :3]
    peak = float(heat.max()) or 1.0
    return colormaps[SEQUENTIAL](np.clip(heat / peak, 0, 1))[..., :3]


def grey_rgb(image: np.ndarray) -> np.ndarray:
    image = np.clip(image, 0, 1)
    return np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image[..., :3]


def mosaic_uri(tiles: list[list[np.ndarray]], row_labels: list[str], column_labels: list[str],
               boxes: list | None = None, tile_px: int = 80) -> str:
    """RGB tiles of one size drawn as one image (fast: one imshow, not one axes per tile), with
    labelled rows and columns and optional boxes on the first column."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from auditor.report.figures import DPI, figure_uri

    height, width = tiles[0][0].shape[:2]
    gap = max(1, width // 16)
    rows = [np.concatenate([np.pad(t, ((0, gap), (0, gap), (0, 0)), constant_values=1.0)
                            for t in row], axis=1) for row in tiles]
    picture = np.concatenate(rows, axis=0)
    scale = tile_px / width
    fig = plt.figure(figsize=(picture.shape[1] * scale / DPI + 1.3,
                              picture.shape[0] * scale / DPI + 0.3), dpi=DPI)
    ax = fig.add_axes((1.3 / fig.get_figwidth(), 0, 1 - 1.3 / fig.get_figwidth(),
                       1 - 0.3 / fig.get_figheight()))
    ax.imshow(picture, interpolation="nearest" if width <= 64 else "antialiased")
    ax.set_xticks([(width + gap) * (i + 0.5) for i in range(len(column_labels))],
                  column_labels, fontsize=7)
    ax.xaxis.tick_top()
    ax.set_yticks([(height + gap) * (i + 0.5) for i in range(len(row_labels))], row_labels,
                  fontsize=7)
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    for row, box in enumerate(boxes or []):
        if box is not None:
            left, top, right, bottom = box
            ax.add_patch(Rectangle((left - .5, row * (height + gap) + top - .5), right - left,
                                   bottom - top, fill=False, edgecolor="#f0a000", linewidth=1.5))
    return figure_uri(fig)


def examples_figure(images, maps: dict, boxes, row_labels, sigma: float) -> str:
    """One row per image: the image with its saliency box, then each method's map."""
    from auditor.methods.attribution.smoothing import smooth_map
    from auditor.report.figures import signed_map

    tiles = [[grey_rgb(image)] + [coloured(smooth_map(signed_map(a[i]), sigma), m not in UNSIGNED)
                                  for m, a in maps.items()]
             for i, image in enumerate(images)]
    columns = ["image"] + [m.replace("_", " ") for m in maps]
    return mosaic_uri(tiles, row_labels, columns, boxes)


def layers_figure(handle, images, targets, row_labels, count: int, score: str):
    """Gradient x activation of the deepest ``count`` stage-ending layers, channels summed and
    enlarged to the image: where in each layer the evidence for the class sits."""
    from auditor.inputs.layers import stage_ends
    from auditor.methods.attribution import attribute_layer

    names = stage_ends(handle.logits_model)[-count:] if count > 0 else []
    if not names or len(images) == 0:
        return None, names
    height, width = handle.input_shape[:2]
    columns, labels = [], ["image"]
    for name in names:
        heat = attribute_layer(handle, images, targets, layer=name, score=score).sum(axis=-1)
        labels.append(f"{name.rsplit('/', 1)[-1]} ({heat.shape[1]}x{heat.shape[2]})")
        rows = np.arange(height) * heat.shape[1] // height  # nearest-neighbour enlargement
        cols = np.arange(width) * heat.shape[2] // width
        columns.append(heat[:, rows][:, :, cols])
    tiles = [[grey_rgb(image)] + [coloured(column[i], signed=True) for column in columns]
             for i, image in enumerate(images)]
    return mosaic_uri(tiles, row_labels, labels), names


def sanity_figure(result) -> str:
    """Sample 0's importance map per method (rows) as layers are randomised (columns)."""
    tiles = [[coloured(heat, signed=False) for heat in result.examples[m]]
             for m in result.examples]
    columns = ["original"] + [f"-{stage.rsplit('/', 1)[-1]}" for stage in result.stages]
    return mosaic_uri(tiles, [m.replace("_", " ") for m in result.examples], columns,
                      tile_px=48)


def sanity_section(ctx, options, methods):
    from auditor.methods.attribution.sanity import cascading_randomisation
    from auditor.report.figures import line_plot_uri

    p = ctx.predictions
    positions = sample_positions(len(p.labels), options.sanity_samples, ctx.config.seed + 1)
    result = cascading_randomisation(
        ctx.handle, ctx.dataset.images(positions), p.preds[positions], methods,
        max_stages=options.sanity_stages, seed=ctx.config.seed, score=options.score,
        method_options=options.method_options)
    checks, rows, summary = [], [], {}
    for method in methods:
        correlation, similarity = result.final(method)
        check = evaluate(f"attribution.sanity.{method}", correlation, section=NAME,
                         message=f"{method}: rank correlation of its maps with the original "
                                 "ones once every layer is randomised",
                         defaults=SANITY_DEFAULTS,
                         spec=ctx.thresholds(f"attribution.sanity.{method}"))
        checks.append(check)
        rows.append({"method": method, "rank_correlation": correlation, "ssim": similarity,
                     "status": check.status})
        summary[method] = {"rank_correlation": result.rank_correlation[method],
                           "ssim": result.ssim[method], "final_rank_correlation": correlation,
                           "final_ssim": similarity, "status": check.status,
                           "passed": check.status == "pass"}
    view = {"rows": rows, "stages": result.stages, "samples": len(positions),
            "maps": sanity_figure(result),
            "curve": line_plot_uri(result.randomised, result.rank_correlation,
                                   "layers randomised, from the top", "rank correlation",
                                   "Maps vs the original model")}
    return summary, view, checks, result.stages


def faithfulness_section(ctx, options, methods):
    from auditor.methods.attribution.faithfulness import deletion_insertion, random_maps
    from auditor.methods.attribution.integrated_gradients import completeness
    from auditor.report.figures import line_plot_uri

    p = ctx.predictions
    positions = sample_positions(len(p.labels), options.faithfulness_samples, ctx.config.seed)
    x, targets = ctx.dataset.images(positions), p.preds[positions]
    maps, unavailable = compute_maps(ctx.handle, x, targets, methods, options.score,
                                     options.method_options)
    maps["random"] = random_maps(x, ctx.config.seed)
    curves = {m: deletion_insertion(ctx.handle, x, targets, a, steps=options.faithfulness_steps,
                                    seed=ctx.config.seed) for m, a in maps.items()}
    summary = {m: {"deletion_auc": c.deletion_auc, "insertion_auc": c.insertion_auc,
                   "score": c.score} for m, c in curves.items()}
    complete = None
    if "integrated_gradients" in maps:
        ig = options.method_options.get("integrated_gradients", {})
        errors, gaps = completeness(
            ctx.handle, x, targets, maps["integrated_gradients"], score=options.score,
            **{k: v for k, v in ig.items() if k in ("baseline", "blur_sigma")})
        measured = np.isfinite(errors)
        complete = {"error": float(errors[measured].mean()) if measured.any() else None,
                    "gap": float(np.abs(gaps).mean()), "measured": int(measured.sum()),
                    "samples": len(errors)}
    reference = options.reference_method if options.reference_method in curves else None
    margin = curves[reference].score - curves["random"].score if reference else None
    check = evaluate("attribution.faithfulness", margin, section=NAME,
                     message=f"{reference}: insertion minus deletion area, above a random map's",
                     defaults=FAITHFULNESS_DEFAULTS,
                     spec=ctx.thresholds("attribution.faithfulness"))
    fractions = next(iter(curves.values())).fractions
    view = {
        "rows": [{"method": m, **summary[m]} for m in curves],
        "samples": len(positions), "steps": options.faithfulness_steps,
        "deletion": line_plot_uri(fractions, {m: c.deletion for m, c in curves.items()},
                                  "fraction of pixels removed", "probability of the class",
                                  "Deletion (lower is better)"),
        "insertion": line_plot_uri(fractions, {m: c.insertion for m, c in curves.items()},
                                   "fraction of pixels inserted", "probability of the class",
                                   "Insertion (higher is better)"),
        "completeness": complete, "unavailable": unavailable,
    }
    return summary, view, [check], complete, unavailable


def examples_section(ctx, options, methods):
    from auditor.methods.attribution.localisation import saliency_box

    p, names = ctx.predictions, ctx.dataset.class_names
    positions = most_confident_mistakes(p, options.examples)
    if len(positions) == 0:
        return [], None, None, (None, [])
    images = ctx.dataset.images(positions)
    preds, labels = p.preds[positions], p.labels[positions]
    maps, _ = compute_maps(ctx.handle, images, preds, methods, options.score,
                           options.method_options)
    ctx.cache[NAME] = {"positions": positions, "maps": maps}
    box_source = "saliency" if "saliency" in maps else next(iter(maps), None)
    boxes = [saliency_box(images[i], maps[box_source][i]) if box_source else None
             for i in range(len(positions))]
    examples = [{"index": int(pos), "true": names[labels[i]], "pred": names[preds[i]],
                 "confidence": float(p.confidence[pos]),
                 "box": list(boxes[i]) if boxes[i] else None}
                for i, pos in enumerate(positions)]
    labels_shown = [f"#{e['index']}: {e['true']} → {e['pred']} ({e['confidence']:.2f})"
                    for e in examples]
    figure = examples_figure(images, maps, boxes, labels_shown, options.display_smoothing)
    layers = layers_figure(ctx.handle, images, preds, labels_shown, options.compare_layers,
                           options.score)
    return examples, figure, box_source, layers


def run(ctx: Context, options: Options) -> SectionResult:
    from auditor.methods.attribution import METHODS
    from auditor.report.figures import colorbar_uri

    unknown = [m for m in options.methods if m not in METHODS]
    if unknown:
        raise AuditorError(f"'attribution.methods' names unknown method '{unknown[0]}'; choose "
                           f"from: {', '.join(sorted(METHODS))} (see 'auditor methods')")
    faithfulness, faith_view, faith_checks, completeness, unavailable = (
        faithfulness_section(ctx, options, options.methods))
    methods = [m for m in options.methods if m not in unavailable]
    sanity, sanity_view, sanity_checks, stages = sanity_section(ctx, options, methods)
    skipped = [Check(f"attribution.sanity.{m}", "skipped", None, message=f"{m}: {why}",
                     section=NAME) for m, why in unavailable.items()]
    examples, figure, box_source, (layers_figure_uri, layer_names) = examples_section(
        ctx, options, methods)
    smoothing = (f"Maps are smoothed for display (Gaussian, sigma {options.display_smoothing:g} "
                 "px); the tables use raw maps." if options.display_smoothing > 0
                 else "Maps are shown raw, not smoothed.")
    summary = {NAME: {
        "methods": methods, "score": options.score, "unavailable": unavailable,
        "examples": [{k: e[k] for k in ("index", "true", "pred", "confidence", "box")}
                     for e in examples],
        "compared_layers": layer_names, "sanity_stages": stages, "sanity": sanity,
        "faithfulness": faithfulness,
        "completeness_error": completeness["error"] if completeness else None,
        "completeness_gap": completeness["gap"] if completeness else None,
        "completeness_measured": completeness["measured"] if completeness else None,
        "samples": {"sanity": sanity_view["samples"], "faithfulness": faith_view["samples"]},
    }}
    return SectionResult(
        name=NAME, title=TITLE,
        intro=("Each method's map of the predicted class's "
               f"{options.score} on the most confident mistakes: red raises the score, blue "
               "lowers it; unsigned methods (saliency, Grad-CAM) show importance from dark to "
               "bright. The box is a GrabCut localisation seeded by the "
               f"{box_source or 'saliency'} map. Below, whether to trust each method: its maps "
               "must change when the model's weights are randomised, and removing its top "
               f"pixels first must hurt the prediction more than a random order. {smoothing}"),
        summary=summary,
        view={"examples": examples, "figure": figure, "layers": layers_figure_uri,
              "sanity": sanity_view,
              "faithfulness": faith_view, "legend": colorbar_uri("0"), "smoothing": smoothing},
        checks=sanity_checks + skipped + faith_checks,
    )
