"""slugify: file- and URL-safe names."""

from __future__ import annotations

import pytest

from limelight.characters import slugify


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("Gloria, PA", "gloria-pa"),
        ("Flux the Cat", "flux-the-cat"),
        ("Vesper-9", "vesper-9"),
        ("  Émile Zoë  ", "emile-zoe"),
        ("魚", "character"),
        ("", "character"),
        ("../../etc/passwd", "etc-passwd"),
        ("a" * 100, "a" * 64),
    ],
)
def test_slugify(name: str, slug: str) -> None:
    assert slugify(name) == slug
