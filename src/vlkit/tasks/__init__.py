"""Tasks: what a model is trained for. The training loop (vlkit.train) is generic; a task says
how to build the model, its preprocessing and batches, and which losses a batch gives.

A task object has:
    name: str
    build_model() -> nn.Module
    image_size(model) -> int                  size the built-in data is rendered at
    transform(model, train) -> PIL image -> tensor
    collate() -> list of dataset items -> batch dict
    losses(model, batch) -> {"name_loss": scalar tensor, ...}   (the loop sums them)
    log_values(model) -> {name: float}        extra values for the training log (may be empty)
    evaluate(model, dataset, *, batch_size, device, precision, zeroshot, retrieval) -> EvalOutput

Register a new task by adding it to TASKS (one line).
"""
from .clip import CLIPTask, EvalOutput

TASKS = {
    "clip": CLIPTask,
}


def get_task(name: str, model_spec: dict | None = None):
    """A task by name, for a ``model`` config section."""
    if name not in TASKS:
        raise KeyError(f"unknown task {name!r}; known tasks: {sorted(TASKS)}")
    return TASKS[name](model_spec)


__all__ = ["CLIPTask", "EvalOutput", "TASKS", "get_task"]
