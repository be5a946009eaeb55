"""Training recipes: what the generic loop (:func:`vlkit.train.train`) needs beyond the task's
losses. A recipe has:

    name: str
    task                                       the vlkit.tasks object whose losses are trained
    build_model() -> nn.Module
    image_size(model) -> int                  size the built-in data is rendered at
    transform(model, train) -> PIL image -> tensor
    collate() -> list of dataset items -> batch dict
    losses(model, batch) -> {"name_loss": scalar tensor, ...}   (the task's; the loop sums them)
    log_values(model) -> {name: float}        extra values for the training log (may be empty)
    evaluate(model, dataset, *, batch_size, device, precision, zeroshot, retrieval) -> EvalOutput
    summary(metrics, num_images) -> [str]     headline lines for people (optional)

The config's ``task`` field names the recipe. Register a new one by adding it to RECIPES.
"""
from .albef import ALBEFRecipe
from .blip import BLIPRecipe, BLIPVQARecipe
from .clip import CLIPRecipe, EvalOutput

RECIPES = {
    "albef": ALBEFRecipe,
    "blip": BLIPRecipe,
    "blip-vqa": BLIPVQARecipe,
    "clip": CLIPRecipe,
}


def get_recipe(name: str, model_spec: dict | None = None):
    """A recipe by task name, for a ``model`` config section."""
    if name not in RECIPES:
        raise KeyError(f"unknown task {name!r}; known tasks: {sorted(RECIPES)}")
    return RECIPES[name](model_spec)


__all__ = ["ALBEFRecipe", "BLIPRecipe", "BLIPVQARecipe", "CLIPRecipe", "EvalOutput", "RECIPES", "get_recipe"]
