"""Regenerate fedfleet's built-in dataset from scikit-learn's bundled copy of UCI digits.

The UCI "Optical Recognition of Handwritten Digits" test set (1797 8x8 images,
10 classes, CC BY 4.0) ships inside scikit-learn, so this needs no network.
Pixels (0..16) are rescaled to uint8 0..255, and a stratified 80/20 split
(seed 0) gives the clients' training pool and the server's held-out test set.

Usage: pip install scikit-learn && python dev/make_digits.py
"""

from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

OUT = Path(__file__).parents[1] / "shared/src/fedfleet/shared/data/digits.npz"


def main() -> None:
    """Write digits.npz next to the fedfleet.shared.data package."""
    digits = load_digits()
    x = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)
    y = digits.target.astype(np.uint8)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=0.2, stratify=y, random_state=0
    )
    np.savez_compressed(OUT, x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te)
    print(f"wrote {OUT}: {len(x_tr)} train, {len(x_te)} test")


if __name__ == "__main__":
    main()
