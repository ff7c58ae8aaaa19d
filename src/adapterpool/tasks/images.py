"""Images of ``image`` tasks: reading class folders, checking and opening files.

An image is a file path (local folders, split files' ``image`` column resolved against the task
folder) or an in-memory PIL image (a ``datasets`` image column). Every file is opened and checked
when the task is loaded, so an unreadable one stops the run before any model work, named.
"""

from __future__ import annotations

from pathlib import Path

from .task import Records, TaskDataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
                  ".pgm")


def describe_image(item) -> str:
    """How an error names an image: its path, or its index-less type for in-memory images."""
    return str(item) if isinstance(item, str | Path) else f"in-memory {type(item).__name__}"


def open_image(item, where: str = ""):
    """The image as an RGB PIL image; an unreadable or corrupt file is a TaskDataError naming
    it (image processors expect three channels, whatever the file holds)."""
    from PIL import Image, UnidentifiedImageError

    try:
        if isinstance(item, str | Path):
            with Image.open(item) as image:
                return image.convert("RGB")
        if isinstance(item, Image.Image):
            return item.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        raise TaskDataError(
            f"{where + ': ' if where else ''}image {describe_image(item)} cannot be read: {exc}"
        ) from exc
    raise TaskDataError(f"{where + ': ' if where else ''}{item!r} is neither an image file path "
                        "nor a PIL image")


def check_images(images: list | None, where: str) -> None:
    """Every image exists and decodes (PIL's ``verify`` plus a full load: a truncated file
    passes ``verify`` alone)."""
    if images is None:
        raise TaskDataError(f"{where}: an image task needs an 'image' field")
    for i, item in enumerate(images):
        if isinstance(item, str | Path) and not Path(item).is_file():
            raise TaskDataError(f"{where}: row {i}: image file {item} does not exist")
        open_image(item, f"{where}, row {i}")


def read_image_folder(folder: Path, label_names: list[str] | None) -> tuple[Records, list[str]]:
    """One split in the ImageFolder layout: ``folder/CLASS/*.png``; classes sorted by name (as
    torchvision and ``datasets``' imagefolder number them) unless ``label_names`` fixes them."""
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise TaskDataError(f"{folder}: no class sub-folders (expected {folder}/CLASS/IMAGE.png)")
    names = list(label_names) if label_names is not None else classes
    unknown = sorted(set(classes) - set(names))
    if unknown:
        raise TaskDataError(f"{folder}: class folders {unknown[:5]} are not among the label "
                            f"names {names}")
    images, labels = [], []
    for cls in classes:
        files = sorted(p for p in (folder / cls).iterdir()
                       if p.is_file() and not p.name.startswith("."))
        others = [p.name for p in files if p.suffix.lower() not in IMAGE_SUFFIXES]
        if others:
            raise TaskDataError(f"{folder / cls}: {others[0]} is not an image file "
                                f"(expected one of {', '.join(IMAGE_SUFFIXES)})")
        images += [str(p) for p in files]
        labels += [names.index(cls)] * len(files)
    return Records(text=[], label=labels, image=images), names
