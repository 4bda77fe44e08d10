"""Synthetic chest X-rays with lung masks, in the lab's `X_ray/{Image,Mask}/` layout.

Each image has a body outline, two lung fields of varied shape, size and position, the heart and
mediastinum, spine, ribs and clavicles crossing the lungs, vessel texture, noise, blur, contrast
changes and sometimes burned-in text. Ribs, vessels and contrast changes overlap the lungs' grey
levels, so no threshold separates lung from body: a model has to learn shape and context.
"""

from pathlib import Path

import cv2
import numpy as np

from medlab.images import save_image
from medlab.progress import progress
from medlab.synthetic.common import SYNTHETIC_ROOT, blob_polygon, ensure_synthetic, smooth_noise

RECIPE_VERSION = 1


def lung_masks(rng, size):
    """Right and left lung field masks (image left and right), before the heart is cut out."""
    masks = []
    spread = rng.uniform(0.17, 0.22)
    centre_y = rng.uniform(0.45, 0.53)
    for side in (-1, 1):
        centre = (
            0.5 + side * spread + rng.uniform(-0.015, 0.015),
            centre_y + rng.uniform(-0.02, 0.02),
        )
        radii = (rng.uniform(0.11, 0.15), rng.uniform(0.22, 0.29))
        mask = np.zeros((size, size), np.uint8)
        cv2.fillPoly(
            mask,
            [
                blob_polygon(
                    rng, centre, radii, size, roughness=0.06, exponent=rng.uniform(2.2, 3.2)
                )
            ],
            1,
        )
        # A flat medial border: lungs meet the mediastinum along a nearly straight edge.
        medial = int((0.5 + side * rng.uniform(0.05, 0.07)) * size)
        if side < 0:
            mask[:, medial:] = 0
        else:
            mask[:, :medial] = 0
        masks.append(mask)
    return masks


def heart_mask(rng, size):
    mask = np.zeros((size, size), np.uint8)
    centre = (0.5 + rng.uniform(0.04, 0.08), rng.uniform(0.63, 0.69))
    radii = (rng.uniform(0.14, 0.19), rng.uniform(0.11, 0.15))
    cv2.fillPoly(mask, [blob_polygon(rng, centre, radii, size, roughness=0.05)], 1)
    return mask


def draw_bones(rng, size, image):
    """Add ribs, clavicles and spine: bright bands that cross lungs and soft tissue alike."""
    bones = np.zeros((size, size), np.float32)
    thickness = max(1, size // 60)
    for side in (-1, 1):
        for k in range(9):
            y0 = (0.22 + 0.075 * k + rng.uniform(-0.01, 0.01)) * size
            x_mid, x_out = 0.5 * size + side * 0.06 * size, 0.5 * size + side * 0.42 * size
            xs = np.linspace(x_mid, x_out, 24)
            ys = (
                y0
                - 0.06 * size * np.sin(np.linspace(0, np.pi * 0.9, 24))
                + 0.03 * size * np.linspace(0, 1, 24)
            )
            points = np.stack([xs, ys], axis=1).astype(np.int32)
            cv2.polylines(bones, [points], False, rng.uniform(0.10, 0.22), thickness)
        start = (int((0.5 + side * 0.05) * size), int(0.2 * size))
        end = (int((0.5 + side * 0.33) * size), int(rng.uniform(0.13, 0.18) * size))
        cv2.line(bones, start, end, rng.uniform(0.25, 0.35), thickness + 1)
    cv2.rectangle(bones, (int(0.465 * size), 0), (int(0.535 * size), size), 0.3, -1)
    return image + cv2.GaussianBlur(bones, (0, 0), max(0.5, size / 256))


def burn_in_text(rng, size, image):
    text = str(rng.choice(["R", "L", "PA", "AP", "ERECT"]))
    origin = (int(rng.uniform(0.03, 0.75) * size), int(rng.uniform(0.08, 0.95) * size))
    layer = np.zeros(image.shape, np.uint8)  # OpenCV draws text on 8-bit images only
    cv2.putText(layer, text, origin, cv2.FONT_HERSHEY_SIMPLEX, size / 300, 255, max(1, size // 128))
    return np.maximum(image, layer / 255.0)


def chest_xray(rng, size):
    """One synthetic chest X-ray (float32 in [0, 1]) and its binary lung mask."""
    body = np.zeros((size, size), np.uint8)
    cv2.fillPoly(
        body,
        [
            blob_polygon(
                rng,
                (0.5, 0.58),
                (rng.uniform(0.40, 0.46), 0.55),
                size,
                roughness=0.03,
                exponent=3.5,
            )
        ],
        1,
    )
    right, left = lung_masks(rng, size)
    heart = heart_mask(rng, size)
    lungs = ((right | left) & (1 - heart) & body).astype(np.uint8)

    tissue = rng.uniform(0.45, 0.6) + 0.08 * np.linspace(-1, 1, size)[:, None]
    image = 0.06 + body * tissue
    lung_level = rng.uniform(0.22, 0.32)
    image = np.where(
        lungs > 0, lung_level + 0.04 * smooth_noise(rng, (size, size), size / 64), image
    )
    soft_heart = cv2.GaussianBlur(heart.astype(np.float32), (0, 0), size / 80)
    image += soft_heart * rng.uniform(0.08, 0.16)
    image = draw_bones(rng, size, image.astype(np.float32))
    image += 0.03 * smooth_noise(rng, (size, size), size / 128)  # vessels and texture
    # Soft lung borders, then acquisition effects: contrast, gamma, blur, noise.
    image = cv2.GaussianBlur(image.astype(np.float32), (0, 0), rng.uniform(0.6, 1.6) * size / 256)
    image = (
        (image - image.mean()) * rng.uniform(0.8, 1.25) + image.mean() + rng.uniform(-0.06, 0.06)
    )
    image = np.clip(image, 0, 1) ** rng.uniform(0.75, 1.35)
    image += rng.normal(0, rng.uniform(0.01, 0.035), image.shape)
    if rng.random() < 0.35:
        image = burn_in_text(rng, size, image)
    return np.clip(image, 0, 1).astype(np.float32), lungs


def write_chest_xrays(folder, count, size, seed):
    image_dir, mask_dir = Path(folder) / "Image", Path(folder) / "Mask"
    image_dir.mkdir(parents=True)
    mask_dir.mkdir(parents=True)
    final = str(folder).removesuffix(".tmp")  # written beside it, then renamed by ensure_synthetic
    bar = progress(count, f"generating {count} synthetic chest X-rays ({size}x{size}) in {final}")
    for i in range(count):
        image, mask = chest_xray(np.random.default_rng([seed, i]), size)
        save_image(image_dir / f"cxr_{i:04d}.png", image)
        save_image(mask_dir / f"cxr_{i:04d}.png", mask.astype(np.float32))
        bar.update(i + 1)


def synthetic_xray_set(count=120, size=256, seed=0, root=SYNTHETIC_ROOT):
    """Path of the synthetic `X_ray` folder, generated on first use (deterministic in `seed`)."""
    recipe = {
        "generator": "chest_xray",
        "version": RECIPE_VERSION,
        "count": count,
        "size": size,
        "seed": seed,
    }
    return ensure_synthetic(
        Path(root) / "X_ray", recipe, lambda folder: write_chest_xrays(folder, count, size, seed)
    )
