"""The model families by name: one literal registry, no import-time registration.

A run's model is built by runs.build_model (behind the size guard); here are the registry and
the family's config from plain settings."""

from __future__ import annotations

import dataclasses
from typing import Any

from artforge.config import from_dict
from artforge.models.base import GenerativeModel, Phase
from artforge.models.diffusion import Diffusion, DiffusionConfig
from artforge.models.gan import DCGAN, GAN, DCGANConfig, GANConfig
from artforge.models.upscaler import Upscaler, UpscalerConfig
from artforge.models.vae import VAE, VAEConfig

from ..errors import ConfigError

MODELS: dict[str, type[GenerativeModel]] = {
    "gan": GAN,
    "dcgan": DCGAN,
    "vae": VAE,
    "diffusion": Diffusion,
    "upscaler": Upscaler,
}

__all__ = [
    "DCGAN",
    "Diffusion",
    "DiffusionConfig",
    "GAN",
    "MODELS",
    "VAE",
    "DCGANConfig",
    "GANConfig",
    "GenerativeModel",
    "Phase",
    "Upscaler",
    "UpscalerConfig",
    "VAEConfig",
    "list_models",
    "make_model_config",
    "model_class",
]


def list_models() -> list[str]:
    return sorted(MODELS)


def model_class(name: str) -> type[GenerativeModel]:
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; choose from {sorted(MODELS)}")
    return MODELS[name]


def _config_from_fields(family: str, fields: dict[str, Any]) -> Any:
    cls = model_class(family).config_class
    known = sorted(f.name for f in dataclasses.fields(cls))
    unknown = sorted(set(fields) - set(known))
    if unknown:
        raise ConfigError(f"unknown model setting {unknown[0]!r} for {family}; known: {', '.join(known)}")
    return from_dict(cls, fields, "model")


def make_model_config(family: str, fields: dict[str, Any], *, height: int, width: int) -> Any:
    """The family's config from plain settings, with the image size of the data."""
    fields = dict(fields)
    for name, value in (("height", height), ("width", width)):
        if name in fields and fields[name] != value:
            raise ConfigError(
                f"model setting {name}={fields[name]!r} disagrees with the data's {name} {value}; "
                f"leave it out (the data size is used)"
            )
        fields[name] = value
    return _config_from_fields(family, fields)
