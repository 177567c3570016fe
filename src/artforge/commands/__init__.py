"""The ``artforge`` commands, one module each (as diffusers' ``commands/``): its arguments,
``add_arguments(subparsers)``, and its ``run(args)`` (``run(args, extras)`` where the module
sets ``TAKES_EXTRAS = True``: its other ``--words`` go on, e.g. ``--section.name=value``).
``NAMES`` are the subcommands a module adds. Adding a command is a module and a line below;
``cli`` builds the parser from this list, in this order (the order of ``artforge --help``).
"""

from __future__ import annotations

from types import ModuleType

from . import bench, create, data, interpolate, models, sample, studio, train, upscale
from . import eval as eval_command

COMMANDS: tuple[ModuleType, ...] = (
    train,
    sample,
    interpolate,
    upscale,
    data,
    models,
    create,  # project, img2img, inpaint
    eval_command,
    bench,
    studio,
)


def by_name() -> dict[str, ModuleType]:
    """Subcommand -> the module that runs it."""
    return {name: module for module in COMMANDS for name in module.NAMES}
